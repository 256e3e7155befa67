"""Small architectures for tests that only need *a* DINOv2: the same code
paths as the presets at a fraction of the cost."""

TINY_ARCH = dict(
    embed_dim=48,
    depth=4,
    num_heads=3,
    ffn='mlp',
    num_register_tokens=0,
    interpolate_offset=0.1,
    interpolate_antialias=False)
# ... and one with ViT-g's SwiGLU FFN, for the ViT-Adapter and Meta's
# Mask2Former layout.
TINY_SWIGLU_ARCH = dict(TINY_ARCH, embed_dim=64, num_heads=2, ffn='swiglu')
