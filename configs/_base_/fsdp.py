# Sharded training (FSDP) of a fine-tuned ViT backbone, for the models that
# do not fit one device with plain DDP (DINOv3 ViT-7B/16, DINOv2 ViT-g/14):
# add this file to a config's _base_ and launch with tools/dist_train.sh
# CONFIG N (or torchrun ... tools/train.py CONFIG --launcher pytorch).
# tools/train.py then runs mmengine's FlexibleRunner with FSDPStrategy;
# see docs/sharded_training.md.
strategy = dict(
    # mmengine's FSDPStrategy, with its resume fixed for torch >= 2.1.
    type='DinoFSDPStrategy',
    model_wrapper=dict(
        # mmengine's FSDP wrapper plus a clear refusal of models without
        # DINO transformer blocks, and CPU (gloo) runs.
        type='DinoFullyShardedDataParallel',
        # One FSDP unit per transformer block: its parameters, gradients
        # and AdamW state are sharded over the processes and gathered only
        # while the block runs.
        auto_wrap_policy='dino_block_wrap_policy',
        # FULL_SHARD: parameters, gradients and optimiser state sharded.
        sharding_strategy='FULL_SHARD',
        # Keep the parameter names (and frozen parameters) as they are, so
        # that layer decay and a frozen backbone still work.
        use_orig_params=True),
    # Recompute each block in the backward pass instead of keeping its
    # activations (the blocks' own with_cp is not needed then).
    activation_checkpointing=dict(check_fn='dino_block_checkpoint_check'),
    # Checkpoints consolidated on rank 0 (one ordinary .pth file, as an
    # unsharded run writes): tools/test.py, --resume and load_from read
    # it. 'local' writes one shard per rank into a directory
    # (iter_N.pth/rank{i}.pth) instead: faster to save, resumable only
    # with the same number of processes, not readable by tools/test.py.
    state_dict_cfg='full')
