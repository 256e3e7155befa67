"""Reading checkpoint files and finding the backbone's tensors in them."""
from typing import Dict, Mapping

from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor


def read_checkpoint(filename: str) -> Mapping:
    """Read a ``.safetensors`` file (as the Hugging Face Hub serves them) or
    anything mmengine's CheckpointLoader reads (paths, URLs)."""
    if filename.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(f'{filename}: reading .safetensors files needs '
                              '`pip install safetensors`') from error
        return load_file(filename)
    return CheckpointLoader.load_checkpoint(filename, map_location='cpu')


def extract_state_dict(checkpoint: Mapping, source: str) -> Dict[str, Tensor]:
    """Return the backbone tensors of a loaded checkpoint.

    Accepts a plain state_dict (Meta's backbone files), a dict wrapping one
    under ``state_dict`` or ``model``, and a whole segmentor checkpoint, whose
    ``backbone.`` entries are taken (likewise ``module.`` and ``dinov2.``).

    Raises:
        ValueError: if ``source`` holds no tensors.
    """
    for wrapper in ('state_dict', 'model'):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            break
    state_dict = {k: v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if not state_dict:
        raise ValueError(
            f'{source} holds no tensors; expected a DINOv2 '
            'backbone state_dict such as dinov2_vits14_pretrain.pth')
    # A whole segmentor, a DDP-wrapped model or a transformers model with a
    # task head: keep the backbone's part.
    for prefix in ('module.', 'backbone.', 'dinov2.'):
        if any(k.startswith(prefix) for k in state_dict):
            state_dict = {
                k[len(prefix):]: v
                for k, v in state_dict.items() if k.startswith(prefix)
            }
    return state_dict
