# The official DINOv2 head schedule: AdamW, 40k iterations at 2 images per
# GPU on 8 GPUs (batch 16), linear warm-up then poly decay.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
# mmcv 1.x applied the warm-up factor on top of a poly curve that starts at
# iteration 0; overlapping schedulers compose the same way in mmengine.
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=0,
        end=40000),
]
# Lets `--cfg-options auto_scale_lr.enable=True` rescale the lr for another
# total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=16)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mmengine's CheckpointHook, written so that a run killed at any moment
    # (even while saving) resumes: dinov2_seg/engine/hooks/checkpoint_hook.py.
    checkpoint=dict(
        type='DinoCheckpointHook',
        by_epoch=False,
        interval=4000,
        max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
