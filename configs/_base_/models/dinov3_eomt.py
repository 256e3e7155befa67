# EoMT on a fine-tuned DINOv3 ViT: the model of _base_/models/dinov2_eomt.py
# (head, losses, masked attention, annealing hook) with the backbone swapped,
# as in EoMT's DINOv3 recipe (tue-mps/eomt,
# configs/dinov3/ade20k/semantic/eomt_large_512.yaml, which runs Hugging
# Face's DINOv3ViTModel inside its models/eomt.py). Defaults to ViT-S/16;
# top-level configs set the backbone, the blocks with queries and the
# annealing iterations.
_base_ = ['./dinov2_eomt.py']
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
        num_upscale=None))
