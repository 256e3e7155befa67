# PASCAL VOC 2012: 21 classes (background included), 255 is the ignored
# boundary. Expected layout under data_root:
#   JPEGImages/*.jpg, SegmentationClass/*.png,
#   ImageSets/Segmentation/{train,val}.txt
# The dataset fields only; voc2012_{linear,ms,m2f}.py put them into a
# recipe's loaders.
voc2012_train = dict(
    type='PascalVOCDataset',
    data_root='data/VOCdevkit/VOC2012',
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt')
voc2012_val = dict(voc2012_train, ann_file='ImageSets/Segmentation/val.txt')
