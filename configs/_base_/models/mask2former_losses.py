# Mask2Former's training objective, shared by the Mask2Former head and
# EoMT (whose recipe uses the same losses, weights and matching): mmdet's
# Hungarian matching on the class and mask costs, class cross-entropy
# (class_weight [1.0] * num_classes + [0.1] is derived by the heads: the
# many queries matched to no segment learn "no object" at a tenth of the
# weight) and mask BCE and dice losses on 112 x 112 points sampled mostly
# where the prediction is uncertain. Values of mmseg's
# mask2former_r50_8xb2-160k_ade20k-512x512 recipe, which are also EoMT's
# (class_coefficient 2, mask_coefficient 5, dice_coefficient 5, num_points
# 12544, oversample_ratio 3.0, importance_sample_ratio 0.75, matching
# costs equal to the loss weights).
mask2former_losses = dict(
    loss_cls=dict(
        type='mmdet.CrossEntropyLoss',
        use_sigmoid=False,
        loss_weight=2.0,
        reduction='mean'),
    loss_mask=dict(
        type='mmdet.CrossEntropyLoss',
        use_sigmoid=True,
        reduction='mean',
        loss_weight=5.0),
    loss_dice=dict(
        type='mmdet.DiceLoss',
        use_sigmoid=True,
        activate=True,
        reduction='mean',
        naive_dice=True,
        eps=1.0,
        loss_weight=5.0),
    train_cfg=dict(
        num_points=12544,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        assigner=dict(
            type='mmdet.HungarianAssigner',
            match_costs=[
                dict(type='mmdet.ClassificationCost', weight=2.0),
                dict(
                    type='mmdet.CrossEntropyLossCost',
                    weight=5.0,
                    use_sigmoid=True),
                dict(
                    type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)
            ]),
        sampler=dict(type='mmdet.MaskPseudoSampler')))
