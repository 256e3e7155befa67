# PASCAL VOC 2012 (voc2012.py), ms recipe: trains on VOC train plus the SBD
# augmented set, as the official ms heads did. Besides VOC's layout it needs
#   SegmentationClassAug/*.png and ImageSets/Segmentation/aug.txt
# (mmseg's tools/dataset_converters/voc_aug.py creates both from SBD).
_base_ = ['./recipe_ms.py', './voc2012.py']
voc_train = dict(_base_.voc2012_train, pipeline=_base_.train_pipeline)
sbd_aug = dict(
    voc_train,
    data_prefix=dict(
        img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt')
train_dataloader = dict(
    dataset=dict(
        _delete_=True, type='ConcatDataset', datasets=[voc_train, sbd_aug]))
val_dataloader = dict(dataset=_base_.voc2012_val)
test_dataloader = val_dataloader
