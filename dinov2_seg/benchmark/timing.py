"""Timing of runs: medians of runs alternating after a warm-up, and the
backbone's calls and share of time inside one run."""
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from dinov2_seg.models.segmentors.compiled_backbone import mark_batch_dynamic


def synchronize(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def compare_runs(runs: Dict[str, Callable[[], object]], device: str,
                 repeat: int, warmup: int) -> Tuple[Dict[str, float], dict]:
    """Median seconds and last output of each run, alternating between the
    runs after ``warmup`` rounds (so that load changes on a shared machine
    hit all of them alike)."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: Dict[str, List[float]] = {name: [] for name in runs}
    outputs = {}
    for _ in range(repeat):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            outputs[name] = run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    medians = {
        name: statistics.median(values)
        for name, values in times.items()
    }
    return medians, outputs


def recording_windows(segmentor: nn.Module, run: Callable,
                      shapes: List[tuple]) -> Callable:
    """``run`` that, the first time, records into ``shapes`` the shape of
    every window batch of the fast path (``segmentor.window_logits``, one
    call per backbone call). Recorded there rather than by a hook inside
    the network: a hook inside a compiled backbone (``--compile``) would
    be traced, and its growing list would recompile the graph at every
    window."""

    def first_run_records():
        if shapes:
            return run()
        window_logits = segmentor.window_logits

        def recording(crops, metas):
            shapes.append(tuple(crops.shape))
            return window_logits(crops, metas)

        segmentor.window_logits = recording
        try:
            return run()
        finally:
            del segmentor.window_logits

    return first_run_records


def timing_backbone(segmentor: nn.Module, run: Callable, device: str,
                    shares: List[float]) -> Callable:
    """``run`` that appends to ``shares`` the part of its time spent inside
    the backbone's forward calls: a split of one run, which load changes
    on a shared machine between runs do not enter."""
    clock = []

    def pre_hook(module, args):
        synchronize(device)
        clock.append(time.perf_counter())

    def post_hook(module, args, out):
        synchronize(device)
        clock[-1] = time.perf_counter() - clock[-1]

    def timed_run():
        clock.clear()
        synchronize(device)
        start = time.perf_counter()
        handles = [
            segmentor.backbone.register_forward_pre_hook(pre_hook),
            segmentor.backbone.register_forward_hook(post_hook)
        ]
        try:
            return run()
        finally:
            for handle in handles:
                handle.remove()
            synchronize(device)
            if clock:  # EoMT runs the ViT's parts, not its forward
                shares.append(sum(clock) / (time.perf_counter() - start))

    return timed_run


def backbone_only_run(segmentor: nn.Module,
                      shapes: List[tuple],
                      device: str,
                      inference_mode: bool = True) -> Callable[[], None]:
    """Random windows of the recorded ``shapes`` (one entry per backbone
    call, filled by a run before this one) through the backbone alone, as
    the segmentor calls it (autocast; with ``test_cfg.compile`` the same
    compiled graphs, given the measured run's grad mode: inference mode,
    or ``no_grad`` as mmengine's test loop)."""

    def run() -> None:
        compiled = segmentor.test_cfg.get('compile', False)
        if compiled:
            segmentor.compile_network(
                **(compiled if isinstance(compiled, dict) else {}))
        grad_mode = torch.inference_mode if inference_mode else torch.no_grad
        with grad_mode(), segmentor.autocast(torch.device(device).type):
            for shape in shapes:
                windows = torch.randn(shape, device=device)
                if compiled:
                    mark_batch_dynamic(windows)
                segmentor.backbone(windows)

    return run
