"""Inference memory and speed of a config's model on one test window.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` around a real
forward pass. On CPU the same forward runs under a dispatch mode that counts
the bytes of every tensor alive at each moment: the peak a caching
allocator would need, read from the program itself rather than from a
hand-written formula. It is an upper bound for a GPU run where CUDA kernels
avoid materialising intermediates (mmcv's deformable-attention sampling has
no fused CPU kernel) and ignores allocator fragmentation and the CUDA
context (about 0.5 GB).
"""
import argparse
import json
import os
import os.path as osp
import time
import weakref
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dinov2_seg.checkpoints import load_segmentor_checkpoint
from .runner_setup import load_config

GIB = 1024**3


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


def build_for_benchmark(cfg: Config, device: str,
                        checkpoint: Optional[str]) -> nn.Module:
    """The config's model in eval mode; random weights unless a checkpoint
    is given (benchmarks need no backbone file)."""
    cfg.model.backbone.init_cfg = None
    cfg.model.pop('pretrained', None)
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_segmentor_checkpoint(model, checkpoint)
    return model.to(device).eval()


def window_size(cfg: Config) -> Tuple[int, int]:
    crop = cfg.model.get('test_cfg', {}).get('crop_size')
    if crop is None:
        crop = cfg.model.data_preprocessor.get('size') or (512, 512)
    return tuple(crop)


def measure(model: nn.Module,
            size: Tuple[int, int],
            device: str,
            dtype: torch.dtype = torch.float32,
            repeat: int = 5) -> dict:
    """Forward one window (the segmentor's ``encode_decode``, as slide
    inference does per window) and report memory and time (CUDA: median of
    ``repeat`` runs after a warm-up; CPU: the one counted run)."""
    meta = [dict(img_shape=size, ori_shape=size)]
    model = model.to(dtype)
    weights = tensor_bytes(model)
    record = dict(
        params=sum(p.numel() for p in model.parameters()),
        weights_gib=weights / GIB)
    with torch.inference_mode():
        image = torch.randn(1, 3, *size, device=device, dtype=dtype)
        if device == 'cpu':
            tracker = LiveTensorBytes()
            start = time.perf_counter()
            with tracker:
                model.encode_decode(image, meta)
            record['seconds_per_window'] = time.perf_counter() - start
            record['peak_gib'] = (weights + image.nbytes + tracker.peak) / GIB
            record['method'] = 'live-tensor count on CPU'
            return record
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        model.encode_decode(image, meta)  # warm-up (cudnn, allocator)
        times = []
        for _ in range(repeat):
            torch.cuda.synchronize()
            start = time.perf_counter()
            model.encode_decode(image, meta)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    record['seconds_per_window'] = sorted(times)[len(times) // 2]
    record['peak_gib'] = torch.cuda.max_memory_allocated() / GIB
    record['method'] = 'torch.cuda.max_memory_allocated'
    record['gpu'] = torch.cuda.get_device_name()
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Inference memory and speed of one test window.')
    parser.add_argument('config')
    parser.add_argument(
        '--checkpoint', help='weights to load (default: random)')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        choices=['cuda', 'cpu'])
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='window size (default: the slide crop size)')
    parser.add_argument('--fp16', action='store_true')
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    parser.add_argument(
        '--out',
        default='work_dirs/benchmark/results.jsonl',
        help='results file; one JSON line is appended per run')
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    size = tuple(args.size) if args.size else window_size(cfg)
    dtype = torch.float16 if args.fp16 else torch.float32
    model = build_for_benchmark(cfg, args.device, args.checkpoint)
    record = dict(
        config=args.config,
        device=args.device,
        size=list(size),
        dtype=str(dtype).replace('torch.', ''),
        time=time.strftime('%Y-%m-%d %H:%M:%S'),
        torch=torch.__version__)
    record.update(measure(model, size, args.device, dtype, args.repeat))
    line = json.dumps(record)
    print(line)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'a') as results:
        results.write(line + '\n')
    return 0
