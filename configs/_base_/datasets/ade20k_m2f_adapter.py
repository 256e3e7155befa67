# ADE20K (ade20k.py) with the Mask2Former recipe for the DINOv3 adapter.
_base_ = ['./recipe_m2f_adapter.py', './ade20k.py']
train_dataloader = dict(dataset=_base_.ade20k_train)
val_dataloader = dict(dataset=_base_.ade20k_val)
test_dataloader = val_dataloader
