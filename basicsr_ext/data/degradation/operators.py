"""Pure tensor operators of the training degradation: basicsr's ``filter2D`` (guarded), USM sharpening,
exact ``F.interpolate`` taps for windowed resizing, and Gaussian/Poisson noise with per-sample strengths.

Each is basicsr's operator or a re-implementation tested against it (tests/test_degradation.py). None
holds state: randomness comes from the ``generator`` argument.
"""
import math

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from torchvision.transforms.functional import rgb_to_grayscale

from basicsr.utils.img_process_util import filter2D as _basicsr_filter2D

__all__ = [
    'RESIZE_MODES', 'JPEG_BLOCK', 'filter2D', 'usm_kernel_1d', 'usm_sharpen_valid', 'usm_sharpen', 'resize_taps',
    'add_gaussian_noise', 'add_poisson_noise'
]

RESIZE_MODES = ('area', 'bilinear', 'bicubic')
JPEG_BLOCK = 16  # DiffJPEG works on 8x8 luma blocks of 2x-subsampled chroma: 16x16 pixels are independent


def filter2D(img, kernel):
    """basicsr's ``filter2D`` (reflect padding, one kernel per sample or one for all)."""
    # DiffJPEG returns channels-last strides that F.pad keeps; basicsr's .view() then raises (torch 2.14)
    return _basicsr_filter2D(img.contiguous(), kernel.contiguous())


# ---------------------------------------------------------------------------------------------- USM
def usm_kernel_1d(radius=50, sigma=0):
    """The 1-D Gaussian whose outer product is basicsr ``USMSharp``'s kernel (odd size, OpenCV sigma rule)."""
    if radius % 2 == 0:
        radius += 1
    return torch.from_numpy(cv2.getGaussianKernel(radius, sigma)[:, 0].astype(np.float32))


def _valid_blur(img, k1d):
    """Separable blur without padding: the output is (k - 1) pixels smaller on each axis."""
    b, c, h, w = img.shape
    k = k1d.numel()
    x = F.conv2d(img.contiguous().view(b * c, 1, h, w), k1d.view(1, 1, k, 1))
    x = F.conv2d(x, k1d.view(1, 1, 1, k))
    return x.view(b, c, h - k + 1, w - k + 1)


def usm_sharpen_valid(img, k1d, weight=0.5, threshold=10):
    """USM of the centre of ``img``, which must carry 2 * (len(k1d) // 2) pixels of context on every side.

    The result matches basicsr ``USMSharp`` on an image whose reflect-padded surroundings ``img`` holds:
    a symmetric blur of a mirror-symmetric image is mirror-symmetric, so blurring and thresholding the
    padded image gives the mirrored values basicsr's own reflect padding of each step would.
    """
    r = k1d.numel() // 2
    blur = _valid_blur(img, k1d)
    residual = img[..., r:-r, r:-r] - blur
    mask = (torch.abs(residual) * 255 > threshold).float()
    soft_mask = _valid_blur(mask, k1d)
    centre = img[..., 2 * r:-2 * r, 2 * r:-2 * r]
    sharp = torch.clip(centre + weight * residual[..., r:-r, r:-r], 0, 1)
    return soft_mask * sharp + (1 - soft_mask) * centre


def usm_sharpen(img, k1d, weight=0.5, threshold=10):
    """basicsr ``USMSharp.forward``, with its 2-D Gaussian applied as two 1-D passes (~25x fewer operations)."""
    r = k1d.numel() // 2
    return usm_sharpen_valid(F.pad(img, (2 * r, ) * 4, mode='reflect'), k1d, weight, threshold)


# ------------------------------------------------------------------------------------------ resizing
def _cubic_weights(t, a=-0.75):

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)


def resize_taps(n_in, n_out, mode, scale_factor=None, out_lo=0, out_hi=None, in_lo=0, in_hi=None):
    """Source indices and weights of ``F.interpolate`` along one axis, for output rows ``out_lo:out_hi``.

    Coordinates follow PyTorch (align_corners=False; a given ``scale_factor`` sets the sampling step of
    bilinear/bicubic, 'area' is adaptive average pooling). Indices are clamped to the image, then to the
    window ``in_lo:in_hi`` that is actually present (outside it, the window's edge pixel stands in) and
    returned relative to ``in_lo``. Returns int64 ``idx`` and float32 ``w`` of shape (rows, taps).
    """
    out_hi = n_out if out_hi is None else out_hi
    in_hi = n_in if in_hi is None else in_hi
    j = np.arange(out_lo, out_hi)
    if mode == 'area':
        start = (j * n_in) // n_out
        end = ((j + 1) * n_in + n_out - 1) // n_out
        taps = int((end - start).max())
        idx = start[:, None] + np.arange(taps)[None]
        inside = idx < end[:, None]
        w = inside / (end - start)[:, None]
        idx = np.where(inside, idx, start[:, None])
    else:
        # float32 arithmetic, as PyTorch computes source coordinates in the input's precision
        step = np.float32(1.0 / scale_factor) if scale_factor else np.float32(n_in) / np.float32(n_out)
        src = step * (j.astype(np.float32) + np.float32(0.5)) - np.float32(0.5)
        if mode == 'bilinear':
            src = np.maximum(src, np.float32(0))
            x0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
            lam = np.clip(src - x0, 0, 1)
            idx = np.stack([x0, np.minimum(x0 + 1, n_in - 1)], axis=1)
            w = np.stack([1 - lam, lam], axis=1)
        elif mode == 'bicubic':
            x0 = np.floor(src).astype(np.int64)
            idx = x0[:, None] + np.arange(-1, 3)[None]
            w = _cubic_weights((src - x0).astype(np.float32))
        else:
            raise ValueError(f'unknown resize mode {mode!r}')
        idx = np.clip(idx, 0, n_in - 1)
    idx = np.clip(idx, in_lo, in_hi - 1) - in_lo
    return idx.astype(np.int64), w.astype(np.float32)


def _taps_matrix(idx, w, n_cols):
    m = np.zeros((idx.shape[0], n_cols), np.float32)
    np.add.at(m, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), w.ravel())
    return m


def _matrix_resize(x, mats_h, mats_w):
    """Resize a packed batch with per-sample (rows, cols) weight matrices: ``Wh @ x @ Ww^T``.

    Zero columns past each sample's size ignore the padding; dense products beat gathers on small windows.
    """
    b = x.size(0)
    oh = max(m.shape[0] for m in mats_h)
    ow = max(m.shape[0] for m in mats_w)
    wh = np.zeros((b, 1, oh, x.size(2)), np.float32)
    ww = np.zeros((b, 1, x.size(3), ow), np.float32)
    for i, (mh, mw) in enumerate(zip(mats_h, mats_w)):
        wh[i, 0, :mh.shape[0], :mh.shape[1]] = mh
        ww[i, 0, :mw.shape[1], :mw.shape[0]] = mw.T
    wh = torch.from_numpy(wh).to(x.device, x.dtype, non_blocking=True)
    ww = torch.from_numpy(ww).to(x.device, x.dtype, non_blocking=True)
    return torch.matmul(torch.matmul(wh, x), ww)


# ---------------------------------------------------------------------------------------------- noise
def add_gaussian_noise(img, sigma, gray, generator=None):
    """basicsr ``add_gaussian_noise_pt(clip=True, rounds=False)`` with per-sample ``sigma`` (0-255 scale) and
    0/1 ``gray`` flags (shape (b,)), drawing from ``generator``.

    The draws come in basicsr's order (gray field(s) first when any sample is gray, then colour noise);
    the gray field is drawn per sample, where basicsr draws one (h, w) field for the whole batch.
    """
    b, c, h, w = img.shape
    any_gray = bool(gray.detach().cpu().sum() > 0)  # no device sync when the flags come on the CPU
    sigma = sigma.to(img).view(b, 1, 1, 1)
    gray = gray.to(img).view(b, 1, 1, 1)
    kw = dict(generator=generator, dtype=img.dtype, device=img.device)
    if any_gray:
        noise_gray = torch.randn((b, 1, h, w), **kw) * sigma / 255.
    noise = torch.randn((b, c, h, w), **kw) * sigma / 255.
    if any_gray:
        noise = noise * (1 - gray) + noise_gray * gray
    return torch.clamp(img + noise, 0, 1)


_POW2 = np.array([0] + [2**math.ceil(math.log2(n)) for n in range(1, 257)], np.float32)


def _levels(img, sizes=None):
    """Per sample, the power of two >= the number of distinct 8-bit values in its (valid) region, as basicsr's
    Poisson noise uses; one bincount instead of a torch.unique per sample."""
    b = img.size(0)
    q = img.to(torch.int64) + 256 * torch.arange(b, device=img.device).view(b, 1, 1, 1)
    if sizes is not None:
        h = torch.tensor([s[0] for s in sizes], device=img.device).view(b, 1, 1, 1)
        w = torch.tensor([s[1] for s in sizes], device=img.device).view(b, 1, 1, 1)
        ys = torch.arange(img.size(2), device=img.device).view(1, 1, -1, 1)
        xs = torch.arange(img.size(3), device=img.device).view(1, 1, 1, -1)
        q = torch.where((ys < h) & (xs < w), q, torch.full_like(q, 256 * b))  # padding goes to a spare bin
    counts = torch.bincount(q.flatten(), minlength=256 * b + 1)[:256 * b].view(b, 256)
    n = (counts > 0).sum(1)
    return torch.from_numpy(_POW2).to(img.device)[n].to(img.dtype).view(b, 1, 1, 1)


def add_poisson_noise(img, scale, gray, generator=None, sizes=None):
    """basicsr ``add_poisson_noise_pt(clip=True, rounds=False)`` with per-sample ``scale`` and 0/1 ``gray``
    flags, drawing from ``generator`` in basicsr's order. ``sizes`` ((h, w) per sample) limits the level
    count to each sample's valid region of a zero-padded batch."""
    b, _, h, w = img.shape
    any_gray = bool(gray.detach().cpu().sum() > 0)
    gray = gray.to(img).view(b, 1, 1, 1)
    if any_gray:
        img_gray = rgb_to_grayscale(img, num_output_channels=1)
        img_gray = torch.clamp((img_gray * 255.0).round(), 0, 255) / 255.
        vals = _levels(img_gray * 255., sizes)
        noise_gray = (torch.poisson(img_gray * vals, generator=generator) / vals - img_gray).expand(b, 3, h, w)
    img_q = torch.clamp((img * 255.0).round(), 0, 255) / 255.
    vals = _levels(img_q * 255., sizes)
    noise = torch.poisson(img_q * vals, generator=generator) / vals - img_q
    if any_gray:
        noise = noise * (1 - gray) + noise_gray * gray
    return torch.clamp(img + noise * scale.to(img).view(b, 1, 1, 1), 0, 1)
