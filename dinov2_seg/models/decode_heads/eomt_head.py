"""The prediction part of EoMT (Kerssies et al., "Your ViT is Secretly an
Image Segmentation Model", CVPR 2025): learned queries that join the ViT's
tokens for its last blocks, a class and a mask prediction after each of
those blocks, and the masked attention that is annealed away in training.

The ViT itself stays :class:`DinoVisionTransformer` or
:class:`DinoV3VisionTransformer` (Meta's checkpoint layouts);
:class:`EoMTSegmentor` runs its blocks and calls this head in between.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import Mask2FormerHead as MMDetMask2FormerHead
from mmdet.models.dense_heads import MaskFormerHead
from mmengine.model import BaseModule
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.registry import MODELS, TASK_UTILS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor, nn

from ..layers import LayerNorm2d

# Per block: (mask logits (B, Q, h, w), class logits (B, Q, classes + 1)).
Prediction = Tuple[Tensor, Tensor]


def mask_annealing_probability(iteration: int, start: int, end: int,
                               power: float) -> float:
    """Probability that a query's attention is masked at ``iteration``: 1
    before ``start``, 0 from ``end`` on, polynomial decay in between (the
    EoMT paper's schedule)."""
    if iteration < start:
        return 1.0
    if iteration >= end:
        return 0.0
    return (1.0 - (iteration - start) / (end - start))**power


def input_size(meta: dict, test_cfg: ConfigType) -> Tuple[int, int]:
    """Size of the network input: a slide window sets ``img_shape`` to its
    crop, while a padded whole image keeps the padded size in
    ``pad_shape`` (the segmentor crops the padding off later)."""
    if test_cfg.get('mode') != 'slide' and 'pad_shape' in meta:
        return tuple(meta['pad_shape'][:2])
    return tuple(meta['img_shape'][:2])


def num_upscale_for_patch(patch_size: int) -> int:
    """EoMT's number of 2x upsampling blocks for a patch size (its
    ``max(1, int(log2(patch)) - 2)``): 2 for patch 16, masks at stride 4."""
    return max(1, int(math.log2(patch_size)) - 2)


class ScaleBlock(nn.Module):
    """2x upsampling of a (B, D, h, w) map: transposed 2x2 convolution,
    GELU, depthwise 3x3 convolution, LayerNorm over the channels (EoMT's
    module and parameter names, so its checkpoints map one to one)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(
            dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.norm = LayerNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv2(self.act(self.conv1(x))))


@MODELS.register_module()
class EoMTHead(BaseModule):
    """Queries, class and mask predictions and the annealed attention masks
    of EoMT; Mask2Former's matching and losses (mmdet's).

    Args:
        num_classes (int): Number of classes (without "no object").
        embed_dims (int): Width of the ViT tokens.
        num_queries (int): Learned queries. Defaults to 100 (EoMT ADE20K).
        num_blocks (int): The queries join the tokens for the last
            ``num_blocks`` ViT blocks (EoMT: 3 for ViT-S/B, 4 for ViT-L, 5
            for ViT-g).
        num_upscale (int, optional): 2x transposed-convolution blocks that
            upsample the patch tokens for the masks (2: 4x, mask stride 4
            at patch 16, 3.5 at patch 14). None: EoMT's rule for the
            backbone's patch size (:func:`num_upscale_for_patch`), built by
            :class:`EoMTSegmentor` through :meth:`build_upscale`, since
            only the segmentor knows the backbone.
        masked_attention (bool): In training, a prediction is made before
            each block with queries, and there each query attends only to
            the patches inside its predicted mask (with the block's masking
            probability, see ``mask_annealing``); every prediction is
            supervised. False: a plain ViT, only the final prediction
            supervised.
        mask_annealing (dict): ``power`` of
            :func:`mask_annealing_probability` and, one per block, either
            ``start_fractions`` and ``end_fractions`` of the run's
            ``train_cfg.max_iters`` or ``start_iters`` and ``end_iters``.
            Required with ``masked_attention``: inference runs without
            masks, so training must end without them
            (:class:`EoMTMaskAnnealingHook` sets the iteration and checks
            that).
        no_object_weight (float): Class-loss weight of the "no object"
            class; ``loss_cls.class_weight`` defaults to ``[1.0] *
            num_classes + [no_object_weight]``.
        resize_masks_first (bool): At test time, upsample each query's mask
            logits to the input before the sigmoid, as EoMT's evaluation
            does (Q maps at full resolution). False combines classes and
            masks at the mask resolution and resizes the class map, which
            the batched slide inference folds into the window merge.
        align_corners (bool): For the resizes of the segmentor.
        ignore_index (int): Label ignored by the losses.
        loss_cls, loss_mask, loss_dice (dict): mmdet losses (required).
        train_cfg (dict): ``assigner`` (required), ``num_points``,
            ``oversample_ratio``, ``importance_sample_ratio`` and
            ``sampler`` of mmdet's Mask2Former.
    """

    # Mask2Former's Hungarian matching on sampled points and its class,
    # point-sampled mask BCE and dice losses over all blocks (deep
    # supervision), taken from mmdet rather than rewritten. mmdet's head
    # cannot be inherited without building its pixel decoder and
    # transformer decoder; these methods only read the attributes set in
    # __init__ (num_classes, num_queries, assigner, sampler, num_points,
    # oversample_ratio, importance_sample_ratio, class_weight, loss_*).
    # The underscored three are private to mmdet 3.3 / mmseg 1.2, which
    # offer no public per-image matching or loss; setup.py pins both.
    loss_by_feat = MaskFormerHead.loss_by_feat
    get_targets = MaskFormerHead.get_targets
    _get_targets_single = MMDetMask2FormerHead._get_targets_single
    _loss_by_feat_single = MMDetMask2FormerHead._loss_by_feat_single
    # mmseg's conversion of a label map into one mask per class present.
    _seg_data_to_instance_data = Mask2FormerHead._seg_data_to_instance_data

    def __init__(self,
                 num_classes: int,
                 embed_dims: int,
                 num_queries: int = 100,
                 num_blocks: int = 4,
                 num_upscale: Optional[int] = 2,
                 masked_attention: bool = True,
                 mask_annealing: Optional[dict] = None,
                 no_object_weight: float = 0.1,
                 resize_masks_first: bool = False,
                 align_corners: bool = False,
                 ignore_index: int = 255,
                 loss_cls: Optional[ConfigType] = None,
                 loss_mask: Optional[ConfigType] = None,
                 loss_dice: Optional[ConfigType] = None,
                 train_cfg: Optional[ConfigType] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.out_channels = num_classes
        self.align_corners = align_corners
        self.ignore_index = ignore_index
        self.embed_dims = embed_dims
        self.num_queries = num_queries
        self.num_blocks = num_blocks
        self.masked_attention = masked_attention
        self.resize_masks_first = resize_masks_first

        self.query_embed = nn.Embedding(num_queries, embed_dims)
        self.cls_embed = nn.Linear(embed_dims, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(embed_dims, embed_dims), nn.GELU(),
            nn.Linear(embed_dims, embed_dims), nn.GELU(),
            nn.Linear(embed_dims, embed_dims))
        self.num_upscale = num_upscale
        self.upscale: Optional[nn.Sequential] = None
        if num_upscale is not None:
            self.build_upscale(num_upscale)

        self.mask_annealing = self._check_annealing(mask_annealing)
        # Probability that a query's attention is masked in each of the
        # blocks; set from the training iteration (set_iteration). Saved
        # with the model, as in EoMT's checkpoints.
        self.register_buffer('attn_mask_probs', torch.ones(num_blocks))
        # The iteration the probabilities were last set for; None until
        # set_iteration, and a masked training step refuses to run then.
        self.iteration: Optional[int] = None

        if (None in (loss_cls, loss_mask, loss_dice)
                or 'assigner' not in (train_cfg or {})):
            raise ValueError(
                'EoMTHead needs loss_cls, loss_mask, loss_dice and '
                'train_cfg.assigner: Mask2Former\'s are in '
                'configs/_base_/models/mask2former_losses.py')
        loss_cls = dict(loss_cls)
        expected = [1.0] * num_classes + [no_object_weight]
        loss_cls.setdefault('class_weight', expected)
        if len(loss_cls['class_weight']) != num_classes + 1:
            raise ValueError(
                f'loss_cls.class_weight has {len(loss_cls["class_weight"])} '
                f'entries; expected num_classes + 1 = {num_classes + 1} '
                '(the last one for "no object"); leave it out to get '
                f'[1.0] * num_classes + [{no_object_weight}]')
        self.class_weight = loss_cls['class_weight']
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)
        train_cfg = dict(train_cfg)
        self.num_points = train_cfg.get('num_points', 12544)
        self.oversample_ratio = train_cfg.get('oversample_ratio', 3.0)
        self.importance_sample_ratio = train_cfg.get('importance_sample_ratio',
                                                     0.75)
        self.assigner = TASK_UTILS.build(train_cfg['assigner'])
        self.sampler = TASK_UTILS.build(
            train_cfg.get('sampler', dict(type='mmdet.MaskPseudoSampler')))

    def build_upscale(self, num_upscale: int) -> None:
        """Create the ``num_upscale`` 2x upsampling blocks of the mask
        path."""
        if num_upscale < 0:
            raise ValueError(f'num_upscale must be >= 0, got {num_upscale}')
        self.num_upscale = num_upscale
        self.upscale = nn.Sequential(
            *[ScaleBlock(self.embed_dims) for _ in range(num_upscale)])

    def _check_annealing(self, annealing: Optional[dict]) -> Optional[dict]:
        if annealing is None:
            if self.masked_attention:
                raise ValueError(
                    'EoMTHead(masked_attention=True) needs mask_annealing='
                    'dict(start_fractions=[...], end_fractions=[...]) (or '
                    'start_iters / end_iters): inference runs without '
                    'attention masks, so training must anneal them away')
            return None
        annealing = dict(annealing)
        fractions = 'start_fractions' in annealing or 'end_fractions' in \
            annealing
        keys = (('start_fractions', 'end_fractions') if fractions else
                ('start_iters', 'end_iters'))
        other = ({'start_iters', 'end_iters'} if fractions else
                 {'start_fractions', 'end_fractions'}) & set(annealing)
        if other:
            raise ValueError(f'mask_annealing: give either {keys[0]} / '
                             f'{keys[1]} or {sorted(other)}, not both')
        for key in keys:
            if len(annealing.get(key, ())) != self.num_blocks:
                raise ValueError(
                    f'mask_annealing.{key} must give one value per '
                    f'block with queries (num_blocks={self.num_blocks}), '
                    f'got {annealing.get(key)}')
        for start, end in zip(*(annealing[key] for key in keys)):
            if end <= start:
                raise ValueError(f'mask_annealing: every {keys[1]} entry '
                                 f'must be after its {keys[0]} entry, got '
                                 f'{start} -> {end}')
            if fractions and not 0 <= start < end <= 1:
                raise ValueError('mask_annealing: fractions of max_iters '
                                 f'must lie in [0, 1], got {start} -> {end}')
        annealing.setdefault('power', 0.9)
        return annealing

    def annealing_iterations(
            self, max_iters: Optional[int]) -> Tuple[List[int], List[int]]:
        """Start and end iteration of every block's annealing in a run of
        ``max_iters`` iterations."""
        annealing = self.mask_annealing
        if 'start_iters' in annealing:
            return (list(annealing['start_iters']),
                    list(annealing['end_iters']))
        if max_iters is None:
            raise ValueError('mask_annealing is given as fractions of the '
                             'run: set_iteration needs max_iters')
        # Halves round up, as in EoMT's configs (its ViT-g COCO schedule
        # starts block 1 at 7/24 of 88692 = 25868.5 -> 25869).
        return ([
            int(f * max_iters + 0.5) for f in annealing['start_fractions']
        ], [int(f * max_iters + 0.5) for f in annealing['end_fractions']])

    def set_iteration(self,
                      iteration: int,
                      max_iters: Optional[int] = None) -> None:
        """Set the masking probability of every block for a training
        iteration of a run of ``max_iters`` (called by
        :class:`EoMTMaskAnnealingHook` before each step)."""
        self.iteration = iteration
        if self.mask_annealing is None:
            return
        probs = [
            mask_annealing_probability(iteration, start, end,
                                       self.mask_annealing['power'])
            for start, end in zip(*self.annealing_iterations(max_iters))
        ]
        self.attn_mask_probs.copy_(torch.tensor(probs))

    def add_queries(self, tokens: Tensor) -> Tensor:
        """Put the learned queries in front of the ViT tokens."""
        queries = self.query_embed.weight.to(tokens.dtype)
        return torch.cat([queries.expand(tokens.shape[0], -1, -1), tokens], 1)

    def predict_masks(self, tokens: Tensor, grid: Tuple[int, int],
                      num_prefix_tokens: int) -> Prediction:
        """Mask and class logits from normalised tokens laid out as
        [queries, class and register / storage tokens, patches]."""
        if self.upscale is None:
            raise RuntimeError(
                'EoMTHead(num_upscale=None) takes its upsampling depth from '
                'the backbone patch size: build it in an EoMTSegmentor or '
                'call build_upscale first')
        queries = tokens[:, :self.num_queries]
        patches = tokens[:, self.num_queries + num_prefix_tokens:]
        patches = patches.transpose(1, 2).reshape(tokens.shape[0], -1,
                                                  *grid).contiguous()
        mask_logits = torch.einsum('bqc,bchw->bqhw', self.mask_embed(queries),
                                   self.upscale(patches))
        return mask_logits, self.cls_embed(queries)

    def attention_mask(self, mask_logits: Tensor, grid: Tuple[int, int],
                       block: int, num_prefix_tokens: int) -> Optional[Tensor]:
        """Boolean (B, N, N) mask for the ``block``-th block with queries
        (True: may attend), or None when no query is masked.

        A masked query sees the other queries, the class and register tokens
        and the patches where its mask logit (resized to the patch grid) is
        positive; each query is masked with the block's probability in
        ``attn_mask_probs``, independently per image.
        """
        prob = float(self.attn_mask_probs[block])
        if prob <= 0:
            return None
        batch, queries = mask_logits.shape[:2]
        patches = grid[0] * grid[1]
        tokens = queries + num_prefix_tokens + patches
        inside = F.interpolate(
            mask_logits.detach(), grid, mode='bilinear',
            align_corners=False).flatten(2) > 0
        masked = torch.rand(batch, queries, device=inside.device) < prob
        mask = torch.ones(
            batch, tokens, tokens, dtype=torch.bool, device=inside.device)
        mask[:, :queries, queries + num_prefix_tokens:] = \
            inside | ~masked[..., None]
        return mask

    def loss(self, x: List[Prediction], batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        """Mask2Former's losses of every block's prediction (``d0.`` ...
        for the blocks before the last), plus the masking probabilities for
        the log."""
        batch_gt_instances, batch_img_metas = \
            self._seg_data_to_instance_data(batch_data_samples)
        all_mask_preds = [mask_logits for mask_logits, _ in x]
        all_cls_scores = [cls_logits for _, cls_logits in x]
        losses = self.loss_by_feat(all_cls_scores, all_mask_preds,
                                   batch_gt_instances, batch_img_metas)
        if self.masked_attention and self.mask_annealing is not None:
            for block, prob in enumerate(self.attn_mask_probs):
                losses[f'attn_mask_prob{block}'] = prob.detach().clone()
        return losses

    def forward(self, x: Sequence[Prediction]) -> Tensor:
        """Class probabilities x mask probabilities of the final prediction
        at the mask resolution (the segmentor's ``tensor`` mode)."""
        mask_logits, cls_logits = x[-1]
        cls_probs = F.softmax(cls_logits, dim=-1)[..., :-1]
        return torch.einsum('bqc,bqhw->bchw', cls_probs, mask_logits.sigmoid())

    def predict_logits(self, x: Sequence[Prediction],
                       batch_img_metas: List[dict],
                       test_cfg: ConfigType) -> Tensor:
        """Class probabilities x mask probabilities of the final prediction,
        (B, classes, h, w): at the mask resolution, or at the input size
        with ``resize_masks_first``."""
        if not self.resize_masks_first:
            return self(x)
        mask_logits, cls_logits = x[-1]
        mask_logits = F.interpolate(
            mask_logits,
            size=input_size(batch_img_metas[0], test_cfg),
            mode='bilinear',
            align_corners=self.align_corners)
        return self([(mask_logits, cls_logits)])

    def predict(self, x: Sequence[Prediction], batch_img_metas: List[dict],
                test_cfg: ConfigType) -> Tensor:
        """The class map resized to the network input (the window when
        sliding, the padded image otherwise)."""
        seg_map = self.predict_logits(x, batch_img_metas, test_cfg)
        size = input_size(batch_img_metas[0], test_cfg)
        if tuple(seg_map.shape[-2:]) == tuple(size):
            return seg_map
        return F.interpolate(
            seg_map,
            size=size,
            mode='bilinear',
            align_corners=self.align_corners)
