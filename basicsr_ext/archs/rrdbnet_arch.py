"""RRDB: basicsr's RRDBNet, extended to ×3, with its regularizer sites."""
import torch.nn.functional as F
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.utils.registry import ARCH_REGISTRY

from .sites import build_sites, convs_in
from .spec import register_arch_spec


@ARCH_REGISTRY.register()
class RRDBNetAnyScale(RRDBNet):
    """RRDBNet for scales 1, 2, 3 and 4 with the same parameter names as basicsr's RRDBNet.

    basicsr's RRDBNet upsamples by two fixed nearest ×2 stages, so ``scale=3`` silently
    produces ×4 output. Here ×3 upsamples once by 3 before ``conv_up1`` and keeps
    ``conv_up2`` at that resolution; ×1, ×2 and ×4 are exactly basicsr's forward, so
    those checkpoints load in either class.
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
        if scale not in (1, 2, 3, 4):
            raise ValueError(f'RRDBNetAnyScale supports scale 1, 2, 3 or 4, got {scale}')
        super().__init__(num_in_ch, num_out_ch, scale=scale, num_feat=num_feat, num_block=num_block,
                         num_grow_ch=num_grow_ch)

    def forward(self, x):
        if self.scale != 3:
            return super().forward(x)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=3, mode='nearest')))
        feat = self.lrelu(self.conv_up2(feat))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def rrdbnet_input_multiple(net):
    # ×2 / ×1 start with a pixel unshuffle by 2 / 4
    return {1: 4, 2: 2}.get(getattr(net, 'scale', 4), 1)


def rrdbnet_in_channels(net):
    # conv_first sees the unshuffled input at ×2 / ×1: 4 / 16 times the image's channels
    return net.conv_first.in_channels // rrdbnet_input_multiple(net)**2


@register_arch_spec(RRDBNet, scale_arg='scale', input_multiple=rrdbnet_input_multiple, in_channels=rrdbnet_in_channels)
def rrdbnet_sites(net):
    blocks = list(net.body)
    convs = [[getattr(rdb, f'conv{k}') for rdb in (b.rdb1, b.rdb2, b.rdb3) for k in range(1, 6)] for b in blocks]
    # tail: the trunk conv closing the body, the two upsampling convs and the HR conv
    tail = convs_in(net.conv_body, net.conv_up1, net.conv_up2, net.conv_hr)
    return build_sites(type(net).__name__, blocks, convs, net.conv_last, head=[net.conv_first], tail=tail)
