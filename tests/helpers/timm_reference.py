"""timm's side of the timm tests (run with .venv-timm; imports only torch
and timm).

python tests/helpers/timm_reference.py features CHECKPOINT TIMM_MODEL \
    INPUT.pt OUTPUT.pt BLOCKS
    Features of timm's DINOv2 for a Meta-layout file.
python tests/helpers/timm_reference.py export TIMM_MODEL SETTINGS_JSON \
    STATE.pt INPUT.pt OUTPUT.pt BLOCKS
    A timm model built with SETTINGS (e.g. a smaller depth), its weights
    randomised: its state_dict as timm saves it, and its features.

Runs in its own environment: timm needs torchvision, and no torchvision
wheel on PyPI works beside the CPU torch of the main environment.

For ``features`` the weights go through timm's own converter for Meta's
layout. The input is center-padded to a multiple of 14 as the official
segmentation wiring does. timm resizes position embeddings with plain
bicubic + antialias, which is what Meta's register models do; Meta's
original models instead use scale factors with a +0.1 offset and no
antialias, so for them the embedding that timm receives is resized that way
(everything else is timm's).
"""
import json
import math
import sys

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import checkpoint_filter_fn


def intermediates(model, x, blocks: str) -> list:
    with torch.no_grad():
        feats = model.forward_intermediates(
            x,
            indices=[int(b) for b in blocks.split(',')],
            norm=True,
            output_fmt='NCHW',
            intermediates_only=True)
    return [f.contiguous() for f in feats]


def features(checkpoint, name, input_path, output_path, blocks) -> None:
    official = torch.load(checkpoint, weights_only=True)
    x = torch.load(input_path, weights_only=True)
    height, width = x.shape[-2:]
    padded_h, padded_w = (math.ceil(s / 14) * 14 for s in (height, width))
    x = F.pad(x, ((padded_w - width) // 2, padded_w - width -
                  (padded_w - width) // 2,
                  (padded_h - height) // 2, padded_h - height -
                  (padded_h - height) // 2))
    model = timm.create_model(
        name, pretrained=False, num_classes=0,
        img_size=(padded_h, padded_w)).eval()
    state = checkpoint_filter_fn(dict(official), model)
    if 'register_tokens' not in official:
        pos = official['pos_embed']
        side = int(math.sqrt(pos.shape[1] - 1))
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid,
            scale_factor=((padded_h // 14 + 0.1) / side,
                          (padded_w // 14 + 0.1) / side),
            mode='bicubic',
            antialias=False)
        state['pos_embed'] = torch.cat(
            [pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)
    model.load_state_dict(state, strict=True)
    torch.save(intermediates(model, x, blocks), output_path)


def export(name, settings, state_path, input_path, output_path,
           blocks) -> None:
    model = timm.create_model(
        name, pretrained=False, num_classes=0, **json.loads(settings)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make every tensor matter, norms and scales too
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    torch.save(model.state_dict(), state_path)
    x = torch.load(input_path, weights_only=True)
    torch.save(intermediates(model, x, blocks), output_path)


if __name__ == '__main__':
    {'features': features, 'export': export}[sys.argv[1]](*sys.argv[2:])
