"""SwinIR: basicsr's class (registered there as ``SwinIR``), its two reference presets and its sites.

The network is not forked, so BasicSR/official SwinIR checkpoints load unchanged (given
the same ``img_size``: the ``attn_mask`` buffers it sizes are in the state_dict).

Things the presets make explicit because basicsr's constructor defaults differ from the
published configurations:

* ``mlp_ratio`` defaults to 4 in the constructor; both published SR models use 2
  (classical ×4 would otherwise have 16,578,759 instead of 11,900,199 parameters);
* ``window_size`` defaults to 7; the SR models use 8, and LR inputs must be multiples of it;
* ``drop_path_rate`` (stochastic depth, linearly 0 -> rate over all Swin layers) defaults
  to 0.1 and the published models keep it. It is active in training, so a "no dropout"
  baseline still drops paths unless ``drop_path_rate: 0`` is set.
"""
import math

from basicsr.archs.swinir_arch import SwinIR
from torch import nn

from ..utils.misc import unwrap

from .sites import build_sites, convs_in
from .spec import register_arch_spec

_COMMON = dict(
    in_chans=3, window_size=8, mlp_ratio=2., img_range=1., resi_connection='1conv', drop_path_rate=0.1, img_size=64)

# Constructor arguments without ``upscale`` (pass 2, 3 or 4). ``img_size`` only sizes the
# precomputed attention masks (buffers): parameter counts do not depend on it, and any
# multiple of ``window_size`` runs. Set it to the training LR patch size to skip the
# per-forward mask recomputation, and keep it equal between training and testing.
SWINIR_PRESETS = {
    # BasicSR train_SwinIR_SRx4_scratch / official classical_sr: 11,900,199 params at ×4
    'swinir_classical':
    dict(_COMMON, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, upsampler='pixelshuffle'),
    # official lightweight_sr: 929,628 params at ×4 (the paper's 897K omits the position-bias tables)
    'swinir_light':
    dict(_COMMON, embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, upsampler='pixelshuffledirect'),
}


def swinir_window_size(net):
    """The multiple that the input H and W of ``net`` must have.

    basicsr's SwinIR keeps ``window_size`` only in its blocks (the network has no such
    attribute), and a block whose ``img_size`` is not larger than the window shrinks its
    window to ``img_size``, which is then the size the input is partitioned by.
    """
    net = unwrap(net)
    return math.lcm(*{blk.window_size for layer in net.layers for blk in layer.residual_group.blocks})


def _last_conv(net):
    # the conv whose input is the last feature map before the image is formed
    if net.upsampler == 'pixelshuffledirect':
        return net.upsample[0]  # the only conv of the head, at LR with embed_dim channels
    return net.conv_last  # 'pixelshuffle', 'nearest+conv' and the restoration head ''


@register_arch_spec(SwinIR, scale_arg='upscale', input_multiple=swinir_window_size,
                    derived_buffers=('attn_mask', 'relative_position_index'))
def swinir_sites(net):
    layers = list(net.layers)
    # RSTB.conv is one Conv2d ('1conv') or a Sequential of three ('3conv'); it runs on NCHW
    convs = [[m for m in layer.conv.modules() if isinstance(m, nn.Conv2d)] for layer in layers]
    return build_sites('SwinIR', layers, convs, _last_conv(net), layout='tokens', head=[net.conv_first],
                       tail=_tail_convs(net))


def _tail_convs(net):
    # the convs that run after the RSTBs and before the last conv, in forward order
    if net.upsampler == 'pixelshuffle':
        return convs_in(net.conv_after_body, net.conv_before_upsample, net.upsample)
    if net.upsampler == 'nearest+conv':
        return convs_in(net.conv_after_body, net.conv_before_upsample, net.conv_up1, getattr(net, 'conv_up2', None),
                        net.conv_hr)
    return convs_in(net.conv_after_body)  # 'pixelshuffledirect' (its one upsampling conv is the last) and ''
