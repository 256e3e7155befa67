# PASCAL VOC 2012, Mask2Former recipe: 21 classes (background included),
# 255 is the ignored boundary. Trains on VOC train only, as the linear
# recipe (voc2012_ms.py shows how to add SBD). Expected layout under
# data_root:
#   JPEGImages/*.jpg, SegmentationClass/*.png,
#   ImageSets/Segmentation/{train,val}.txt
_base_ = ['./recipe_m2f.py']
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/train.txt'))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt'))
test_dataloader = val_dataloader
