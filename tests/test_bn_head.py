import pytest
import torch
import torch.nn.functional as F

from dinov2_seg.models.decode_heads import DinoBNHead


def make_head(in_channels, in_index, num_classes=5):
    head = DinoBNHead(
        in_channels=in_channels,
        in_index=in_index,
        num_classes=num_classes,
        dropout_ratio=0,
        norm_cfg=dict(type='BN'))
    with torch.no_grad():
        head.bn.running_mean.uniform_(-1, 1)
        head.bn.running_var.uniform_(0.5, 2)
        head.bn.weight.uniform_(0.5, 1.5)
        head.bn.bias.uniform_(-1, 1)
    return head.eval()


def reference(head, feats):
    """Official semantics: resize levels to the first, concatenate, batch
    norm with running statistics, 1x1 convolution."""
    size = feats[0].shape[2:]
    x = torch.cat([
        F.interpolate(f, size=size, mode='bilinear', align_corners=False)
        for f in feats
    ], 1)
    bn = head.bn
    x = (x - bn.running_mean[:, None, None]
         ) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    x = x * bn.weight[:, None, None] + bn.bias[:, None, None]
    weight = head.conv_seg.weight[:, :, 0, 0]
    return torch.einsum('kc,bchw->bkhw', weight,
                        x) + head.conv_seg.bias[None, :, None, None]


def test_ms_head_matches_reference():
    head = make_head([8] * 4, [0, 1, 2, 3])
    assert head.channels == 32
    feats = [torch.randn(2, 8, 3, 4) for _ in range(3)]
    feats.append(torch.randn(2, 8, 2, 2))  # resized to the first level
    out = head(feats)
    assert out.shape == (2, 5, 3, 4)
    torch.testing.assert_close(out, reference(head, feats))


def test_linear_head_uses_only_the_last_level():
    head = make_head([8], [3])
    feats = [torch.randn(1, 8, 3, 4) for _ in range(4)]
    out = head(feats)
    torch.testing.assert_close(out, reference(head, feats[3:]))
    feats[0] = torch.zeros_like(feats[0])
    torch.testing.assert_close(head(feats), out)


def test_meta_key_names():
    keys = set(make_head([8], [3]).state_dict())
    assert {
        'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var',
        'bn.num_batches_tracked', 'conv_seg.weight', 'conv_seg.bias'
    } == keys


def test_channels_must_match_the_concatenation():
    with pytest.raises(
            ValueError,
            match=r'channels=384 must equal '
            r'sum\(in_channels\)=1536'):
        DinoBNHead(
            in_channels=[384] * 4,
            in_index=[0, 1, 2, 3],
            channels=384,
            num_classes=3)
    with pytest.raises(ValueError, match="input_transform='resize_concat'"):
        DinoBNHead(
            in_channels=[8], in_index=[0], input_transform=None, num_classes=3)
