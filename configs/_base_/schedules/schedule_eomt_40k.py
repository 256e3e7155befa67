# EoMT's optimisation (training/lightning_module.py and
# mask_classification_semantic.py of tue-mps/eomt, ADE20K 512):
# - AdamW, lr 1e-4, weight decay 0.05 on every parameter, PyTorch's betas.
# - Layer-wise lr decay 0.8 (llrd): block i of L gets 0.8^(L-1-i) of the
#   lr, the patch embedding and tokens 0.8^(L-1), the final norm and the
#   EoMT head the full lr.
# - Gradient norm clipping at 0.01 (their trainer's gradient_clip_val).
# - Two-stage warm-up: the head over 500 iterations while the backbone
#   stays at 0, then the backbone over 1000; each then decays with poly
#   0.9 to 0 at the end.
# - 40k iterations of 16 images (2 per GPU x 8): EoMT trains ADE20K for 31
#   epochs of 16 images, about 39k iterations.
# EoMT trains in float16 mixed precision: on GPUs pass --amp to
# tools/train.py.
_base_ = ['./schedule_40k.py']
max_iters = 40000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
        weight_decay=0.05),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    constructor='DinoLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.8))
param_scheduler = [
    dict(
        type='TwoStageWarmupPolyLR',
        warmup_iters=500,
        backbone_warmup_iters=1000,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters)
