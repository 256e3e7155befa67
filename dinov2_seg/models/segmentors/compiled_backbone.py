"""``torch.compile`` of a segmentor's network for inference, shared by
``tools/test.py --compile``, ``tools/inference.py --compile`` and
``tools/benchmark.py --compile``.

Shapes: the slide windows all have the crop size (after the recipes' test
resize an image is never smaller than a window), so only the number of
windows per call changes: ``window_batch_size`` for full calls, fewer for
the last call of a step. That batch dimension is marked dynamic
(:func:`mark_batch_dynamic`) rather than padded to ``window_batch_size``:
padding would run up to ``window_batch_size - 1`` dummy windows per step
(with 4 ADE20K images of about 2.5 windows each and a GPU's 8 windows per
call, 6 of 16), while one graph with a symbolic batch costs nothing extra.
Torch specialises a batch of 1 (the CPU default, one window per call) into
graphs of its own, so a window size compiles at most two sets of graphs,
whatever the number and sizes of the images.
"""
from typing import Any, Callable

import torch
from torch import Tensor, nn


def compile_for_inference(owner: nn.Module, name: str, backbone: nn.Module,
                          **options: Any) -> Callable:
    """Replace the method ``owner.<name>`` by one that runs it through
    ``torch.compile`` (``options``: its keyword arguments; default
    inductor) when gradients are off, i.e. at test time, and eagerly when
    they are on, so that the training steps around a validation run are
    not put through graphs compiled for inference. Returns the new method;
    a second call changes nothing.

    Replacing a method (not wrapping the module) keeps the parameter names
    of checkpoints, ``.to()`` and, for ``forward``, the module hooks, which
    then run eagerly around the compiled call (the benchmark's timing
    hooks see every call). The backbone's cached positional-embedding
    resize (``interpolate_pos_embed``: the cache key holds a data pointer,
    which Dynamo cannot trace) runs eagerly: a lookup once the window size
    has been seen.
    """
    method = getattr(owner, name)
    if getattr(method, 'compiled', None) is not None:
        return method
    resize = getattr(backbone, 'interpolate_pos_embed', None)
    if resize is not None and not hasattr(resize, '__wrapped__'):
        backbone.interpolate_pos_embed = torch.compiler.disable(resize)
    compiled = torch.compile(method, **options)

    def dispatch(*args, **kwargs):
        if torch.is_grad_enabled():
            return method(*args, **kwargs)
        return compiled(*args, **kwargs)

    dispatch.compiled = compiled
    setattr(owner, name, dispatch)
    return dispatch


def compile_backbone(backbone: nn.Module, **options: Any) -> nn.Module:
    """:func:`compile_for_inference` of ``backbone.forward``; returns the
    backbone."""
    compile_for_inference(backbone, 'forward', backbone, **options)
    return backbone


def mark_batch_dynamic(batch: Tensor) -> Tensor:
    """Mark dimension 0 of a window batch dynamic (see the module
    docstring); a batch of one stays static, as Torch would specialise it
    anyway."""
    if batch.shape[0] > 1:
        torch._dynamo.mark_dynamic(batch, 0)
    return batch
