"""Layer-wise learning-rate decay for fine-tuning a DINOv2 or DINOv3
backbone."""
import re
from typing import List, Optional

from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

_BLOCK = re.compile(r'^backbone\.blocks\.(\d+)\.')
# Below the first block: they get the first block's rate.
_STEM = ('backbone.patch_embed.', 'backbone.cls_token',
         'backbone.register_tokens', 'backbone.pos_embed',
         'backbone.storage_tokens', 'backbone.mask_token')


def layer_decay_scale(name: str, depth: int, decay_rate: float) -> float:
    """Learning-rate factor of a parameter: ``decay_rate ** (depth - 1 -
    i)`` for block ``i`` of the backbone, the first block's for the patch
    embedding and the tokens, 1 for everything else (the final norm, the
    head), as in EoMT's optimiser set-up."""
    match = _BLOCK.match(name)
    if match:
        return decay_rate**(depth - 1 - int(match.group(1)))
    if name.startswith(_STEM):
        return decay_rate**(depth - 1)
    return 1.0


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DinoLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor plus layer-wise learning-rate decay of
    the ``backbone.blocks`` (:func:`layer_decay_scale`).

    ``paramwise_cfg`` takes ``layer_decay_rate`` besides mmengine's options
    (custom_keys, norm_decay_mult, ...), whose lr multipliers apply first.
    mmseg's LayerDecayOptimizerConstructor expects BEiT's ``layers.N``
    names and also changes the weight decay; EoMT decays the lr only.

    Every parameter gets its own group named after it (``name``), which
    :class:`TwoStageWarmupPolyLR` uses to tell the backbone apart.
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.layer_decay_rate = paramwise_cfg.pop('layer_decay_rate', 1.0)
        if not 0 < self.layer_decay_rate <= 1:
            raise ValueError('paramwise_cfg.layer_decay_rate must be in '
                             f'(0, 1], got {self.layer_decay_rate}')
        # A non-empty paramwise_cfg makes mmengine build one group per
        # parameter (add_params) instead of a single group.
        paramwise_cfg.setdefault('custom_keys', {})
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   **kwargs) -> None:
        first = len(params)
        super().add_params(params, module, prefix, **kwargs)
        if prefix:  # a recursive call: the top-level one does the naming
            return
        blocks = getattr(getattr(module, 'backbone', None), 'blocks', None)
        if blocks is None:
            raise ValueError(
                'DinoLayerDecayOptimWrapperConstructor needs a model whose '
                'backbone has blocks (backbone.blocks); '
                f'{type(module).__name__} has none')
        names = {id(p): name for name, p in module.named_parameters()}
        for group in params[first:]:
            name = names[id(group['params'][0])]
            group['name'] = name
            group['lr'] = group.get('lr', self.base_lr) * layer_decay_scale(
                name, len(blocks), self.layer_decay_rate)
