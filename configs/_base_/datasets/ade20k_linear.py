# ADE20K (ade20k.py) with the linear recipe's pipelines and loaders.
_base_ = ['./recipe_linear.py', './ade20k.py']
train_dataloader = dict(dataset=_base_.ade20k_train)
val_dataloader = dict(dataset=_base_.ade20k_val)
test_dataloader = val_dataloader
