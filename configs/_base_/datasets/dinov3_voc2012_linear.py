# PASCAL VOC 2012 (voc2012.py) with Meta's DINOv3 linear recipe's
# pipelines and loaders (Meta publishes the recipe for ADE20K only).
_base_ = ['./dinov3_recipe_linear.py', './voc2012.py']
train_dataloader = dict(dataset=_base_.voc2012_train)
val_dataloader = dict(dataset=_base_.voc2012_val)
test_dataloader = val_dataloader
