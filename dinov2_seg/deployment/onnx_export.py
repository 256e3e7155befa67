"""Export the network of one slide window of any segmentor here (DINOv2 /
DINOv3 backbone with a linear or ms head, Mask2Former or EoMT) to ONNX, and
check the file with onnxruntime.

The exported graph takes a batch of normalised RGB windows of a fixed size
(N, 3, H, W), N free, and returns what the segmentor's slide inference
merges (``window_logits``): the class scores of each window before their
resize to the window (the head's logits on the patch grid for the linear
heads; class-weighted mask probabilities at the mask resolution for
Mask2Former and EoMT, or at the window's with ``combine_at='window'`` /
``resize_masks_first``). That resize, the merging of the windows,
normalisation and the multi-scale flip test stay outside the graph (see
:mod:`dinov2_seg.deployment.onnx_inference`), which keeps a window's output
up to 196 times smaller than at full resolution.
"""
import contextlib
import logging
import os.path as osp
import traceback
import warnings
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .onnx_metadata import export_summary, write_metadata
from .window_constants import window_constants

# torch.onnx's exporter (torch.export based, the default since torch 2.9)
# writes this opset and can only convert upwards from it (grid_sample,
# which deformable attention needs, is in ONNX from opset 16).
MIN_OPSET = 18
# The segmentors whose slide inference runs ``window_logits``, the part
# exported.
EXPORTABLE_SEGMENTORS = ('BatchedEncoderDecoder', 'EoMTSegmentor')


class NotExportableError(ValueError):
    """The config's model has parts this exporter cannot put in ONNX."""


def model_family(model: Union[nn.Module, dict]) -> str:
    """'linear' (linear and ms heads), 'mask2former' or 'eomt', from the
    decode head's type."""
    head = (
        type(model.decode_head).__name__
        if isinstance(model, nn.Module) else model['decode_head']['type'])
    if 'EoMT' in head:
        return 'eomt'
    if 'Mask2Former' in head:
        return 'mask2former'
    return 'linear'


def check_exportable(model: Union[nn.Module, dict]) -> None:
    """Raise :class:`NotExportableError` unless ``model`` (a segmentor or
    its config) slides windows through ``window_logits``: a
    BatchedEncoderDecoder or an EoMTSegmentor with ``test_cfg.mode='slide'``.
    Whether its parts trace is found by exporting (:func:`export_onnx`
    names the first op that does not)."""
    if isinstance(model, nn.Module):
        name = type(model).__name__
        sliding = hasattr(model, 'window_logits')
        mode = model.test_cfg.get('mode')
    else:
        name = model['type']
        sliding = name in EXPORTABLE_SEGMENTORS
        mode = model.get('test_cfg', {}).get('mode')
    if not sliding:
        raise NotExportableError(
            f'model.type={name!r}: exports take the slide windows of '
            f'{" or ".join(EXPORTABLE_SEGMENTORS)} (their window_logits)')
    if mode != 'slide':
        raise NotExportableError(
            f"model.test_cfg.mode={mode!r}: exports hold one slide window's "
            "network; set test_cfg.mode='slide'")


class WindowLogits(nn.Module):
    """A segmentor's ``window_logits`` on a batch of windows of one size:
    what its slide inference merges."""

    def __init__(self, segmentor: nn.Module, size: Tuple[int, int]):
        super().__init__()
        self.segmentor = segmentor
        self.size = tuple(size)

    def forward(self, image: Tensor) -> Tensor:
        meta = dict(img_shape=self.size, ori_shape=self.size)
        return self.segmentor.window_logits(image, [meta])


@contextlib.contextmanager
def _plain_float32(segmentor: nn.Module) -> Iterator[None]:
    """The test_cfg's ``compile`` and ``amp`` off: the exported network is
    the eager float32 one."""
    saved = {k: segmentor.test_cfg.get(k) for k in ('compile', 'amp')}
    segmentor.test_cfg.update(compile=False, amp=False)
    try:
        yield
    finally:
        segmentor.test_cfg.update(saved)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep torch.onnx's notes that concern other models (torchvision's
    detection ops it skips, a deprecation inside torch) off the console."""
    registration = logging.getLogger(
        'torch.onnx._internal.exporter._registration')
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                'ignore', message=r'.*isinstance\(treespec, LeafSpec\)')
            warnings.filterwarnings('ignore', category=UserWarning)
            yield
    finally:
        registration.setLevel(level)


def export_failure(error: BaseException) -> str:
    """Where and why the exporter stopped: the innermost model-code frame
    (this package, mmcv, mmdet, mmseg) of the root cause and its message's
    first line."""
    root = error
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    where = None
    for frame in traceback.extract_tb(root.__traceback__):
        parts = frame.filename.replace('\\', '/').split('/')
        if any(p in ('dinov2_seg', 'mmcv', 'mmdet', 'mmseg')
               for p in parts) and 'deployment' not in parts:
            where = frame
    message = (str(root).strip().splitlines() or [''])[0]
    reason = f'{type(root).__name__}: {message}'
    if where is not None:
        package = where.filename.replace('\\', '/').split('/site-packages/')
        location = package[-1] if len(package) > 1 else osp.relpath(
            where.filename)
        reason += (f' (in {where.name}, {location}:{where.lineno}: '
                   f'{where.line})')
    return reason


def export_onnx(segmentor: nn.Module,
                out: str,
                size: Tuple[int, int],
                opset: int = MIN_OPSET) -> List[str]:
    """Write ``segmentor``'s window network for ``size`` (H, W) windows to
    ``out``, with a free batch dimension, and record its config
    (:mod:`.onnx_metadata`). Returns what was frozen as a constant of the
    window size (:mod:`.window_constants`).

    Raises:
        NotExportableError: for a segmentor without slide windows, or with
            the exporter's first failure (op and place) for a part that
            does not trace.
        ValueError: for an opset below :data:`MIN_OPSET`.
    """
    check_exportable(segmentor)
    if opset < MIN_OPSET:
        raise ValueError(f'--opset {opset}: torch.onnx writes opset '
                         f'{MIN_OPSET} and converts only to newer ones')
    segmentor = segmentor.eval()
    network = WindowLogits(segmentor, size).eval()
    example = torch.zeros(2, 3, *size)
    batch = torch.export.Dim('batch', min=1)
    with _plain_float32(segmentor), _quiet_exporter(), \
            window_constants(network, example) as frozen, torch.no_grad():
        try:
            # torch.export first, on its own: its errors name the op and
            # the line (torch.onnx would retry other ways and could fix the
            # batch size silently).
            exported = torch.export.export(
                network, (example, ),
                dynamic_shapes={'image': {
                    0: batch
                }},
                strict=False)
            program = torch.onnx.export(
                exported,
                dynamo=True,
                opset_version=opset,
                input_names=['image'],
                output_names=['logits'],
                external_data=False,
                verbose=False)
        except Exception as error:  # the exporter raises many kinds
            raise NotExportableError(
                f'{type(segmentor.backbone).__name__} + '
                f'{type(segmentor.decode_head).__name__}: torch.onnx could '
                f'not export the window network: {export_failure(error)}'
            ) from error
        program.save(out)
    family = model_family(segmentor)
    output = dict(
        linear='head logits on the patch grid',
        mask2former='class-weighted mask probabilities',
        eomt='class-weighted mask probabilities')[family]
    write_metadata(out, segmentor.cfg,
                   export_summary(segmentor.cfg, size, output, family))
    return frozen


def random_windows(size: Tuple[int, int],
                   count: int = 2,
                   seed: int = 0) -> np.ndarray:
    """Normalised-image-like input for the check: N(0, 1) pixels."""
    generator = np.random.default_rng(seed)
    return generator.standard_normal((count, 3, *size)).astype(np.float32)


def compare_with_onnxruntime(
        segmentor: nn.Module,
        onnx_file: str,
        windows: np.ndarray,
        providers: Optional[Sequence[str]] = None) -> float:
    """Run ``windows`` through PyTorch and onnxruntime; return the largest
    absolute difference of the logits."""
    import onnxruntime
    session = onnxruntime.InferenceSession(
        onnx_file, providers=list(providers or ['CPUExecutionProvider']))
    found = session.run(None, {'image': windows})[0]
    with torch.no_grad():
        size = windows.shape[-2:]
        with _plain_float32(segmentor):
            expected = WindowLogits(segmentor.eval(),
                                    size)(torch.from_numpy(windows)).numpy()
    if found.shape != expected.shape:
        raise ValueError(f'{onnx_file} gives logits of shape {found.shape}, '
                         f'PyTorch {expected.shape}')
    return float(np.abs(found - expected).max())
