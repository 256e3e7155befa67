# PASCAL VOC 2012 with EoMT's training augmentation (recipe_eomt.py); loaders,
# test pipeline and multi-scale flip test of the Mask2Former recipe.
_base_ = ['./voc2012_m2f.py', './recipe_eomt.py']
train_pipeline = _base_.eomt_train_pipeline
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
