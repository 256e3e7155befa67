# PASCAL VOC 2012, ms recipe: trains on VOC train plus the SBD augmented set,
# as the official ms heads did. Besides the voc2012_linear.py layout it needs
#   SegmentationClassAug/*.png and ImageSets/Segmentation/aug.txt
# (mmseg's tools/dataset_converters/voc_aug.py creates both from SBD).
_base_ = ['./recipe_ms.py']
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
voc_train = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=_base_.train_pipeline)
sbd_aug = dict(
    voc_train,
    data_prefix=dict(
        img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt')
train_dataloader = dict(
    dataset=dict(
        _delete_=True, type='ConcatDataset', datasets=[voc_train, sbd_aug]))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt'))
test_dataloader = val_dataloader
