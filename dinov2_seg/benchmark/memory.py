"""Peak memory of one run.

On CUDA ``torch.cuda.max_memory_allocated``; on CPU a dispatch mode counts
the bytes of every tensor alive at each moment of the run (the peak a
caching allocator would need; for the Mask2Former configs an upper bound of
a GPU run, where mmcv's deformable attention kernel does not materialise
its samples).
"""
import weakref
from typing import Callable, Dict

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .timing import synchronize


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


def peak_bytes(run: Callable[[], object], device: str, resident: int) -> int:
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
