# PASCAL VOC 2012 (voc2012.py) with the linear recipe's pipelines and
# loaders.
_base_ = ['./recipe_linear.py', './voc2012.py']
train_dataloader = dict(dataset=_base_.voc2012_train)
val_dataloader = dict(dataset=_base_.voc2012_val)
test_dataloader = val_dataloader
