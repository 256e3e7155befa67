"""Export the network of one slide window (DINOv2 backbone + linear/ms head)
to ONNX, and check the file with onnxruntime.

The exported graph takes a batch of normalised RGB windows of a fixed size
(N, 3, H, W), N free, and returns the head's class logits on the patch grid
(N, C, ceil(H / 14), ceil(W / 14)): the decode head's output before its
bilinear resize to the window. That resize, the merging of the windows,
normalisation and the multi-scale flip test stay outside the graph (see
:mod:`dinov2_seg.deployment.onnx_inference`), which keeps a window's output
196 times smaller than at full resolution (150 x 640 x 640 floats would be
245 MB for ADE20K).
"""
import contextlib
import logging
import warnings
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

# torch.onnx's exporter (torch.export based, the default since torch 2.9)
# writes this opset and can only convert upwards from it.
MIN_OPSET = 18


class NotExportableError(ValueError):
    """The config's model has parts this exporter cannot put in ONNX."""


def check_exportable(model: Union[nn.Module, dict]) -> None:
    """Raise :class:`NotExportableError` unless ``model`` (a segmentor or
    its config) is a DinoVisionTransformer with a BNHead and no neck."""
    if isinstance(model, nn.Module):
        backbone = type(model.backbone).__name__
        head = type(model.decode_head).__name__
        with_neck = getattr(model, 'with_neck', False)
    else:
        backbone = model['backbone']['type']
        head = model['decode_head']['type']
        with_neck = model.get('neck') is not None
    if backbone == 'DinoViTAdapter' or 'Mask2Former' in head:
        raise NotExportableError(
            f'{backbone} + {head}: Mask2Former and ViT-Adapter models cannot '
            'be exported to ONNX here. Their multi-scale deformable '
            "attention is mmcv's MultiScaleDeformableAttnFunction on GPU, a "
            'compiled op without an ONNX symbolic in mmcv 2.x (MMDeploy '
            'ships it as a custom op for ONNX Runtime / TensorRT), and the '
            "Mask2Former pixel decoder (mmdet's MSDeformAttnPixelDecoder) "
            'reads feature shapes through torch._shape_as_tensor, which '
            'torch.export cannot trace. Export a linear or ms config (e.g. '
            'configs/ade20k_vitl14_ms.py), or use MMDeploy.')
    if (backbone, head, with_neck) != ('DinoVisionTransformer', 'DinoBNHead',
                                       False):
        raise NotExportableError(
            'Exports support DinoVisionTransformer + DinoBNHead (the linear '
            f'and ms configs), not {backbone} + {head}'
            f'{" with a neck" if with_neck else ""}')


@contextlib.contextmanager
def fixed_position_embedding(backbone: nn.Module,
                             size: Tuple[int, int]) -> Iterator[None]:
    """Give the backbone its positional embedding for ``size`` as a
    constant while exporting.

    The embedding is resized bicubically from the pretraining grid with
    scale factors computed from the input shape, which the exporter would
    trace into Resize nodes that ONNX Runtime does not compute as torch
    does (border handling; antialiasing of the register models). For a
    fixed window it is a constant, computed here by the backbone itself.
    """
    patch = backbone.patch_size
    grid = tuple(-(-side // patch) for side in size)  # after center padding
    with torch.no_grad():
        table = backbone.interpolate_pos_embed(grid).detach().clone()
    backbone.interpolate_pos_embed = lambda _: table
    try:
        yield
    finally:
        del backbone.interpolate_pos_embed


class WindowLogits(nn.Module):
    """Backbone + BNHead of a segmentor on a batch of windows: the head's
    logits on the patch grid."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, image: Tensor) -> Tensor:
        return self.segmentor.decode_head(self.segmentor.extract_feat(image))


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
            yield
    finally:
        registration.setLevel(level)


def export_onnx(segmentor: nn.Module,
                out: str,
                size: Tuple[int, int],
                opset: int = MIN_OPSET) -> None:
    """Write ``segmentor``'s window network for ``size`` (H, W) windows to
    ``out``, with a free batch dimension.

    Raises:
        NotExportableError: for Mask2Former, ViT-Adapter and other models.
        ValueError: for an opset below :data:`MIN_OPSET`.
    """
    check_exportable(segmentor)
    if opset < MIN_OPSET:
        raise ValueError(f'--opset {opset}: torch.onnx writes opset '
                         f'{MIN_OPSET} and converts only to newer ones')
    segmentor = segmentor.eval()
    network = WindowLogits(segmentor).eval()
    example = torch.zeros(2, 3, *size)
    batch = torch.export.Dim('batch', min=1)
    with fixed_position_embedding(segmentor.backbone, size), \
            torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            network, (example, ),
            dynamo=True,
            opset_version=opset,
            input_names=['image'],
            output_names=['logits'],
            dynamic_shapes={'image': {
                0: batch
            }},
            external_data=False,
            verbose=False)
        program.save(out)


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
        expected = WindowLogits(segmentor.eval())(
            torch.from_numpy(windows)).numpy()
    if found.shape != expected.shape:
        raise ValueError(f'{onnx_file} gives logits of shape {found.shape}, '
                         f'PyTorch {expected.shape}')
    return float(np.abs(found - expected).max())
