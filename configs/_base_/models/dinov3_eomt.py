# EoMT on a fine-tuned DINOv3 ViT: the model of _base_/models/dinov2_eomt.py
# (head, losses, masked attention, annealing hook) with the backbone swapped,
# as in EoMT's DINOv3 recipe (tue-mps/eomt,
# configs/dinov3/ade20k/semantic/eomt_large_512.yaml, which runs Hugging
# Face's DINOv3ViTModel inside its models/eomt.py). Defaults to ViT-S/16;
# top-level configs set the backbone, the blocks with queries and the
# annealing of that many blocks (below).
_base_ = ['./dinov2_eomt.py']
# Masking annealed per block with queries (power 0.9): EoMT's DINOv3 steps
# (eomt_large_512.yaml, 4 blocks: starts 0, 6520, 9780, 13040; ends 3000,
# 9780, 13040, 16300), written as fractions of the 20k iterations of
# _base_/schedules/dinov3_eomt_schedule_20k.py, which EoMTHead resolves to
# exactly those steps (rounding halves up); a config with another
# train_cfg.max_iters anneals in proportion. 3 and 5 blocks (no EoMT
# config): the first block keeps 0-3000, the others split 6520-16300
# evenly.
mask_annealing_3_blocks = dict(
    start_fractions=[0, 6520 / 20000, 11410 / 20000],
    end_fractions=[3000 / 20000, 11410 / 20000, 16300 / 20000],
    power=0.9)
mask_annealing_4_blocks = dict(
    start_fractions=[0, 6520 / 20000, 9780 / 20000, 13040 / 20000],
    end_fractions=[3000 / 20000, 9780 / 20000, 13040 / 20000, 16300 / 20000],
    power=0.9)
mask_annealing_5_blocks = dict(
    start_fractions=[
        0, 6520 / 20000, 8965 / 20000, 11410 / 20000, 13855 / 20000
    ],
    end_fractions=[
        3000 / 20000, 8965 / 20000, 11410 / 20000, 13855 / 20000, 16300 / 20000
    ],
    power=0.9)
model = dict(
    backbone=dict(
        _delete_=True,
        type='DinoV3VisionTransformer',
        arch='vits16',
        # The whole ViT is fine-tuned, with no stochastic depth (EoMT).
        frozen=False,
        drop_path_rate=0.0,
        # EoMT keeps Hugging Face's DINOv3 RoPE in train mode while
        # fine-tuning, and that module then rescales the patch coordinates
        # by a log-uniform factor in [1/2, 2] per step (its config's
        # pos_embed_rescale=2.0, Meta's pretraining augmentation); the test
        # pass has no augmentation. The queries, class and storage tokens are
        # never rotated.
        rope_train_augment=dict(rescale=2.0),
        with_cp=False),
    decode_head=dict(
        # EoMT's rule for the patch size (max(1, int(log2(16)) - 2) = 2
        # upsampling blocks, masks at stride 4), taken from the backbone.
        num_upscale=None,
        num_blocks=3,
        mask_annealing=mask_annealing_3_blocks))
