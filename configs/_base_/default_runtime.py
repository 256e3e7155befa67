default_scope = 'mmseg'
# Registers the DINOv2 backbones, neck, heads, label loading, the
# confusion-matrix metric (tools/test.py --plot-dir) and the layer-decay
# optimiser and warm-up of the EoMT configs, and lets torch>=2.6 resume
# from mmengine checkpoints.
custom_imports = dict(
    imports=[
        'dinov2_seg.models', 'dinov2_seg.datasets', 'dinov2_seg.evaluation',
        'dinov2_seg.engine'
    ],
    allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # Without CUDA, tools/train.py and tools/test.py start gloo instead.
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
# No fixed name (mmseg's configs say name='visualizer'): mmengine keeps one
# visualizer per name for the process, so a second run in the same process
# (the Python API, a notebook) wrote its vis_data into the first run's work
# dir. Unnamed, each run's visualizer takes the run's experiment name.
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='BatchedSegTTAModel')
# A frozen backbone loaded from a file is left out of the checkpoints (its
# file name and SHA-256 are kept instead): a ViT-g linear checkpoint holds
# the head only.
custom_hooks = [dict(type='FrozenBackboneCheckpointHook')]
