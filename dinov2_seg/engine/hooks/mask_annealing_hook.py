"""The masked-attention annealing of EoMT, driven by the runner."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


def annealed_head(runner):
    """The decode head of the runner's model that anneals masked attention
    (one with ``set_iteration``), or an error naming the model."""
    model = runner.model
    if is_model_wrapper(model):
        model = model.module
    head = getattr(model, 'decode_head', None)
    if not hasattr(head, 'set_iteration'):
        raise TypeError(
            'EoMTMaskAnnealingHook needs a model whose decode_head anneals '
            f'masked attention (EoMTHead); got {type(model).__name__} with '
            f'{type(head).__name__}: remove the hook from custom_hooks')
    return head


@HOOKS.register_module()
class EoMTMaskAnnealingHook(Hook):
    """Sets the masking probability of every EoMT block with queries from
    the runner's iteration, before each training iteration.

    The schedule is the head's ``mask_annealing``; given as fractions of the
    run it is resolved against ``train_cfg.max_iters``, so a shortened run
    (``--cfg-options train_cfg.max_iters=...``) anneals in proportion. The
    runner's iteration is restored by ``--resume``, so a resumed run
    continues the schedule.

    Raises at the start of training when the masking would still be on at
    the last iteration: inference runs a plain ViT, so training must end
    without masks.
    """

    # Before the model's step, after the runtime-info hook (VERY_HIGH).
    priority = 'NORMAL'

    def before_train(self, runner) -> None:
        head = annealed_head(runner)
        if head.mask_annealing is None:
            return
        max_iters = runner.max_iters
        _, ends = head.annealing_iterations(max_iters)
        # The last iteration run is max_iters - 1 (the runner counts from 0).
        if max(ends) > max_iters - 1:
            raise ValueError(
                f'mask annealing ends at iteration {max(ends)} but training '
                f'stops after train_cfg.max_iters={max_iters} iterations: '
                'the last iterations would still mask attention, which '
                'inference does not. Lower decode_head.mask_annealing '
                'end_iters, or give the schedule as start_fractions / '
                'end_fractions of max_iters')

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        annealed_head(runner).set_iteration(runner.iter, runner.max_iters)
