"""A run's config as the tools read and adjust it: the file with
``--cfg-options`` and the work dir, then the switches of the command line
(AMP, TTA, visualisation, evaluation charts) as config edits."""
import logging
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmseg.registry import MODELS

from dinov2_seg.datasets.pipelines import (configure_label_checks,
                                           select_tta_scales)
from dinov2_seg.models.segmentors import BatchedEncoderDecoder
from .vis_backends import expand_vis_backends


def load_config(path: str,
                cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read a config, apply ``--cfg-options`` and choose the work dir as
    mmseg's tools do (CLI, then the config's ``work_dir``, then
    ``work_dirs/<config name>``). The label loaders of its dataloaders
    check values against their dataset's classes."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Config file {path} does not exist')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    configure_label_checks(cfg)
    expand_vis_backends(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def enable_amp(cfg: Config) -> None:
    """Train with mmengine's AmpOptimWrapper (dynamic loss scale)."""
    wrapper = cfg.optim_wrapper
    if wrapper.type == 'AmpOptimWrapper':
        print_log(
            'AMP is already enabled in the config.',
            logger='current',
            level=logging.WARNING)
        return
    if wrapper.type != 'OptimWrapper':
        raise ValueError('--amp needs optim_wrapper.type="OptimWrapper", got '
                         f'{wrapper.type!r}')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.loss_scale = 'dynamic'


def _check_batched_segmentor(cfg: Config, config_path: str, flag: str) -> None:
    model_type = cfg.model.type
    model_class = MODELS.get(model_type) if isinstance(model_type,
                                                       str) else model_type
    if not (isinstance(model_class, type)
            and issubclass(model_class, BatchedEncoderDecoder)):
        raise ValueError(
            f"{flag}: {config_path} has model.type={model_type!r}; it is a "
            "test_cfg setting of 'BatchedEncoderDecoder' and the "
            'segmentors built on it')


def enable_test_amp(cfg: Config, config_path: str) -> None:
    """Set ``test_cfg.amp`` of a BatchedEncoderDecoder or of a segmentor
    built on it (EoMTSegmentor), looked up in the registry."""
    _check_batched_segmentor(cfg, config_path, '--amp')
    cfg.model.test_cfg.amp = True


def enable_test_compile(cfg: Config, config_path: str) -> None:
    """Set ``test_cfg.compile``: ``torch.compile`` of the network on the
    fast slide path (BatchedEncoderDecoder and the segmentors built on
    it)."""
    _check_batched_segmentor(cfg, config_path, '--compile')
    cfg.model.test_cfg.compile = True


def configure_test_loader(cfg: Config,
                          batch_size: Optional[int] = None,
                          workers: Optional[int] = None) -> None:
    """The test loader as ``tools/test.py`` runs it: ``batch_size``
    images per test step (images of different sizes share the window
    batches of the fast path), ``workers`` processes decoding and resizing
    ahead of the model, and pinned memory when a GPU is there (set in the
    config, ``pin_memory`` wins) so that the images' copies to it need not
    wait."""
    loader = cfg.test_dataloader
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f'--batch-size must be >= 1, got {batch_size}')
        loader.batch_size = batch_size
    if workers is not None:
        if workers < 0:
            raise ValueError(f'--workers must be >= 0, got {workers}')
        loader.num_workers = workers
    if loader.get('num_workers', 0) == 0:
        # torch's DataLoader refuses persistent workers without workers.
        loader.persistent_workers = False
    loader.setdefault('pin_memory', torch.cuda.is_available())


def enable_visualization(cfg: Config, show: bool, show_dir: Optional[str],
                         wait_time: float) -> None:
    """Switch on mmseg's SegVisualizationHook for every test image."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError("--show/--show-dir need default_hooks.visualization="
                       "dict(type='SegVisualizationHook') in the config")
    hook['draw'] = True
    # mmseg's hook paints every 50th image; asked for explicitly, paint all.
    hook['interval'] = 1
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        cfg.visualizer['save_dir'] = osp.join(cfg.work_dir, show_dir)


def enable_plots(cfg: Config, plot_dir: str) -> None:
    """Evaluate with ConfusionIoUMetric: mmseg's IoUMetric (same numbers)
    that also keeps the confusion matrix and draws the charts."""
    evaluator = cfg.test_evaluator
    metrics = evaluator if isinstance(evaluator, list) else [evaluator]
    found = [m for m in metrics if m.get('type') == 'IoUMetric']
    if not found:
        raise ValueError(
            "--plot-dir needs test_evaluator to hold mmseg's IoUMetric "
            f"(type='IoUMetric'); this config has "
            f'{[m.get("type") for m in metrics]}')
    found[0].update(type='ConfusionIoUMetric', plot_dir=plot_dir)


def enable_tta(cfg: Config, config_path: str) -> None:
    """Test with the multi-scale flip test: the TTA pipeline (its first
    ``cfg.tta_scale_count`` scales) around the config's model."""
    cfg.test_dataloader.dataset.pipeline = select_tta_scales(cfg, config_path)
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
