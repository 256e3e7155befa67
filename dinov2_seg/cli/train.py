"""``tools/train.py``: train a segmentor from a config, as mmseg 1.x does."""
import argparse
import sys
from typing import List, Optional, Union

from mmengine.runner import FlexibleRunner, Runner

from dinov2_seg.datasets.layout import check_dataset_paths
from dinov2_seg.engine import runner_for_console
from dinov2_seg.engine.distributed import (prepare_cpu_distributed,
                                           set_local_rank,
                                           shutdown_distributed)
from dinov2_seg.engine.run_config import enable_amp, load_config
from dinov2_seg.engine.sharded import (drop_strategy_for_one_process,
                                       flexible_runner_for,
                                       uses_flexible_runner)
from .data_errors import resume_advice, stop_on_bad_file
from .runner_args import add_runner_args


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a DINOv2 or DINOv3 segmentor')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume',
        action='store_true',
        help='resume from the latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision (needs a GPU)')
    add_runner_args(
        parser, 'train_dataloader.batch_size=4 "model.backbone.arch=vitb14"')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Union[Runner, FlexibleRunner]:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    if args.amp:
        enable_amp(cfg)
    cfg.resume = args.resume
    check_dataset_paths(cfg, ['train_dataloader'] +
                        (['val_dataloader'] if cfg.get('val_cfg') else []))
    prepare_cpu_distributed(cfg)
    if uses_flexible_runner(cfg) and cfg.launcher == 'none':
        drop_strategy_for_one_process(cfg)
    if uses_flexible_runner(cfg):
        # `strategy` (e.g. configs/_base_/fsdp.py): mmengine's
        # FlexibleRunner, which builds and wraps the model through it.
        runner = flexible_runner_for(cfg, args.verbose).from_cfg(cfg)
    else:
        runner = runner_for_console(cfg, args.verbose).from_cfg(cfg)
    # A bad image or label stops the run with one line naming it; the last
    # checkpoint stays and the resume command is printed.
    advice = resume_advice(cfg.work_dir, args.config,
                           sys.argv[1:] if argv is None else list(argv))
    with stop_on_bad_file(args.verbose, advice):
        runner.train()
    shutdown_distributed()
    return runner
