from setuptools import find_packages, setup

setup(
    name='dinov2_seg',
    version='0.1.0',
    description='DINOv2 semantic segmentation on mmsegmentation 1.x',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['dinov2_seg', 'dinov2_seg.*']),
    install_requires=[
        # A range the user's torch (CPU or CUDA) already satisfies, so pip
        # never replaces it. 2.6: weights-only loading with allowlisted
        # (object, name) pairs, which every checkpoint read relies on
        # (dinov2_seg/checkpoints/safe_loading.py).
        'torch>=2.6',
        # The upper bounds also protect the private names the project uses:
        # mmengine's _ParamScheduler._get_value (engine/two_stage_warmup.py),
        # Runner._load_from (engine/hooks/frozen_backbone_checkpoint_hook.py)
        # and HistoryBuffer._statistics_methods (checkpoints/safe_loading.py).
        'mmengine>=0.10.0,<0.11',
        # mmseg 1.2.x and mmdet 3.3.x accept only mmcv<2.2; it must be built
        # with its ops (see tools/setup_env.sh).
        'mmcv>=2.1.0,<2.2.0',
        # mmseg's Mask2FormerHead._seg_data_to_instance_data and mmdet's
        # Mask2FormerHead._get_targets_single / _loss_by_feat_single
        # (EoMTHead in models/decode_heads/eomt_head.py).
        'mmsegmentation>=1.2.2,<1.3',
        'mmdet>=3.3.0,<3.4',
        'numpy',
        'opencv-python',
        # The charts of tools/test.py --plot-dir and tools/plot_curves.py,
        # and the console's progress bars (both also come with mmengine).
        'matplotlib',
        'rich',
        # Imported by mmseg at import time but not declared by its wheel.
        'ftfy',
        'regex',
    ],
    extras_require={
        # tools/export_onnx.py and OnnxSegmentor: torch.onnx's exporter
        # (torch.export based) needs onnxscript; onnxruntime checks the file.
        'export': ['onnx', 'onnxscript', 'onnxruntime'],
        # visualizer.vis_backends=[LocalVisBackend,TensorboardVisBackend]
        'tensorboard': ['tensorboard'],
        # tools/sweep.py --launcher slurm (submitit; its script rendering,
        # dinov2_seg/sweep/slurm.py, uses SlurmExecutor's private
        # _make_submission_file_text: hence the bound) and the significance
        # test of tools/compare_runs.py (scipy).
        'sweep': ['submitit>=1.5.4,<1.6', 'scipy'],
        # transformers: reference implementation and file layout for the
        # tests of Hugging Face weights (it brings safetensors); the export
        # and TensorBoard tests run with their extras; pytest-xdist runs the
        # suite on every core (`make test`); the sweep extra's packages.
        'test': [
            'pytest', 'pytest-timeout', 'pytest-xdist', 'transformers', 'onnx',
            'onnxscript', 'onnxruntime', 'tensorboard', 'submitit>=1.5.4,<1.6',
            'scipy'
        ],
    },
)
