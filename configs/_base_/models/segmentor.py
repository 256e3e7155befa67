# What every DINOv2 segmentor here shares: ImageNet normalisation of the
# inputs, training crops padded to 512 (labels with 255) and slide
# inference with 512 windows at stride 341, batched (BatchedEncoderDecoder;
# fast_inference=False runs mmseg's stock slide inference,
# window_batch_size caps the windows per backbone call for GPU memory;
# None: 8 on a GPU, 1 on a CPU, where batching windows does not pay).
# The recipes add the backbone blocks and the head.
model = dict(
    type='BatchedEncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512)),
    train_cfg=dict(),
    test_cfg=dict(
        mode='slide',
        crop_size=(512, 512),
        stride=(341, 341),
        fast_inference=True,
        window_batch_size=None))
