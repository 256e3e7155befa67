# Your own dataset: a folder of images and label PNGs with a class list.
#
# Either inherit this file and override the fields below in your top-level
# config (_base_/datasets/shapes.py does exactly that for the
# built-in synthetic dataset), or copy it and edit them here.
#
# Layout under data_root (ADE20K-style):
#   images/training/*<img_suffix>      annotations/training/*<seg_map_suffix>
#   images/validation/*<img_suffix>    annotations/validation/*<seg_map_suffix>
# An image and its label share the file stem. A label PNG holds one class
# index per pixel (8-bit grey or palette PNG); 255 marks ignored pixels.
#
# Fields:
#   data_root          the folder above
#   metainfo.classes   class names, in label-index order
#   metainfo.palette   one RGB colour per class, for visualisations
#   img_suffix, seg_map_suffix   file endings
#   reduce_zero_label  True when label 0 means "unlabelled" (as in ADE20K):
#                      0 becomes 255 (ignored) and label i becomes class i-1
# and, in the top-level config, model.decode_head.num_classes =
# len(classes). Ignored pixels must be 255 (the value mmseg pads labels with
# and its loss and metric skip); remap another ignore value when converting.
_base_ = ['./recipe_linear.py']
dataset_type = 'BaseSegDataset'
data_root = 'data/my_dataset'
metainfo = dict(
    classes=('background', 'foreground'), palette=[[0, 0, 0], [255, 255, 255]])
dataset_fields = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_dataloader = dict(
    dataset=dict(
        dataset_fields,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    dataset=dict(
        dataset_fields,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation')))
test_dataloader = val_dataloader
