# ADE20K, Mask2Former recipe. 150 classes; label 0 ("other") is ignored
# through ADE20KDataset's reduce_zero_label. Expected layout under data_root:
#   images/{training,validation}/*.jpg
#   annotations/{training,validation}/*.png
_base_ = ['./recipe_m2f.py']
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation')))
test_dataloader = val_dataloader
