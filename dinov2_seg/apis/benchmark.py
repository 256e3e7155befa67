"""Speed and memory of a config's model, fast paths against mmseg's stock
ones measured side by side in one process.

Modes:

- ``backbone``: ``--batch`` windows (the slide crop, or ``--size``) through
  the backbone alone; images/s, achieved TFLOP/s and, on a known GPU, the
  model-FLOPs utilisation of its dense bf16 peak.
- ``slide``: one image (or ``--batch``) of ``--size`` through the config's
  test pipeline and ``test_step`` (single-scale slide inference).
- ``tta``: the same through the multi-scale flip test with ``--scales``.
- ``train``: one training step of ``--batch`` crops with the backbone
  frozen, against the same step with ``frozen=False``.

With ``--compare`` the baseline (mmseg's stock slide inference / TTA, or the
fine-tuned backbone for ``train``) runs in the same process, alternating with
the measured path after a warm-up; times are medians of ``--repeat`` runs.
For ``slide`` and ``tta`` the same windows also go through the backbone
alone (``backbone_seconds``), and each timed run records the share of its
own time spent inside the backbone (``backbone_share``; on a shared machine
this split of one run is steadier than a ratio of two runs). The last line
printed is one JSON object, also appended to ``--out``.

``--against CONFIG`` (slide, tta) also times another config's model, e.g.
the Mask2Former config against an EoMT one on the same backbone, through
its own fast path on the same images, alternating with the measured one;
the record adds its seconds, parameters and peak, and
``speedup_vs_against`` (its seconds over the measured model's).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU a
dispatch mode counts the bytes of every tensor alive at each moment of a
separate, untimed run (the peak a caching allocator would need; for the
Mask2Former configs an upper bound of a GPU run, where mmcv's deformable
attention kernel does not materialise its samples).
"""
import argparse
import copy
import json
import os
import os.path as osp
import statistics
import time
import weakref
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.datasets.pipelines import (select_tta_scales,
                                           without_annotations)
from dinov2_seg.engine.run_config import enable_amp, load_config

# Dense (no sparsity) bfloat16 tensor-core peaks from NVIDIA's data sheets,
# for the model-FLOPs utilisation of --mode backbone.
DENSE_BF16_PEAK_TFLOPS = {'H100': 989.4, 'H200': 989.4, 'A100': 312.0}


class LiveTensorBytes(TorchDispatchMode):
    """Track the bytes of all storages created by operators while active,
    freed when their last tensor is garbage; ``peak`` is the maximum."""

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: Dict[int, list] = {}  # storage -> [nbytes, tensors]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]


def tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size()
               for t in list(module.parameters()) + list(module.buffers()))


def window_size(cfg: Config) -> Tuple[int, int]:
    crop = cfg.model.get('test_cfg', {}).get('crop_size')
    if crop is None:
        crop = cfg.model.data_preprocessor.get('size') or (512, 512)
    return tuple(crop)


def build_for_benchmark(cfg: Config, device: str,
                        checkpoint: Optional[str]) -> nn.Module:
    """The config's segmentor in eval mode; random weights unless a
    checkpoint is given (benchmarks need no downloaded file). SyncBN is
    built as BN: a benchmark runs in one process."""
    cfg.model.backbone.init_cfg = None
    cfg.model.pop('pretrained', None)
    # Built (and randomly initialised) on the device: seconds instead of a
    # minute for ViT-g on a CPU.
    with torch.device(device):
        model = revert_sync_batchnorm(MODELS.build(cfg.model))
    if checkpoint:
        load_segmentor_checkpoint(model, checkpoint)
    return model.to(device).eval()


def synchronize(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def peak_bytes(run: Callable[[], object], device: str,
               resident: int) -> int:
    """Peak memory of one run: CUDA's allocator peak, or on CPU the
    ``resident`` bytes (weights) plus the live-tensor peak."""
    if device.startswith('cuda'):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        run()
        synchronize(device)
        return torch.cuda.max_memory_allocated()
    tracker = LiveTensorBytes()
    with tracker:
        run()
    return resident + tracker.peak


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
    medians = {name: statistics.median(values) for name, values in times.items()}
    return medians, outputs


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR uint8 image with gradients and noise (varied predictions)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([rows * 0.7, cols * 0.5, (rows + cols) * 0.3], -1)
    return np.clip(base % 256 + rng.normal(0, 20, base.shape), 0,
                   255).astype(np.uint8)


def test_batch(pipeline: list, size: Tuple[int, int], batch: int) -> dict:
    steps = copy.deepcopy(without_annotations(pipeline))
    steps[0]['type'] = 'LoadImageFromNDArray'
    transform = Compose(steps)
    return pseudo_collate([
        transform(dict(img=synthetic_image(*size, seed=i)))
        for i in range(batch)
    ])


def backbone_flops(backbone: nn.Module, height: int, width: int) -> float:
    """Model FLOPs of one image through a DINOv2 ViT: 2 per multiply-add of
    the patch embedding and every linear layer of the blocks, plus the
    attention products (QK^T and attention x V)."""
    patch = backbone.patch_size
    grid = -(-height // patch) * -(-width // patch)  # center-padded
    tokens = 1 + backbone.num_register_tokens + grid
    linear = sum(m.weight.numel() for m in backbone.blocks.modules()
                 if isinstance(m, nn.Linear))
    attention = 2 * 2 * tokens * tokens * backbone.embed_dim * len(
        backbone.blocks)
    embed = backbone.patch_embed.proj.weight.numel() * grid
    return 2.0 * (linear * tokens + embed) + attention


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


def recording_windows(segmentor: nn.Module, run: Callable,
                      shapes: List[tuple]) -> Callable:
    """``run`` that, the first time, records into ``shapes`` the input
    shape of every backbone call (seen by the patch embedding: EoMT runs
    the ViT's parts without its forward)."""
    backbone = segmentor.backbone
    module = getattr(backbone, 'patch_embed', backbone)

    def first_run_records():
        if shapes:
            return run()
        handle = module.register_forward_pre_hook(
            lambda module, args: shapes.append(tuple(args[0].shape)))
        try:
            return run()
        finally:
            handle.remove()

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


def label_agreement(fast: list, stock: list) -> float:
    same = total = 0
    for a, b in zip(fast, stock):
        a, b = a.pred_sem_seg.data, b.pred_sem_seg.data
        same += int((a == b).sum())
        total += a.numel()
    return same / total


def inference_setup(cfg: Config, config: str,
                    args: argparse.Namespace) -> Tuple[nn.Module, Callable,
                                                       Callable]:
    """A config's segmentor and its fast and stock test-step runs on the
    benchmark's images (through its own test or TTA pipeline)."""
    segmentor = build_for_benchmark(cfg, args.device, args.checkpoint
                                    if config == args.config else None)
    if not hasattr(segmentor, 'uses_fast_slide'):
        raise ValueError(f'{config}: model.type={cfg.model.type!r} has '
                         'no fast path; --mode slide/tta need '
                         "type='BatchedEncoderDecoder'")
    segmentor.test_cfg.amp = args.amp
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

    def backbone_only():
        # The windows of the (first) fast run, in its batches; it runs
        # before this in every round.
        with torch.inference_mode(), segmentor.autocast(
                torch.device(args.device).type):
            for shape in windows:
                segmentor.backbone(torch.randn(shape, device=args.device))

    runs = dict(fast=fast, backbone=backbone_only)
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
            label_agreement=label_agreement(outputs['fast'],
                                            outputs['stock']))
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
    backbone = torch.compile(
        segmentor.backbone) if args.compile else segmentor.backbone

    def forward():
        with torch.inference_mode(), segmentor.autocast(
                torch.device(args.device).type):
            backbone(inputs)

    seconds = compare_runs(
        dict(backbone=forward), args.device, args.repeat,
        args.warmup)[0]['backbone']
    flops = backbone_flops(segmentor.backbone, *size) * args.batch
    record = dict(
        size=list(size),
        seconds=seconds,
        backbone_seconds=seconds,
        images_per_second=args.batch / seconds,
        tflops=flops / seconds / 1e12,
        model_tflop_per_image=flops / args.batch / 1e12,
        peak_bytes=peak_bytes(forward, args.device,
                              tensor_bytes(segmentor)))
    peak = args.peak_tflops or gpu_peak_tflops(args.device)
    if peak:
        record.update(peak_tflops=peak, mfu=record['tflops'] / peak)
    return record


def gpu_peak_tflops(device: str) -> Optional[float]:
    if not device.startswith('cuda'):
        return None
    name = torch.cuda.get_device_name()
    for model, peak in DENSE_BF16_PEAK_TFLOPS.items():
        if model in name:
            return peak
    return None


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
                metainfo=dict(img_shape=size, ori_shape=size,
                              pad_shape=size))
            samples.append(sample)
        images = [
            torch.randint(0, 256, (3, *size), dtype=torch.uint8,
                          generator=generator) for _ in range(args.batch)
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
        peak_bytes=peak_bytes(frozen, args.device,
                              tensor_bytes(frozen.model)))
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
    train=measure_train)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Speed and memory of a config\'s model; --compare times '
        'the stock path in the same run.')
    parser.add_argument('config')
    parser.add_argument('--mode', choices=sorted(MEASURES), default='slide')
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='image size (slide, tta) or window/crop size (backbone, '
        'train); default: the slide crop size')
    parser.add_argument(
        '--scales', type=int, default=None, help='tta: number of scales')
    parser.add_argument(
        '--batch',
        type=int,
        default=1,
        help='images per test step / training step, windows per backbone '
        'call')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='inference: bfloat16 autocast of the backbone (float16 on GPUs '
        'without bfloat16), as tools/test.py --amp; train: '
        'AmpOptimWrapper, as tools/train.py --amp')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        choices=['cuda', 'cpu'])
    parser.add_argument(
        '--compile',
        action='store_true',
        help='backbone mode: torch.compile the backbone (the warm-up '
        'compiles)')
    parser.add_argument(
        '--compare',
        action='store_true',
        help='also run the baseline (stock mmseg path; train: frozen=False)')
    parser.add_argument(
        '--against',
        metavar='CONFIG',
        help='slide, tta: also time this config\'s model (its fast path, '
        'random weights) on the same images, e.g. the Mask2Former config '
        'against an EoMT one')
    parser.add_argument(
        '--repeat', type=int, default=3, help='timed runs (median)')
    parser.add_argument(
        '--warmup', type=int, default=1, help='untimed runs before')
    parser.add_argument(
        '--checkpoint', help='weights to load (default: random)')
    parser.add_argument(
        '--peak-tflops',
        type=float,
        help='dense bf16 peak of the GPU for the FLOPs utilisation '
        '(known: H100, H200, A100)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    parser.add_argument(
        '--out',
        default='work_dirs/benchmark/results.jsonl',
        help='results file; one JSON line is appended per run')
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error('--batch and --repeat must be >= 1, --warmup >= 0')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    torch.manual_seed(0)
    record = dict(
        config=args.config,
        mode=args.mode,
        device=args.device,
        gpu=torch.cuda.get_device_name()
        if args.device == 'cuda' else None,
        batch=args.batch,
        scales=args.scales,
        amp=args.amp,
        compile=args.compile,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        time=time.strftime('%Y-%m-%d %H:%M:%S'))
    record.update(MEASURES[args.mode](cfg, args))
    line = json.dumps(record)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'a') as results:
        results.write(line + '\n')
    print(line)
    return 0
