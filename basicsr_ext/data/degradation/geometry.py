"""Where each stage of the degradation is computed: per-axis stage sizes and windows of one sample.

With ``crop_before_degrade`` only a window around the GT patch is degraded; these windows, in each
stage's full-canvas coordinates, make every resize sample where the full-canvas pipeline samples and
put the JPEG blocks on the full canvas's 16-pixel grid.
"""
import math

from .operators import JPEG_BLOCK

__all__ = ['plan']


def plan(prm, canvas_hw, scale, gt_size, context=None):
    """Per-axis stage sizes and windows for one sample (adds them to ``prm`` as ``prm['axes']``).

    Windows are [lo, hi) in each stage's full-canvas coordinates: ``w0`` the GT region degraded
    (shifted, not clipped, at the canvas edges, so it has one size for the whole batch), ``w1``,
    ``w2``, ``w3`` after the three resizes. A stage whose JPEG follows is widened to the 16-pixel grid of the
    full canvas, so JPEG blocks fall where the full-canvas pipeline puts them. ``context`` is the GT context
    kept around the patch; ``None`` degrades the whole canvas.
    """
    s, g = scale, gt_size
    p = g // s
    axes = []
    for n0, t in zip(canvas_hw, (prm['top'], prm['left'])):
        n1 = int(n0 * prm['s1'])
        n2 = int(n0 / s * prm['s2'])
        nl = n0 // s
        if n1 < 1 or n2 < 1:
            raise ValueError(f'resize scales {prm["s1"]:.3f}/{prm["s2"]:.3f} leave an empty image from a '
                             f'{n0}-pixel canvas')
        if context is not None:
            w0 = _shifted(t * s - context, g + 2 * context, n0)
        else:
            w0 = (0, n0)
        # edge coordinates scale by s1 when F.interpolate gets scale_factor (bilinear/bicubic)
        r1 = prm['s1'] if prm['mode1'] != 'area' else n1 / n0
        c1 = _map(w0, n1, r1)
        c2 = _map(c1, n2, n2 / n1)
        c3 = _map(c2, nl, nl / n2)
        c3 = (min(c3[0], t), max(c3[1], t + p))
        axes.append({
            'n': (n0, n1, n2, nl), 'w0': w0,
            'w1': _align(c1, n1),
            'w2': _align(c2, n2) if not prm['sinc_first'] else c2,
            'w3': _align(c3, nl) if prm['sinc_first'] else c3,
            't': t
        })
    prm['axes'] = axes
    return prm


def _map(win, n_out, ratio):
    """The output pixels of a resize whose footprint meets input window ``win`` (edges scale by ``ratio``)."""
    return max(0, math.floor(win[0] * ratio)), min(n_out, max(math.ceil(win[1] * ratio), math.floor(win[0] * ratio)
                                                            + 1))


def _shifted(lo, size, n):
    """The window of ``size`` (at most ``n``) starting at ``lo``, moved inside [0, n) if it sticks out."""
    size = min(size, n)
    lo = min(max(lo, 0), n - size)
    return lo, lo + size


def _align(win, n, block=JPEG_BLOCK):
    return win[0] // block * block, min(n, -(-win[1] // block) * block)
