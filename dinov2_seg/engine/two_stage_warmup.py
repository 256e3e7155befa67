"""EoMT's learning-rate schedule: the new parts warm up first, the
pretrained backbone after them."""
# _ParamScheduler is the base mmengine documents for new schedulers (and
# exports from mmengine.optim) despite its underscore; its _get_value contract
# is mmengine 0.10's, pinned in setup.py.
from mmengine.optim import _ParamScheduler
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF
from mmseg.registry import PARAM_SCHEDULERS


def two_stage_factor(step: int, delay: int, warmup: int, total: int,
                     power: float) -> float:
    """Factor of the base lr at ``step``: 0 for ``delay`` steps, a linear
    warm-up over ``warmup`` steps, then polynomial decay reaching 0 at
    ``total``."""
    if step < delay:
        return 0.0
    if step < delay + warmup:
        return (step - delay) / warmup
    remaining = max(1, total - delay - warmup)
    return max(0.0, 1 - (step - delay - warmup) / remaining)**power


@PARAM_SCHEDULERS.register_module()
class TwoStageWarmupPolyLR(LRSchedulerMixin, _ParamScheduler):
    """EoMT's two-stage warm-up and poly decay, per parameter group.

    Groups outside the backbone warm up linearly from 0 over
    ``warmup_iters``; the backbone's stay at 0 meanwhile (the new head
    settles before the pretrained weights move) and warm up over
    ``backbone_warmup_iters`` after that. Each then decays polynomially
    (``power``) to 0 at ``end``. mmengine's schedulers scale all groups
    alike, hence this one; it needs the groups named by
    :class:`DinoLayerDecayOptimWrapperConstructor`.

    Args:
        optimizer: Wrapped optimizer.
        warmup_iters (int): Warm-up of the non-backbone groups.
        backbone_warmup_iters (int): Warm-up of the backbone groups, after
            ``warmup_iters``.
        power (float): Poly decay power.
        backbone_prefix (str): Group names of the backbone start with it.
        begin, end (int): Iterations the schedule spans.
    """

    def __init__(self,
                 optimizer,
                 warmup_iters: int = 500,
                 backbone_warmup_iters: int = 1000,
                 power: float = 0.9,
                 backbone_prefix: str = 'backbone.',
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = False,
                 verbose: bool = False):
        if end == INF:
            raise ValueError('TwoStageWarmupPolyLR needs end (the last '
                             'iteration of the poly decay)')
        groups = getattr(optimizer, 'param_groups', [])
        if not any('name' in group for group in groups):
            raise ValueError(
                'TwoStageWarmupPolyLR tells the backbone from the head by '
                'the names of the parameter groups; set optim_wrapper.'
                "constructor='DinoLayerDecayOptimWrapperConstructor'")
        self.warmup_iters = warmup_iters
        self.backbone_warmup_iters = backbone_warmup_iters
        self.power = power
        self.backbone_prefix = backbone_prefix
        super().__init__(
            optimizer,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=by_epoch,
            verbose=verbose)

    def _get_value(self):
        total = self.end - self.begin
        values = []
        for group, base in zip(self.optimizer.param_groups, self.base_values):
            if group.get('name', '').startswith(self.backbone_prefix):
                delay, warmup = self.warmup_iters, self.backbone_warmup_iters
            else:
                delay, warmup = 0, self.warmup_iters
            values.append(base * two_stage_factor(self.last_step, delay,
                                                  warmup, total, self.power))
        return values
