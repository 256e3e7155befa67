"""``tools/test.py``: evaluate a checkpoint (per-class IoU/Acc, aAcc, mIoU,
mAcc), as mmseg 1.x does."""
import argparse
import os.path as osp
from typing import List, Optional

from mmengine.model import is_model_wrapper

from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.datasets.layout import check_dataset_paths
from dinov2_seg.engine import runner_for_console
from dinov2_seg.engine.distributed import (prepare_cpu_distributed,
                                           set_local_rank,
                                           shutdown_distributed)
from dinov2_seg.engine.run_config import (configure_test_loader, enable_plots,
                                          enable_test_amp, enable_test_compile,
                                          enable_tta, enable_visualization,
                                          load_config)
from .data_errors import stop_on_bad_file
from .runner_args import add_runner_args


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test a DINOv2 or DINOv3 segmentor')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where metrics and logs go')
    parser.add_argument(
        '--out', help='directory to save the predicted label maps (PNG)')
    parser.add_argument(
        '--show', action='store_true', help='show predictions in a window')
    parser.add_argument(
        '--show-dir',
        help='save every image with its coloured prediction to '
        'SHOW_DIR/vis_data/vis_image (a relative SHOW_DIR is taken inside '
        'the work dir)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='--show interval (s)')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation (the ms recipes: multi-scale + flip)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision (bfloat16 where supported, else float16) for '
        'the backbone; the head and the merging stay float32')
    parser.add_argument(
        '--compile',
        action='store_true',
        help='torch.compile the backbone for the fast slide path (compiled '
        'on the first windows, once per window size for calls of several '
        'windows and once for one, whatever the image sizes)')
    parser.add_argument(
        '--batch-size',
        type=int,
        help='images per test step (test_dataloader.batch_size; default: '
        "the config's, 1): their slide windows share backbone calls of at "
        'most test_cfg.window_batch_size windows, images of any sizes')
    parser.add_argument(
        '--workers',
        type=int,
        help='processes decoding and resizing the images ahead of the model '
        "(test_dataloader.num_workers; default: the config's)")
    parser.add_argument(
        '--plot-dir',
        help='write per-class IoU, confusion-matrix and class-distribution '
        'charts (PNG) and the confusion matrix (CSV) to this directory')
    add_runner_args(parser, 'test_dataloader.batch_size=1')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise FileNotFoundError(f'Checkpoint {args.checkpoint} does not exist')
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    if args.amp:
        enable_test_amp(cfg, args.config)
    if args.compile:
        enable_test_compile(cfg, args.config)
    configure_test_loader(cfg, args.batch_size, args.workers)
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        enable_tta(cfg, args.config)
    if args.plot_dir:
        enable_plots(cfg, args.plot_dir)
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    check_dataset_paths(cfg, ['test_dataloader'])
    prepare_cpu_distributed(cfg)
    runner = runner_for_console(cfg, args.verbose).from_cfg(cfg)
    # Loaded here rather than through cfg.load_from: mmengine would accept
    # a head file non-strictly and leave the backbone random.
    model = runner.model.module if is_model_wrapper(runner.model) else \
        runner.model
    segmentor = model.module if args.tta else model
    load_segmentor_checkpoint(segmentor, args.checkpoint)
    if cfg.test_dataloader.get('pin_memory'):
        # The images arrive in pinned memory: copy them to the GPU without
        # waiting (mmseg's data preprocessor takes no such argument).
        segmentor.data_preprocessor._non_blocking = True
    with stop_on_bad_file(args.verbose):  # one line naming a bad file
        metrics = runner.test()
    shutdown_distributed()
    return metrics
