"""timm's and transformers' side of the DINOv3 parity tests (run with
.venv-timm; imports only torch, timm and transformers).

python tests/helpers/dinov3_timm_reference.py CASES.json OUTPUT.pt

CASES.json holds ``{"input": INPUT.pt, "cases": {name: case}}``; for each
case the class token (B, D) and patch tokens (B, h * w, D) of the final
normed output on INPUT go to OUTPUT[name]. Kinds of case:

``meta_file`` (``timm_model``, ``settings``, ``checkpoint``)
    timm's model loads Meta's file through timm's own converter
    (``eva.checkpoint_filter_fn``), strictly.
``timm_export`` (``timm_model``, ``settings``, ``state``)
    a timm model with randomised weights; its state_dict as timm saves it
    goes to ``state``.
``hf_export`` (``config``, ``state``, ``hub_dir``)
    transformers' ``DINOv3ViTModel`` built from a config (no download),
    weights randomised; its state_dict goes to ``state`` and
    ``save_pretrained`` writes ``hub_dir``.

Runs in its own environment: timm needs torchvision, and no torchvision
wheel on PyPI works beside the CPU torch of the main environment.
"""
import json
import sys

import timm
import torch
import transformers
from timm.models.eva import checkpoint_filter_fn


def randomise(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make every tensor matter, norms and scales too
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def timm_tokens(model, x, prefix: int):
    # timm refuses sides that are not multiples of the patch size; Meta's
    # patch convolution floors them, which is the same as cropping the
    # remainder off the bottom and right.
    height, width = (s // 16 * 16 for s in x.shape[-2:])
    x = x[..., :height, :width]
    with torch.no_grad():
        tokens = model.forward_features(x)
    return dict(cls=tokens[:, 0], patches=tokens[:, prefix:])


def meta_file(case, x):
    model = timm.create_model(
        case['timm_model'],
        pretrained=False,
        num_classes=0,
        **case['settings']).eval()
    official = torch.load(case['checkpoint'], weights_only=True)
    model.load_state_dict(checkpoint_filter_fn(official, model), strict=True)
    return timm_tokens(model, x, model.num_prefix_tokens)


def timm_export(case, x):
    model = timm.create_model(
        case['timm_model'],
        pretrained=False,
        num_classes=0,
        **case['settings']).eval()
    randomise(model)
    torch.save(model.state_dict(), case['state'])
    return timm_tokens(model, x, model.num_prefix_tokens)


def hf_export(case, x):
    config = transformers.DINOv3ViTConfig(**case['config'])
    model = transformers.DINOv3ViTModel(config).eval()
    randomise(model)
    torch.save(model.state_dict(), case['state'])
    model.save_pretrained(case['hub_dir'])
    with torch.no_grad():
        tokens = model(pixel_values=x).last_hidden_state
    return dict(
        cls=tokens[:, 0], patches=tokens[:, 1 + config.num_register_tokens:])


def main(cases_path: str, output_path: str) -> None:
    with open(cases_path) as f:
        spec = json.load(f)
    x = torch.load(spec['input'], weights_only=True)
    kinds = dict(
        meta_file=meta_file, timm_export=timm_export, hf_export=hf_export)
    torch.save(
        {
            name: kinds[case['kind']](case, x)
            for name, case in spec['cases'].items()
        }, output_path)


if __name__ == '__main__':
    main(*sys.argv[1:])
