"""Global integer-shift alignment of an output to its reference, on luminance, before the metrics.

Real LR/HR captures are registered only up to a pixel or two, so real-capture benchmarks search a small
global shift before measuring. :func:`find_shift` tries every shift (dy, dx) in [-k, k]² and keeps the one
with the lowest mean squared error of the BT.601 luma (basicsr's Y of YCbCr) over the reference's centre,
which every shift covers: ``ref[k:H-k, k:W-k]`` against ``out[k+dy:H-k+dy, k+dx:W-k+dx]``. Ties go to the
smaller shift. :func:`align` cuts both images to that common region.
"""
import numpy as np
from basicsr.utils.color_util import rgb2ycbcr

__all__ = ['find_shift', 'align']


def _luma(rgb):
    return rgb2ycbcr(np.asarray(rgb, dtype=np.float32) / 255., y_only=True).astype(np.float64)


def _check(out, ref, k):
    if out.shape != ref.shape:
        raise ValueError(f'shift search: the output is {out.shape[0]}x{out.shape[1]} but the reference is '
                         f'{ref.shape[0]}x{ref.shape[1]}')
    if min(ref.shape[:2]) <= 2 * k:
        raise ValueError(f'shift search: a {ref.shape[0]}x{ref.shape[1]} image has no common region for shifts of '
                         f'up to {k} pixels')


def find_shift(out, ref, max_shift):
    """``(dy, dx)`` with |dy|, |dx| <= ``max_shift`` such that ``out[y + dy, x + dx]`` best matches ``ref[y, x]``.

    Args:
        out, ref: uint8 RGB HxWx3 arrays of the same size.
    """
    k = int(max_shift)
    _check(out, ref, k)
    if k == 0:
        return 0, 0
    yo, yr = _luma(out), _luma(ref)
    h, w = yr.shape
    centre = yr[k:h - k, k:w - k]
    shifts = sorted(((dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1)),
                    key=lambda s: (abs(s[0]) + abs(s[1]), s))
    best, best_mse = (0, 0), np.inf
    for dy, dx in shifts:
        mse = np.mean((yo[k + dy:h - k + dy, k + dx:w - k + dx] - centre)**2)
        if mse < best_mse:
            best, best_mse = (dy, dx), mse
    return best


def align(out, ref, shift, max_shift):
    """The common region of ``out`` shifted by ``shift`` and ``ref``: two arrays of (H - 2k) x (W - 2k)."""
    k = int(max_shift)
    _check(out, ref, k)
    (dy, dx), (h, w) = shift, ref.shape[:2]
    if max(abs(dy), abs(dx)) > k:
        raise ValueError(f'shift {shift} is larger than max_shift {k}')
    return out[k + dy:h - k + dy, k + dx:w - k + dx], ref[k:h - k, k:w - k]
