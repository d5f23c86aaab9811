"""SRResNet: basicsr's MSRResNet (×2, ×3, ×4), with its regularizer sites.

The network itself is basicsr's class, registered there as ``MSRResNet``; checkpoints
are therefore interchangeable with BasicSR and Real-ESRGAN tools.
"""
from basicsr.archs.srresnet_arch import MSRResNet

from .sites import build_sites, convs_in
from .spec import register_arch_spec


@register_arch_spec(MSRResNet, scale_arg='upscale')
def msrresnet_sites(net):
    blocks = list(net.body)
    # tail: the upsampler convs (upconv2 only at ×4) and the HR conv
    tail = convs_in(getattr(net, 'upconv1', None), getattr(net, 'upconv2', None), net.conv_hr)
    return build_sites('MSRResNet', blocks, [[b.conv1, b.conv2] for b in blocks], net.conv_last,
                       head=[net.conv_first], tail=tail)
