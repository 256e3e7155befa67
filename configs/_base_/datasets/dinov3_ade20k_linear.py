# ADE20K (ade20k.py) with Meta's DINOv3 linear recipe's pipelines and
# loaders (reduce_zero_label, as Meta's "reduce_zero_label: True").
_base_ = ['./dinov3_recipe_linear.py', './ade20k.py']
train_dataloader = dict(dataset=_base_.ade20k_train)
val_dataloader = dict(dataset=_base_.ade20k_val)
test_dataloader = val_dataloader
