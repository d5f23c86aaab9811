"""Running a network on images of any size, and checking the factor it upsamples by.

* padding to the size multiple the architecture needs, tiling with overlap;
* refusing inputs smaller than one window / unshuffle block;
* measuring the scale of a built network, and finding the scale a checkpoint was trained at.

What differs between architectures (input multiple, input channels, scale argument, derived
buffers) is read from the architecture's spec (:mod:`.spec`).
"""
import torch
import torch.nn.functional as F

from ..utils.errors import ImageTooSmallError
from ..utils.misc import unwrap
from .meta import build_meta_network
from .spec import arch_spec, configured_scale, spec_of_type
from .weights import state_fits

__all__ = [
    'ScaleMismatchError', 'CANDIDATE_SCALES', 'input_multiple', 'check_input_size', 'forward_padded', 'forward_tiled',
    'measure_scale', 'checkpoint_scale'
]

CANDIDATE_SCALES = (1, 2, 3, 4, 8)


class ScaleMismatchError(ValueError):
    """A network or checkpoint upsamples by another factor than the one asked for."""


# --------------------------------------------------------------------------- padding and tiling
def input_multiple(net):
    """Input H and W must be multiples of this (window attention: its window size; RRDBNet ×1/×2: unshuffle)."""
    net = unwrap(net)
    return arch_spec(net).input_multiple(net)


def check_input_size(net, h, w, name='input'):
    """Refuse an LR image smaller than one window / unshuffle block: padding would be most of it."""
    net = unwrap(net)
    need = arch_spec(net).min_input(net)
    if h < need or w < need:
        raise ImageTooSmallError(f'{name} is {h}x{w} (HxW) at the network input; {type(net).__name__} needs at least '
                                 f'{need}x{need} (its window / pixel-unshuffle size); use a larger image')


def _pad_mode(h_pad, w_pad, h, w):
    # 'reflect' needs the pad to be smaller than the input; fall back to replicate for tiny inputs
    return 'reflect' if h_pad < h and w_pad < w else 'replicate'


def forward_padded(net, lq, scale, multiple=None):
    """Reflect-pad ``lq`` at the bottom/right to a multiple, run ``net``, crop the output back."""
    multiple = multiple or input_multiple(net)
    h, w = lq.shape[-2:]
    h_pad, w_pad = (-h) % multiple, (-w) % multiple
    if h_pad or w_pad:
        lq = F.pad(lq, (0, w_pad, 0, h_pad), mode=_pad_mode(h_pad, w_pad, h, w))
    out = net(lq)
    return out[..., :h * scale, :w * scale]


def _round_up(x, m):
    return -(-x // m) * m


def forward_tiled(net, lq, scale, tile, tile_pad=16, multiple=None):
    """Run ``net`` over overlapping tiles of ``lq`` and stitch the centres.

    Each tile of ``tile``×``tile`` LR pixels is processed with ``tile_pad`` pixels of context
    on every side (clipped at the border); only the tile's own region of the output is kept.
    For a network whose receptive field fits in the context the result equals untiled
    inference up to float rounding. ``tile`` and ``tile_pad`` are rounded up to the input
    multiple, so every tile starts on the window grid of the whole image: window attention
    then partitions a tile's interior exactly as it partitions the whole image.
    """
    multiple = multiple or input_multiple(net)
    b, c, h, w = lq.shape
    if tile <= 0 or (tile >= h and tile >= w):
        return forward_padded(net, lq, scale, multiple)
    tile, tile_pad = _round_up(tile, multiple), _round_up(tile_pad, multiple)
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
            py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
            sr = forward_padded(net, lq[..., py0:py1, px0:px1], scale, multiple)
            if out is None:
                out = sr.new_zeros(b, sr.shape[1], h * scale, w * scale)
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                sr[..., (y0 - py0) * scale:(y1 - py0) * scale, (x0 - px0) * scale:(x1 - px0) * scale]
    return out


# --------------------------------------------------------------------------- scale checks
def measure_scale(net, device=None):
    """The factor ``net`` really upsamples by, found by running it on a tiny input.

    ``device='meta'`` runs a network built on the meta device (no memory, no compute) and
    returns None if the architecture cannot run there.
    """
    net = unwrap(net)
    spec = arch_spec(net)
    size = max(spec.input_multiple(net), 8) * 2
    if device is None:
        param = next(iter(net.parameters()), None)
        device = param.device if param is not None else torch.device('cpu')
    x = torch.zeros(1, spec.in_channels(net), size, size, device=device)
    try:
        with torch.inference_mode():
            out = net(x)
    except Exception:
        if str(device) == 'meta':  # some ops have no meta kernel; the real network is measured later
            return None
        raise
    scale = out.shape[-1] / size
    return int(scale) if float(scale).is_integer() else scale


def checkpoint_scale(net_opt, state):
    """The scale at which ``net_opt``'s architecture has exactly the keys and shapes of ``state``.

    Builds the architecture on the meta device (no memory) at each candidate scale and
    compares with the checkpoint: upsamplers differ between scales (MSRResNet: one or two
    ``upconv``; RRDBNet ×2: a 12-channel ``conv_first``), so at most one usually fits.
    Returns None if none or several fit.
    """
    key, _ = configured_scale(net_opt)
    if key is None:
        return None
    spec = spec_of_type(net_opt['type'])
    fits = set()
    for s in CANDIDATE_SCALES:
        try:
            meta = build_meta_network({**net_opt, key: s})
        except Exception:  # an arch that does not support this scale
            continue
        if state_fits(meta.state_dict(), state, spec):
            # what the network really does: basicsr's RRDBNet accepts scale=8 but upsamples ×4
            fits.add(measure_scale(meta, 'meta') or s)
    return fits.pop() if len(fits) == 1 else None
