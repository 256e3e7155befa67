"""The benchmark's modes, each a function of the config and the parsed
command line returning the record's measurements (``tools/benchmark.py``):

- ``backbone``: ``--batch`` windows (the slide crop, or ``--size``) through
  the backbone alone; images/s, achieved TFLOP/s and, on a known GPU, the
  model-FLOPs utilisation of its dense bf16 peak.
- ``slide``: one image (or ``--batch``) of ``--size`` through the config's
  test pipeline and ``test_step`` (single-scale slide inference).
- ``tta``: the same through the multi-scale flip test with ``--scales``.
- ``dataset``: ``tools/test.py``'s evaluation (the config's test
  dataloader with its workers, ``test_step``, the test evaluator) over
  ``--images`` generated images of mixed sizes, ``--batch`` per step; with
  ``--compare`` also one image per step (:mod:`.dataset`).
- ``onnx``: the window network exported to ONNX, ONNX Runtime (CPU)
  against PyTorch eager and ``--compile`` on the same ``--batch`` windows;
  ``--quantize`` adds dynamic int8 (:mod:`.onnx_runtime`).
- ``train``: one training step of ``--batch`` crops with the backbone
  frozen, against the same step with ``frozen=False``.

With ``--compare`` the baseline (mmseg's stock slide inference / TTA, or the
fine-tuned backbone for ``train``) runs in the same process, alternating with
the measured path after a warm-up; times are medians of ``--repeat`` runs.
For ``slide`` and ``tta`` the same windows also go through the backbone
alone (``backbone_seconds``), and each timed run records the share of its
own time spent inside the backbone (``backbone_share``; on a shared machine
this split of one run is steadier than a ratio of two runs).

``--against CONFIG`` (slide, tta) also times another config's model, e.g.
the Mask2Former config against an EoMT one on the same backbone, through
its own fast path on the same images, alternating with the measured one;
the record adds its seconds, parameters and peak, and
``speedup_vs_against`` (its seconds over the measured model's).

Peak memory is measured in a separate, untimed run (:mod:`.memory`).
"""
import argparse
import copy
import statistics
from typing import Callable, Dict, List, Tuple

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

from dinov2_seg.datasets.pipelines import select_tta_scales
from dinov2_seg.engine.run_config import enable_amp, load_config
from dinov2_seg.models.segmentors.compiled_backbone import compile_backbone
from .dataset import measure_dataset
from .flops import backbone_flops, gpu_peak_tflops
from .inputs import build_for_benchmark, test_batch, window_size
from .memory import peak_bytes, tensor_bytes
from .onnx_runtime import measure_onnx
from .timing import (backbone_only_run, compare_runs, recording_windows,
                     timing_backbone)


def inference_runs(model: nn.Module, data: dict,
                   fast_module: nn.Module) -> Tuple[Callable, Callable]:
    """Callables running ``model.test_step`` on the fast and the stock
    path (``fast_module``'s ``test_cfg.fast_inference``)."""

    def run(fast: bool) -> Callable[[], list]:

        def step():
            fast_module.test_cfg.fast_inference = fast
            with torch.inference_mode():
                return model.test_step(copy.deepcopy(data))

        return step

    return run(True), run(False)


def label_agreement(fast: list, stock: list) -> float:
    same = total = 0
    for a, b in zip(fast, stock):
        a, b = a.pred_sem_seg.data, b.pred_sem_seg.data
        same += int((a == b).sum())
        total += a.numel()
    return same / total


def inference_setup(
        cfg: Config, config: str,
        args: argparse.Namespace) -> Tuple[nn.Module, Callable, Callable]:
    """A config's segmentor and its fast and stock test-step runs on the
    benchmark's images (through its own test or TTA pipeline)."""
    segmentor = build_for_benchmark(
        cfg, args.device, args.checkpoint if config == args.config else None)
    if not hasattr(segmentor, 'uses_fast_slide'):
        raise ValueError(f'{config}: model.type={cfg.model.type!r} has '
                         'no fast path; --mode slide/tta need '
                         "type='BatchedEncoderDecoder'")
    segmentor.test_cfg.amp = args.amp
    # The fast path only: the stock one stays mmseg's, eager.
    segmentor.test_cfg.compile = args.compile
    if args.mode == 'tta':
        cfg.tta_scale_count = args.scales
        pipeline = select_tta_scales(cfg, config)
        model = MODELS.build(dict(cfg.tta_model, module=segmentor))
    else:
        pipeline, model = cfg.test_pipeline, segmentor
    size = tuple(args.size) if args.size else window_size(cfg)
    data = test_batch(pipeline, size, args.batch)
    return (segmentor, *inference_runs(model, data, segmentor))


def measure_inference(cfg: Config, args: argparse.Namespace) -> dict:
    segmentor, fast, stock = inference_setup(cfg, args.config, args)
    size = tuple(args.size) if args.size else window_size(cfg)
    windows: List[tuple] = []
    inside: Dict[str, List[float]] = dict(fast=[], stock=[])
    fast = recording_windows(
        segmentor, timing_backbone(segmentor, fast, args.device,
                                   inside['fast']), windows)
    stock = timing_backbone(segmentor, stock, args.device, inside['stock'])

    # The windows of the (first) fast run, in its batches; it runs before
    # the backbone alone in every round.
    runs = dict(
        fast=fast, backbone=backbone_only_run(segmentor, windows, args.device))
    if args.compare:
        runs['stock'] = stock
    if args.against:
        # Another model (e.g. Mask2Former against EoMT) on the same images,
        # through its own fast path, alternating with this one.
        other, runs['against'], _ = inference_setup(
            load_config(args.against, None), args.against, args)
    seconds, outputs = compare_runs(runs, args.device, args.repeat,
                                    args.warmup)
    # The timed runs' shares, before the peak-memory runs add theirs.
    shares = {
        name: statistics.median(values[-args.repeat:])
        for name, values in inside.items() if values
    }
    resident = tensor_bytes(segmentor)
    record = dict(
        size=list(size),
        windows=sum(shape[0] for shape in windows),
        backbone_calls=len(windows),
        seconds=seconds['fast'],
        backbone_seconds=seconds['backbone'],
        backbone_ratio=seconds['fast'] / seconds['backbone'],
        images_per_second=args.batch / seconds['fast'],
        backbone_share=shares.get('fast'),
        peak_bytes=peak_bytes(fast, args.device, resident))
    if args.compare:
        record.update(
            baseline_seconds=seconds['stock'],
            speedup=seconds['stock'] / seconds['fast'],
            baseline_backbone_share=shares.get('stock'),
            baseline_peak_bytes=peak_bytes(stock, args.device, resident),
            label_agreement=label_agreement(outputs['fast'], outputs['stock']))
        record['peak_ratio'] = record['peak_bytes'] / record[
            'baseline_peak_bytes']
    if args.against:
        record.update(
            against=args.against,
            against_seconds=seconds['against'],
            speedup_vs_against=seconds['against'] / seconds['fast'],
            parameters=sum(p.numel() for p in segmentor.parameters()),
            against_parameters=sum(p.numel() for p in other.parameters()),
            against_peak_bytes=peak_bytes(runs['against'], args.device,
                                          tensor_bytes(other)))
    return record


def measure_backbone(cfg: Config, args: argparse.Namespace) -> dict:
    segmentor = build_for_benchmark(cfg, args.device, args.checkpoint)
    segmentor.test_cfg.amp = args.amp
    size = tuple(args.size) if args.size else window_size(cfg)
    inputs = torch.randn(args.batch, 3, *size, device=args.device)
    # Compiled as tools/test.py --compile compiles it (a fixed batch here).
    backbone = compile_backbone(
        segmentor.backbone) if args.compile else segmentor.backbone

    def forward():
        with torch.inference_mode(), segmentor.autocast(
                torch.device(args.device).type):
            backbone(inputs)

    seconds = compare_runs(
        dict(backbone=forward), args.device, args.repeat,
        args.warmup)[0]['backbone']
    flops = backbone_flops(segmentor.backbone, *size)
    flops = None if flops is None else flops * args.batch
    record = dict(
        size=list(size),
        seconds=seconds,
        backbone_seconds=seconds,
        images_per_second=args.batch / seconds,
        peak_bytes=peak_bytes(forward, args.device, tensor_bytes(segmentor)))
    if flops is not None:  # counted for ViTs only
        record.update(
            tflops=flops / seconds / 1e12,
            model_tflop_per_image=flops / args.batch / 1e12)
    peak = args.peak_tflops or gpu_peak_tflops(args.device)
    if peak and flops is not None:
        record.update(peak_tflops=peak, mfu=record['tflops'] / peak)
    return record


def measure_train(cfg: Config, args: argparse.Namespace) -> dict:
    size = tuple(args.size) if args.size else window_size(cfg)
    num_classes = cfg.model.decode_head.num_classes

    def setup(frozen: bool) -> Callable[[], None]:
        model_cfg = copy.deepcopy(cfg)
        model_cfg.model.backbone.frozen = frozen
        model = build_for_benchmark(model_cfg, args.device, None).train()
        if args.amp:  # as tools/train.py --amp
            enable_amp(model_cfg)
        wrapper = build_optim_wrapper(model, model_cfg.optim_wrapper)
        generator = torch.Generator().manual_seed(0)
        samples = []
        for _ in range(args.batch):
            labels = torch.randint(
                0, num_classes, (1, *size), generator=generator)
            sample = SegDataSample(
                gt_sem_seg=PixelData(data=labels),
                metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
            samples.append(sample)
        images = [
            torch.randint(
                0, 256, (3, *size), dtype=torch.uint8, generator=generator)
            for _ in range(args.batch)
        ]

        def step():
            model.train_step(
                dict(inputs=images, data_samples=samples), wrapper)

        step.model = model
        return step

    frozen = setup(True)
    runs = dict(frozen=frozen)
    if args.compare:
        runs['finetuned'] = setup(False)
    seconds = compare_runs(runs, args.device, args.repeat, args.warmup)[0]
    record = dict(
        size=list(size),
        seconds=seconds['frozen'],
        images_per_second=args.batch / seconds['frozen'],
        trainable_params=sum(p.numel() for p in frozen.model.parameters()
                             if p.requires_grad),
        peak_bytes=peak_bytes(frozen, args.device, tensor_bytes(frozen.model)))
    if args.compare:
        finetuned = runs['finetuned']
        record.update(
            baseline='frozen=False',
            baseline_seconds=seconds['finetuned'],
            speedup=seconds['finetuned'] / seconds['frozen'],
            baseline_peak_bytes=peak_bytes(finetuned, args.device,
                                           tensor_bytes(finetuned.model)))
    return record


MEASURES = dict(
    backbone=measure_backbone,
    slide=measure_inference,
    tta=measure_inference,
    dataset=measure_dataset,
    onnx=measure_onnx,
    train=measure_train)
