# Meta's DINOv3 linear schedule (config-ade20k-linear-training.yaml): AdamW
# lr 1e-3, betas (0.9, 0.999), weight decay 1e-3, no gradient clipping
# ("gradient_clip: inf"), 40k iterations at 2 images per GPU on 8 GPUs
# ("bs: 2, n_gpus: 8": a total batch of 16). On other GPU counts keep the
# total at 16 (e.g. 4 GPUs with train_dataloader.batch_size=4, 1 GPU with
# 16), or pass --cfg-options auto_scale_lr.enable=True to scale the lr
# linearly with the total batch instead.
# The lr follows Meta's WarmupOneCycleLR as configured there (warmup_iters
# 1500, warmup_ratio 1e-6, pct_start 0, cosine, final_div_factor inf):
# DinoV3WarmupCosineLR (dinov2_seg/engine/dinov3_schedule.py) has the
# exact curve, which mmengine's chained LinearLR/CosineAnnealingLR cannot
# give.
_base_ = ['./schedule_40k.py']
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-3))
param_scheduler = [
    dict(
        type='DinoV3WarmupCosineLR',
        warmup_iters=1500,
        warmup_ratio=1e-6,
        by_epoch=False,
        begin=0,
        end=40000),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# Meta evaluates every 5000 iterations ("eval_interval: 5000").
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=5000)
