# PASCAL VOC 2012 (voc2012.py) with the Mask2Former recipe for the DINOv3
# adapter; VOC train only, as voc2012_m2f.py.
_base_ = ['./recipe_m2f_adapter.py', './voc2012.py']
train_dataloader = dict(dataset=_base_.voc2012_train)
val_dataloader = dict(dataset=_base_.voc2012_val)
test_dataloader = val_dataloader
