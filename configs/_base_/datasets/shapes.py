# The procedural shapes dataset of the demos (`python
# tools/make_shapes_dataset.py data/shapes`), declared as a custom dataset:
# the worked example of the fields custom.py asks you to change. The demo
# configs add their pipelines and the head's num_classes.
_base_ = ['./custom.py']
data_root = 'data/shapes'
metainfo = dict(
    classes=('sky', 'ground', 'disc', 'box', 'triangle'),
    palette=[[70, 130, 180], [110, 190, 60], [220, 40, 40], [240, 200, 40],
             [150, 60, 200]])
dataset_fields = dict(
    data_root=data_root, metainfo=metainfo, reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4, num_workers=2, dataset=dict(dataset_fields))
val_dataloader = dict(num_workers=2, dataset=dict(dataset_fields))
test_dataloader = val_dataloader
