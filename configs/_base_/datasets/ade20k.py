# ADE20K: 150 classes; label 0 ("other") is ignored through ADE20KDataset's
# reduce_zero_label. Expected layout under data_root:
#   images/{training,validation}/*.jpg
#   annotations/{training,validation}/*.png
# The dataset fields only; ade20k_{linear,ms,m2f}.py put them into a
# recipe's loaders.
ade20k_train = dict(
    type='ADE20KDataset',
    data_root='data/ade/ADEChallengeData2016',
    data_prefix=dict(
        img_path='images/training', seg_map_path='annotations/training'))
ade20k_val = dict(
    ade20k_train,
    data_prefix=dict(
        img_path='images/validation', seg_map_path='annotations/validation'))
