# PASCAL VOC 2012 (voc2012.py) with the Mask2Former recipe's pipelines and
# loaders. Trains on VOC train only, as the linear recipe (voc2012_ms.py
# shows how to add SBD).
_base_ = ['./recipe_m2f.py', './voc2012.py']
train_dataloader = dict(dataset=_base_.voc2012_train)
val_dataloader = dict(dataset=_base_.voc2012_val)
test_dataloader = val_dataloader
