"""HAN: Holistic Attention Network (Niu et al., ECCV 2020), ×2, ×3, ×4, with its regularizer sites.

Written from the description of the official model (``wwlCape/HAN``, ``src/model/han.py``)
in docs/architectures.md. It is RCAN plus two attention modules and a fusion conv:

    head -> G residual groups -> trailing body conv ──> CSAM ───────────┐
                 │ (each output)         │                             ├─ cat -> fuse conv (2C->C)
                 └──── stack of G+1 features, newest first ─> LAM -> lam_fuse (C(G+1)->C) ┘
    + head output (global skip) -> Upsample (no activation) -> conv_last

RCAB, ResidualGroup and the upsampler are basicsr's bricks, which (with ``res_scale=1``)
have the same parameters and function as the official ones. Parameter names differ from
the official checkpoint (e.g. ``conv_first`` for ``head.0``), so official weights need a
key mapping to load.

Deviations from the official code, all deliberate:

* mean shift uses ``img_range``/``rgb_mean`` (as basicsr's RCAN) instead of two frozen
  1×1 MeanShift convs, so there are no non-trainable parameters (the official model has
  24); with ``img_range=255`` and [0, 1] input the tensors are identical;
* the LAM fusion conv takes ``num_feat * (num_group + 1)`` channels instead of the
  hard-coded ``num_feat * 11``, so any number of groups works;
* LAM runs in fp32 even under autocast (its energies overflow fp16, see LayerAttention).
"""
import contextlib

import torch
from basicsr.archs.arch_util import Upsample
from basicsr.archs.rcan_arch import ResidualGroup
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .sites import build_sites, convs_in
from .spec import register_arch_spec

# Constructor arguments of the two reference configurations (scale is passed separately
# as ``upscale``). ``han`` is the official template; ``han_lite`` is this project's choice
# of about 1/20 of HAN's parameters (it is not taken from a paper), see docs/architectures.md.
HAN_PRESETS = {
    'han': dict(num_feat=64, num_group=10, num_block=20, squeeze_factor=16),
    'han_lite': dict(num_feat=32, num_group=6, num_block=5, squeeze_factor=16),
}


def _autocast_off(device_type):
    # meta tensors (shape checks of the options loader) have no autocast to switch off
    available = getattr(torch.amp, 'is_autocast_available', lambda t: t in ('cpu', 'cuda'))  # torch < 2.4
    if available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class LayerAttention(nn.Module):
    """LAM: attention across the stacked layer features ``(B, N, C, H, W)`` -> ``(B, N*C, H, W)``.

    There are no projections: queries, keys and values are the flattened features
    themselves, and the weights are ``softmax(rowmax(E) - E)`` with ``E = Q Kᵀ``, so layers
    that correlate *less* with a given layer get more weight (the DANet trick). ``gamma``
    starts at 0, which makes the module an identity at initialisation.
    """

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, n, c, h, w = x.shape
        # E sums C*H*W products; with 0-255 inputs it reaches ~1e9, far beyond fp16's
        # 65504, and bf16 would leave the softmax with ~3 significant digits of ~1e9.
        with _autocast_off(x.device.type):
            feats = x.reshape(b, n, -1).to(torch.promote_types(x.dtype, torch.float32))
            energy = torch.bmm(feats, feats.transpose(1, 2))
            energy = energy.amax(dim=-1, keepdim=True) - energy
            attention = torch.softmax(energy, dim=-1)
            out = self.gamma.to(feats.dtype) * torch.bmm(attention, feats) + feats
        return out.reshape(b, n * c, h, w).to(x.dtype)


class ChannelSpatialAttention(nn.Module):
    """CSAM: a single 3×3×3 Conv3d over the (C, H, W) volume gates the feature as ``x * (1 + γσ(conv))``.

    ``gamma`` (init 0) sits outside the sigmoid, so the module is an identity at initialisation.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, 1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        gate = self.gamma * torch.sigmoid(self.conv(x.unsqueeze(1))).squeeze(1)
        return x * gate + x


@ARCH_REGISTRY.register()
class HAN(nn.Module):
    """Holistic Attention Network.

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels; must equal ``num_in_ch`` (the mean is added back). Default: 3.
        num_feat (int): Feature channels C. Default: 64.
        num_group (int): Residual groups G. Default: 10.
        num_block (int): RCABs per group. Default: 20.
        squeeze_factor (int): Channel-attention reduction r. Default: 16.
        upscale (int): 2, 3 or 4 (any power of two works too). Default: 4.
        img_range (float): Inputs in [0, 1] are scaled to [0, img_range] after mean subtraction;
            255 reproduces the official 0-255 pipeline. Default: 255.
        rgb_mean (sequence of float): Per-channel mean in [0, 1], one entry per input channel.
            Default: DIV2K's (0.4488, 0.4371, 0.4040).
    """

    def __init__(self,
                 num_in_ch=3,
                 num_out_ch=3,
                 num_feat=64,
                 num_group=10,
                 num_block=20,
                 squeeze_factor=16,
                 upscale=4,
                 img_range=255.,
                 rgb_mean=(0.4488, 0.4371, 0.4040)):
        super().__init__()
        if len(rgb_mean) != num_in_ch:
            raise ValueError(f'HAN: rgb_mean has {len(rgb_mean)} entries but num_in_ch is {num_in_ch}')
        if num_out_ch != num_in_ch:
            raise ValueError(f'HAN: num_out_ch ({num_out_ch}) must equal num_in_ch ({num_in_ch}), '
                             'because the input mean is added back to the output')
        if num_feat // squeeze_factor < 1:
            raise ValueError(f'HAN: num_feat // squeeze_factor must be >= 1, got {num_feat} // {squeeze_factor}')
        self.upscale = upscale
        self.img_range = img_range
        # not persistent: a constant, and keeping it out of the state_dict keeps checkpoints
        # independent of rgb_mean
        self.register_buffer('mean', torch.tensor(rgb_mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        # Only the groups live in ``body``: the forward reads every element of it into the
        # LAM stack, so anything added here would change N and break ``lam_fuse``.
        self.body = nn.Sequential(*[
            ResidualGroup(num_feat, num_block, squeeze_factor=squeeze_factor, res_scale=1) for _ in range(num_group)
        ])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.lam = LayerAttention()
        self.lam_fuse = nn.Conv2d(num_feat * (num_group + 1), num_feat, 3, 1, 1)
        self.csam = ChannelSpatialAttention()
        self.fuse = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x):
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)

        feat = x
        layers = []
        for group in self.body:
            feat = group(feat)
            layers.append(feat)
        feat = self.conv_after_body(feat)
        layers.append(feat)
        stacked = torch.stack(layers[::-1], dim=1)  # newest first, as the official stacking

        res = self.fuse(torch.cat([self.csam(feat), self.lam_fuse(self.lam(stacked))], dim=1))
        res = res + x

        out = self.conv_last(self.upsample(res))
        return out / self.img_range + mean


@register_arch_spec(HAN, scale_arg='upscale')
def han_sites(net):
    groups = list(net.body)
    convs = [[conv for rcab in g.residual_group for conv in (rcab.rcab[0], rcab.rcab[2])] for g in groups]
    # tail, in forward order: the trunk conv, the LAM fusion conv (CSAM's gate is a 1-channel Conv3d, not a
    # site; it runs first), the fusion conv and the upsampler's convs
    tail = convs_in(net.conv_after_body, net.lam_fuse, net.fuse, net.upsample)
    return build_sites('HAN', groups, convs, net.conv_last, head=[net.conv_first], tail=tail)
