"""Whole-image and tiled inference with padding to the size multiple an architecture needs."""
import math

import torch
import torch.nn.functional as F


def input_multiple(net):
    """Input H and W must be multiples of this (SwinIR: window size; RRDBNet ×2/×1: pixel-unshuffle factor)."""
    net = getattr(net, 'module', net)
    multiple = int(getattr(net, 'window_size', 1) or 1)
    if type(net).__name__.startswith('RRDBNet') and getattr(net, 'scale', 4) in (1, 2):
        multiple = math.lcm(multiple, 4 if net.scale == 1 else 2)
    return multiple


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


def forward_tiled(net, lq, scale, tile, tile_pad=16, multiple=None):
    """Run ``net`` over overlapping tiles of ``lq`` and stitch the centres.

    Each tile of ``tile``×``tile`` LR pixels is processed with ``tile_pad`` pixels of context
    on every side (clipped at the border); only the tile's own region of the output is kept,
    so for a network whose receptive field fits in the context the result equals untiled
    inference up to float rounding.
    """
    if tile <= 0:
        return forward_padded(net, lq, scale, multiple)
    b, c, h, w = lq.shape
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
