"""The learning-rate schedule of Meta's DINOv3 linear segmentation recipe.

``config-ade20k-linear-training.yaml`` uses ``WarmupOneCycleLR``
(``dinov3/eval/segmentation/schedulers.py``) with warmup_iters 1500,
warmup_ratio 1e-6, pct_start 0, anneal_strategy 'cos', final_div_factor inf
and no momentum cycling. With those settings its lr at step t is

* t < warmup: ``lr * (ratio + (1 - ratio) * t / warmup) * (1 - t / total)``,
  a linear warm-up on top of a linear decay over the whole run;
* after: ``lr * (1 + cos(pi * (t + 1) / total)) / 2``, a cosine over the
  whole run (not from the end of the warm-up), read one step ahead; it
  reaches 0 at ``total`` (final_div_factor inf).

Its train.py does not step the scheduler after the first iteration
(``if global_step > 0``, "inheritance from old mmcv code"), so iteration i
runs at the curve's value at max(i - 1, 0). At the end of the warm-up the
lr jumps from about 0.962 to 0.997 of the peak. mmengine's chainable
schedulers start each phase from the previous phase's value at phase 0 of
their curve, so no combination of LinearLR, PolyLR and CosineAnnealingLR
gives this shape; hence this closed form.
"""
import math

# _ParamScheduler: mmengine's documented base for new schedulers (see
# two_stage_warmup.py).
from mmengine.optim import _ParamScheduler
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF
from mmseg.registry import PARAM_SCHEDULERS


def warmup_cosine_factor(iteration: int, warmup_iters: int,
                         warmup_ratio: float, total: int) -> float:
    """Factor of the peak lr at ``iteration`` (from 0) of Meta's DINOv3
    linear recipe (see the module docstring)."""
    step = max(iteration - 1, 0)
    if step < warmup_iters:
        warmup = warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
        return warmup * (1 - step / total)
    return (1 + math.cos(math.pi * min(step + 1, total) / total)) / 2


@PARAM_SCHEDULERS.register_module()
class DinoV3WarmupCosineLR(LRSchedulerMixin, _ParamScheduler):
    """Meta's DINOv3 ``WarmupOneCycleLR`` as its linear recipe configures
    it: :func:`warmup_cosine_factor` times each group's initial lr, over
    ``begin``..``end`` (the run's length, Meta's ``total_iter``).

    Args:
        optimizer: Wrapped optimizer.
        warmup_iters (int): Warm-up length (Meta: 1500).
        warmup_ratio (float): Factor at step 0 (Meta: 1e-6); > 0.
        begin, end (int): Iterations the schedule spans.
    """

    def __init__(self,
                 optimizer,
                 warmup_iters: int = 1500,
                 warmup_ratio: float = 1e-6,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = False,
                 verbose: bool = False):
        if end == INF:
            raise ValueError('DinoV3WarmupCosineLR needs end (the length of '
                             'the run, over which the cosine runs)')
        if not 0 < warmup_ratio <= 1:
            # Meta's warmup_ratio=0 branch is another curve, unused by its
            # recipes.
            raise ValueError(f'warmup_ratio must be in (0, 1], got '
                             f'{warmup_ratio}')
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        super().__init__(
            optimizer,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=by_epoch,
            verbose=verbose)

    def _get_value(self):
        factor = warmup_cosine_factor(self.last_step, self.warmup_iters,
                                      self.warmup_ratio, self.end - self.begin)
        return [base * factor for base in self.base_values]
