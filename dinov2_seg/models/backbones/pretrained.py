"""Strict loading of a backbone's ``init_cfg`` file, shared by the
backbones that load Meta's released files (DINOv2, DINOv3 ViT and ConvNeXt).
"""
import warnings
from typing import Callable, Optional, Tuple

from dinov2_seg.checkpoints import load_backbone_checkpoint


class StrictPretrainedMixin:
    """``init_weights`` that loads ``init_cfg=dict(type='Pretrained',
    checkpoint=...)`` strictly, or warns that the backbone stays random.

    mmengine's ``Pretrained`` initialiser loads non-strictly and only logs
    mismatches, which would silently leave a wrong-size or truncated
    backbone partly random; here a mismatch is an error. Put it before
    ``BaseModule`` among the bases.
    """
    # Prefixes of the keys loaded from a backbone file (None: all of them).
    backbone_file_keys: Optional[Tuple[str, ...]] = None
    # Where the released file goes, and how to get it, for the
    # random-weights warning.
    pretrained_file_hint = 'checkpoints/<released backbone file>.pth'
    pretrained_file_note = ''

    def load_pretrained_file(self, path: str) -> None:
        """Load ``path`` into the backbone, every key checked."""
        prefixes = self.backbone_file_keys
        select: Optional[Callable[[str], bool]] = None
        if prefixes is not None:
            select = lambda key: key.startswith(prefixes)  # noqa: E731
        load_backbone_checkpoint(self, path, select)

    def init_weights(self) -> None:
        init_cfg = self.init_cfg
        if init_cfg and init_cfg.get('type') == 'Pretrained':
            self.load_pretrained_file(init_cfg['checkpoint'])
        elif init_cfg:
            super().init_weights()
        else:
            warnings.warn(
                f'{type(self).__name__}(arch={self.arch!r}) has no checkpoint '
                'configured, so the backbone is randomly initialised. Set '
                "model.backbone.init_cfg=dict(type='Pretrained', "
                f"checkpoint='{self.pretrained_file_hint}') to use the "
                f'released weights{self.pretrained_file_note}, or load a '
                'whole segmentor checkpoint.')
        self._is_init = True
