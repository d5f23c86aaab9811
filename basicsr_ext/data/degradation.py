"""Real-ESRGAN's second-order training degradation (docs/degradation.md), run on the training device.

:class:`HighOrderDegradation` turns a batch from :class:`~basicsr_ext.data.gt_only_dataset.GTOnlyDataset`
(or basicsr's ``RealESRGANDataset``: GT canvases plus per-sample blur/sinc kernels) into rounded LR /
GT training patches. The operators are basicsr's (``filter2D``, ``DiffJPEG``) or re-implementations
tested against basicsr's (USM sharpening, resizing, Gaussian/Poisson noise). What differs from
basicsr's ``RealESRNetModel.feed_data``:

* resize scale/mode, noise type, second blur, final-stage order and crop position are drawn per
  sample (``per_sample_params: true``) instead of per batch; per-batch drawing and the training-pair
  queue remain available (``per_sample_params: false``, ``queue_size``);
* all randomness comes from a ``torch.Generator`` owned by this object (seedable, checkpointable);
* only a window around each GT patch is degraded (``crop_before_degrade``), with the coordinates of
  every resize and the JPEG block grid taken from the full canvas, so the LR/GT geometry is the one
  the full-canvas pipeline produces. ``crop_before_degrade: false`` degrades the whole canvas.
"""
import bisect
import math
import os
import warnings

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from torchvision.transforms.functional import rgb_to_grayscale

from basicsr.utils import DiffJPEG
from basicsr.utils.img_process_util import filter2D as _basicsr_filter2D

from ..utils.schema import Field, OptionError, Section

__all__ = [
    'HighOrderDegradation', 'save_pair_grid', 'filter2D', 'usm_sharpen', 'usm_kernel_1d', 'resize_taps',
    'add_gaussian_noise', 'add_poisson_noise'
]

RESIZE_MODES = ('area', 'bilinear', 'bicubic')
UPDOWN = ('up', 'down', 'keep')
JPEG_BLOCK = 16  # DiffJPEG works on 8x8 luma blocks of 2x-subsampled chroma: 16x16 pixels are independent


def filter2D(img, kernel):
    """basicsr's ``filter2D`` (reflect padding, one kernel per sample or one for all)."""
    # DiffJPEG returns channels-last strides that F.pad keeps; basicsr's .view() then raises (torch 2.14)
    return _basicsr_filter2D(img.contiguous(), kernel.contiguous())


def _support_halves(kernels):
    """Per (k, k) kernel, the half-width of the smallest centred square holding all its non-zero taps."""
    k = kernels.shape[-1]
    r = (torch.arange(k, device=kernels.device) - k // 2).abs()
    ring = torch.maximum(r.view(k, 1), r.view(1, k))
    return torch.where(kernels != 0, ring, torch.zeros_like(ring)).flatten(1).amax(1).tolist()


def _odd_crop(kernel, half):
    c = kernel.shape[-1] // 2
    return kernel[..., c - half:c + half + 1, c - half:c + half + 1]


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


# ------------------------------------------------------------------------------------- ragged batches
# Windows differ in size from sample to sample, so intermediate images are kept as lists of (1, C, h, w)
# tensors; ops that are exact on zero-padded batches (resize, noise, JPEG) run on one packed tensor.
def _pack(xs):
    hmax = max(x.size(2) for x in xs)
    wmax = max(x.size(3) for x in xs)
    if all(x.size(2) == hmax and x.size(3) == wmax for x in xs):
        return torch.cat(xs, 0)
    return torch.cat([F.pad(x, (0, wmax - x.size(3), 0, hmax - x.size(2))) for x in xs], 0)


def _unpack(x, sizes):
    return [x[i:i + 1, :, :h, :w] for i, (h, w) in enumerate(sizes)]


def _sizes(xs):
    return [(x.size(2), x.size(3)) for x in xs]


def _groups(sizes, slack=1.3):
    """Split sample indices into runs of similar size whose packed area is at most ``slack`` x their own area
    (bounds the work wasted on padding; few groups, so few launches on a GPU)."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    groups, cur = [], []
    for i in order:
        trial = cur + [i]
        hmax = max(sizes[j][0] for j in trial)
        wmax = max(sizes[j][1] for j in trial)
        if cur and hmax * wmax * len(trial) > slack * sum(sizes[j][0] * sizes[j][1] for j in trial):
            groups.append(cur)
            trial = [i]
        cur = trial
    groups.append(cur)
    return groups


def _grouped(xs, fn, *per_sample):
    """Apply ``fn(packed, sizes, *per_sample_subsets)`` -> (packed_out, out_sizes) group by group."""
    out = [None] * len(xs)
    for idx in _groups(_sizes(xs)):
        sub = [xs[i] for i in idx]
        y, out_sizes = fn(_pack(sub), _sizes(sub), *[[a[i] for i in idx] for a in per_sample])
        for i, t in zip(idx, _unpack(y, out_sizes)):
            out[i] = t
    return out


def _blur(xs, kernels):
    """filter2D with each sample's kernel ((B, k, k) tensor), cut to its non-zero support (zero taps add
    nothing); samples are batched by support size."""
    halves = _support_halves(kernels)
    out = [None] * len(xs)
    same = all(x.shape == xs[0].shape for x in xs)
    for h in sorted(set(halves)):
        idx = [i for i, v in enumerate(halves) if v == h]
        k = _odd_crop(kernels[idx], h)
        if same:
            ys = filter2D(torch.cat([xs[i] for i in idx], 0), k).split(1)
        else:
            ys = [filter2D(xs[i], k[j:j + 1]) for j, i in enumerate(idx)]
        for i, y in zip(idx, ys):
            out[i] = y
    return out


def _blur_valid(x, kernels):
    """filter2D without padding on a batch that carries kernels.size(-1) // 2 pixels of context per side."""
    halves = _support_halves(kernels)
    reach = kernels.size(-1) // 2
    b, c = x.shape[:2]
    out = [None] * b
    for h in sorted(set(halves)):
        idx = [i for i, v in enumerate(halves) if v == h]
        k = _odd_crop(kernels[idx], h)
        cut = reach - h
        xi = x[idx][..., cut:x.size(2) - cut, cut:x.size(3) - cut].contiguous()
        n = len(idx)
        y = F.conv2d(xi.view(1, n * c, xi.size(2), xi.size(3)),
                     k.view(n, 1, 2 * h + 1, 2 * h + 1).repeat_interleave(c, 0),
                     groups=n * c)
        for j, i in enumerate(idx):
            out[i] = y[:, j * c:(j + 1) * c]
    return torch.cat(out, 0)


# ----------------------------------------------------------------------------------- debug pictures
def save_pair_grid(lq, gt, path, num=8):
    """Write a PNG with one row per pair: the LR patch upsampled (nearest) to the GT size, then the GT.

    ``lq`` (B, 3, h, w) and ``gt`` (B, 3, H, W) are RGB in [0, 1]; the first ``num`` pairs are drawn.
    Returns the path.
    """
    n = min(num, lq.size(0), gt.size(0))
    lq = lq[:n].detach().float().cpu()
    gt = gt[:n].detach().float().cpu()
    up = F.interpolate(lq, size=gt.shape[-2:], mode='nearest')
    sep = 2
    rows = []
    for i in range(n):
        row = torch.cat([up[i], torch.ones(3, gt.size(2), sep), gt[i]], dim=2)
        rows.append(row)
        rows.append(torch.ones(3, sep, row.size(2)))
    grid = torch.cat(rows[:-1], dim=1).clamp(0, 1)
    img = (grid.permute(1, 2, 0).numpy()[:, :, ::-1] * 255.).round().astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write the degradation grid '{path}'")
    return path


# -------------------------------------------------------------------------------------------- options
def _range(lo, hi, doc, low=None, high=None):
    return Field(list, [lo, hi], doc=doc, item=Field(float, min=low, max=high), check=_check_pair)


def _check_pair(value, where):
    if len(value) != 2 or value[0] > value[1]:
        raise OptionError(f'{where}: expected [low, high] with low <= high, got {value!r}')


def _check_probs(value, where):
    if len(value) != 3 or any(v < 0 for v in value) or sum(value) <= 0:
        raise OptionError(f'{where}: expected three non-negative weights [up, down, keep], got {value!r}')


def _probs(a, b, c, doc):
    return Field(list, [a, b, c], doc=doc, item=Field(float), check=_check_probs)


def _check_modes(value, where):
    if not value:
        raise OptionError(f'{where}: at least one resize mode is needed')


class HighOrderDegradation:
    """Real-ESRGAN's second-order degradation as a callable on the training device.

    Args:
        opt (dict): the ``degradation`` section (validated against :attr:`OPTIONS`; defaults filled in).
        scale (int): SR scale; LR patches are ``gt_size // scale``.
        device (str | torch.device): where the batch is degraded (CPU or CUDA, same code).

    Call ``deg(batch, current_iter)`` with a batch holding ``gt`` (B, 3, H, W) canvases in [0, 1] and
    ``kernel1``, ``kernel2``, ``sinc_kernel`` (B, k, k). It returns ``{'lq', 'gt', 'gt_usm'}`` on
    ``device``: ``lq`` (B, 3, gt_size/scale, gt_size/scale) rounded to k/255; ``gt`` the plain GT patch;
    ``gt_usm`` the USM-sharpened GT patch (Real-ESRNet's L1 target when ``gt_usm`` is true).
    """
    OPTIONS = {
        'type': Field(str, 'HighOrderDegradation', doc='registered name of this step'),
        'gt_size': Field(int, 256, min=1, doc='GT patch size (a multiple of scale); LR patches are gt_size/scale'),
        'gt_usm': Field(bool, True, doc='USM-sharpen the GT before degrading it (Real-ESRNet gt_usm)'),
        'usm_radius': Field(int, 50, min=1, doc='USM Gaussian size (made odd), as basicsr USMSharp'),
        'usm_weight': Field(float, 0.5, min=0, doc='USM sharpening weight'),
        'usm_threshold': Field(float, 10, min=0, doc='USM mask threshold on abs(I - blur(I)), 0-255 units'),
        # first degradation
        'resize_prob': _probs(0.2, 0.7, 0.1, 'weights of [up, down, keep] for the first resize'),
        'resize_range': _range(0.15, 1.5, 'first resize scale range [down low, up high]', low=1e-3),
        'gaussian_noise_prob': Field(float, 0.5, min=0, max=1, doc='first noise: P(Gaussian), else Poisson'),
        'noise_range': _range(1, 30, 'first Gaussian noise sigma range (0-255 scale)', low=0),
        'poisson_scale_range': _range(0.05, 3, 'first Poisson noise scale range', low=0),
        'gray_noise_prob': Field(float, 0.4, min=0, max=1, doc='first noise: P(gray noise)'),
        'jpeg_range': _range(30, 95, 'first JPEG quality range', low=1, high=100),
        # second degradation
        'second_blur_prob': Field(float, 0.8, min=0, max=1, doc='P(second blur with kernel2)'),
        'resize_prob2': _probs(0.3, 0.4, 0.3, 'weights of [up, down, keep] for the second resize'),
        'resize_range2': _range(0.3, 1.2, 'second resize scale range [down low, up high]', low=1e-3),
        'gaussian_noise_prob2': Field(float, 0.5, min=0, max=1, doc='second noise: P(Gaussian), else Poisson'),
        'noise_range2': _range(1, 25, 'second Gaussian noise sigma range (0-255 scale)', low=0),
        'poisson_scale_range2': _range(0.05, 2.5, 'second Poisson noise scale range', low=0),
        'gray_noise_prob2': Field(float, 0.4, min=0, max=1, doc='second noise: P(gray noise)'),
        'jpeg_range2': _range(30, 95, 'second JPEG quality range', low=1, high=100),
        'resize_modes': Field(list, list(RESIZE_MODES), item=Field(str, choices=RESIZE_MODES), check=_check_modes,
                              doc='resize modes drawn uniformly at each of the three resizes'),
        # how, not what
        'per_sample_params': Field(bool, True, doc='draw resize/noise type/orders/crop per sample '
                                   '(false: per batch, as Real-ESRGAN)'),
        'queue_size': Field(int, 0, min=0, doc="Real-ESRGAN's training-pair pool size (0 = off; a multiple "
                            'of the batch size)'),
        'crop_before_degrade': Field(bool, True, doc='degrade only a window around each patch '
                                     '(false: the whole canvas)'),
        'context': Field(int, 64, min=0, doc='GT pixels of real image kept around the patch when '
                         'crop_before_degrade is on'),
        'debug_grid': Section({
            'every': Field(int, 0, min=0, doc='write degradation_<iter>.png every N iterations (0 = never)'),
            'num': Field(int, 8, min=1, doc='pairs per grid'),
        }, doc='LR/GT picture grids in debug_dir'),
    }

    def __init__(self, opt, scale, device='cpu'):
        from ..utils.schema import validate
        self.opt = validate(dict(opt or {}), self.OPTIONS, 'degradation')
        self.scale = int(scale)
        self.device = torch.device(device)
        if self.opt['gt_size'] % self.scale:
            raise OptionError(f"degradation.gt_size: {self.opt['gt_size']} is not a multiple of scale {self.scale}")
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)
        self.jpeger = DiffJPEG(differentiable=False).to(self.device)
        self.usm_k1d = usm_kernel_1d(self.opt['usm_radius']).to(self.device)
        self.usm_reach = 2 * (self.usm_k1d.numel() // 2)  # blur, then blur of the mask
        self.debug_dir = None
        self._warned_debug = False
        self.queue = None

    # ----------------------------------------------------------------------------------- state
    def seed(self, seed):
        """Reseed the generator (the trainer passes manual_seed + rank)."""
        self.generator.manual_seed(int(seed))

    def state_dict(self):
        queue = None
        if self.queue is not None:  # copies: the pool is updated in place after this returns
            queue = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self.queue.items()}
        return {'generator': self.generator.get_state(), 'queue': queue}

    def load_state_dict(self, state):
        self.generator.set_state(state['generator'].cpu())
        q = state.get('queue')
        self.queue = None if q is None else {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in q.items()}

    # ---------------------------------------------------------------------------------- sampling
    def sample_params(self, batch_size, canvas_hw):
        """Draw every random choice for a batch (one generator call): a list of per-sample dicts."""
        o = self.opt
        u = torch.rand((batch_size, 21), generator=self.generator, device=self.device,
                       dtype=torch.float64).cpu().numpy()
        if not o['per_sample_params']:
            shared = [0, 1, 2, 3, 8, 9, 10, 11, 12, 16, 17, 19, 20]
            u[:, shared] = u[0, shared]
        nl_h, nl_w = canvas_hw[0] // self.scale, canvas_hw[1] // self.scale
        p = o['gt_size'] // self.scale
        modes = o['resize_modes']

        def scale_of(probs, rng, uu, us):
            cum = np.cumsum(probs)
            kind = UPDOWN[min(bisect.bisect_right(cum, uu * cum[-1]), 2)]
            if kind == 'up':
                return 1 + us * (rng[1] - 1)
            if kind == 'down':
                return rng[0] + us * (1 - rng[0])
            return 1.0

        def lerp(rng, uu):
            return rng[0] + uu * (rng[1] - rng[0])

        params = []
        for r in u:
            params.append({
                's1': scale_of(o['resize_prob'], o['resize_range'], r[0], r[1]),
                'mode1': modes[min(int(r[2] * len(modes)), len(modes) - 1)],
                'gauss1': r[3] < o['gaussian_noise_prob'],
                'sigma1': lerp(o['noise_range'], r[4]),
                'poisson1': lerp(o['poisson_scale_range'], r[5]),
                'gray1': r[6] < o['gray_noise_prob'],
                'q1': lerp(o['jpeg_range'], r[7]),
                'blur2': r[8] < o['second_blur_prob'],
                's2': scale_of(o['resize_prob2'], o['resize_range2'], r[9], r[10]),
                'mode2': modes[min(int(r[11] * len(modes)), len(modes) - 1)],
                'gauss2': r[12] < o['gaussian_noise_prob2'],
                'sigma2': lerp(o['noise_range2'], r[13]),
                'poisson2': lerp(o['poisson_scale_range2'], r[14]),
                'gray2': r[15] < o['gray_noise_prob2'],
                'sinc_first': r[16] < 0.5,
                'mode3': modes[min(int(r[17] * len(modes)), len(modes) - 1)],
                'q2': lerp(o['jpeg_range2'], r[18]),
                'top': min(int(r[19] * (nl_h - p + 1)), nl_h - p),
                'left': min(int(r[20] * (nl_w - p + 1)), nl_w - p),
            })
        return params

    # ---------------------------------------------------------------------------------- geometry
    def plan(self, prm, canvas_hw):
        """Per-axis stage sizes and windows for one sample (adds them to ``prm``).

        Windows are [lo, hi) in each stage's full-canvas coordinates: ``w0`` the GT region degraded
        (shifted, not clipped, at the canvas edges, so it has one size for the whole batch), ``w1``,
        ``w2``, ``w3`` after the three resizes. A stage whose JPEG follows is widened to the 16-pixel grid of the full canvas,
        so JPEG blocks fall where the full-canvas pipeline puts them.
        """
        s, g = self.scale, self.opt['gt_size']
        p = g // s
        axes = []
        for n0, t in zip(canvas_hw, (prm['top'], prm['left'])):
            n1 = int(n0 * prm['s1'])
            n2 = int(n0 / s * prm['s2'])
            nl = n0 // s
            if n1 < 1 or n2 < 1:
                raise ValueError(f'resize scales {prm["s1"]:.3f}/{prm["s2"]:.3f} leave an empty image from a '
                                 f'{n0}-pixel canvas')
            if self.opt['crop_before_degrade']:
                w0 = _shifted(t * s - self.opt['context'], g + 2 * self.opt['context'], n0)
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

    # ----------------------------------------------------------------------------------- pipeline
    def _resize(self, xs, params, src, dst, stage):
        """Resize stage ``stage`` (1, 2, 3): from window ``src`` to window ``dst`` of each sample."""
        out, mats = list(xs), []
        for i, (x, prm) in enumerate(zip(xs, params)):
            mode = prm[f'mode{stage}']
            sf = prm['s1'] if stage == 1 and mode != 'area' else None
            axes = prm['axes']
            n_in = [ax['n'][stage - 1] for ax in axes]
            n_out = [ax['n'][stage] for ax in axes]
            whole = all(ax[src] == (0, ni) and ax[dst] == (0, no) for ax, ni, no in zip(axes, n_in, n_out))
            if whole:  # whole images: PyTorch's own kernel (the reference) is also the fastest
                if n_in != n_out or (sf is not None and sf != 1):
                    kw = {'scale_factor': sf} if sf is not None else {'size': tuple(n_out)}
                    out[i] = F.interpolate(x, mode=mode, **kw)
                continue
            mats.append((i, [
                _taps_matrix(*resize_taps(ni, no, mode, sf, *ax[dst], *ax[src]), ax[src][1] - ax[src][0])
                for ax, ni, no in zip(axes, n_in, n_out)
            ]))
        if mats:
            idx = [i for i, _ in mats]

            def run(x, sizes, m):
                return _matrix_resize(x, [a[0] for a in m], [a[1] for a in m]), [(a[0].shape[0], a[1].shape[0])
                                                                                 for a in m]

            for i, y in zip(idx, _grouped([xs[i] for i in idx], run, [m for _, m in mats])):
                out[i] = y
        return out

    def _noise(self, xs, params, stage):
        gauss = [prm[f'gauss{stage}'] for prm in params]
        gray = [float(prm[f'gray{stage}']) for prm in params]
        strength = [prm[f'sigma{stage}'] if g else prm[f'poisson{stage}'] for g, prm in zip(gauss, params)]

        def run(x, sizes, g, gr, st):
            # flags and strengths stay on the CPU: the noise functions read the flags without a device sync
            if g[0]:
                return add_gaussian_noise(x, torch.tensor(st), torch.tensor(gr), self.generator), sizes
            return add_poisson_noise(x, torch.tensor(st), torch.tensor(gr), self.generator, sizes), sizes

        out = list(xs)
        for kind in (True, False):
            sel = [i for i, g in enumerate(gauss) if g == kind]
            if sel:
                ys = _grouped([xs[i] for i in sel], run, *[[a[i] for i in sel] for a in (gauss, gray, strength)])
                for i, y in zip(sel, ys):
                    out[i] = y
        return out

    def _jpeg(self, xs, quality):

        def run(x, sizes, q):
            # zero padding is what DiffJPEG itself pads with, so a packed group gives per-sample results
            q = torch.tensor(q, dtype=torch.float32, device=self.device)
            return self.jpeger(torch.clamp(x, 0, 1), quality=q), sizes

        return _grouped(xs, run, quality)

    def degrade(self, gt, kernel1, kernel2, sinc_kernel, params):
        """Run the pipeline on GT canvases with planned ``params``; returns (lq, gt, gt_usm) patches."""
        s, g = self.scale, self.opt['gt_size']
        p = g // s

        def crop(x, win, ref):  # window `win` of a tensor that holds window `ref`
            (h0, h1), (w0, w1) = win
            return x[..., h0 - ref[0][0]:h1 - ref[0][0], w0 - ref[1][0]:w1 - ref[1][0]]

        def win(prm, key):
            return prm['axes'][0][key], prm['axes'][1][key]

        # USM and the first blur are local: run them exactly on w0 from a mirror-padded canvas, whose
        # padding is what basicsr's filter2D would reflect in at the true image edges
        r1 = kernel1.size(-1) // 2
        ru = self.usm_k1d.numel() // 2
        e = 2 * ru + r1
        padded = F.pad(gt, (e, ) * 4, mode='reflect')
        region = torch.cat([
            crop(padded[i:i + 1], ((h0, h1 + 2 * e), (w0, w1 + 2 * e)), ((0, 0), (0, 0)))
            for i, ((h0, h1), (w0, w1)) in enumerate(win(prm, 'w0') for prm in params)
        ], 0)  # w0 +- e
        usm = usm_sharpen_valid(region, self.usm_k1d, self.opt['usm_weight'], self.opt['usm_threshold'])
        source = usm if self.opt['gt_usm'] else region[..., 2 * ru:-2 * ru, 2 * ru:-2 * ru]  # w0 +- r1
        xs = list(_blur_valid(source, kernel1).split(1))
        full = ((0, gt.size(2)), (0, gt.size(3)))
        gt_patch, usm_patch = [], []
        for i, prm in enumerate(params):
            t_h, t_w = prm['axes'][0]['t'] * s, prm['axes'][1]['t'] * s
            patch = ((t_h, t_h + g), (t_w, t_w + g))
            (h0, h1), (w0, w1) = win(prm, 'w0')
            gt_patch.append(crop(gt[i:i + 1], patch, full))
            usm_patch.append(crop(usm[i:i + 1], patch, ((h0 - r1, h1 + r1), (w0 - r1, w1 + r1))))

        # first degradation: blur (above), resize, noise, JPEG
        xs = self._resize(xs, params, 'w0', 'w1', 1)
        xs = self._noise(xs, params, 1)
        xs = self._jpeg(xs, [prm['q1'] for prm in params])
        # second degradation: optional blur, resize, noise, then {resize back + sinc, JPEG} in either order
        sel = [i for i, prm in enumerate(params) if prm['blur2']]
        if sel:
            for i, y in zip(sel, _blur([xs[i] for i in sel], kernel2[sel])):
                xs[i] = y
        xs = self._resize(xs, params, 'w1', 'w2', 2)
        xs = self._noise(xs, params, 2)
        first = [i for i, prm in enumerate(params) if prm['sinc_first']]
        last = [i for i, prm in enumerate(params) if not prm['sinc_first']]
        if last:
            for i, y in zip(last, self._jpeg([xs[i] for i in last], [params[i]['q2'] for i in last])):
                xs[i] = y
        xs = self._resize(xs, params, 'w2', 'w3', 3)
        xs = _blur(xs, sinc_kernel)
        if first:
            for i, y in zip(first, self._jpeg([xs[i] for i in first], [params[i]['q2'] for i in first])):
                xs[i] = y
        lq = []
        for x, prm in zip(xs, params):
            t_h, t_w = prm['axes'][0]['t'], prm['axes'][1]['t']
            lq.append(crop(x, ((t_h, t_h + p), (t_w, t_w + p)), win(prm, 'w3')))
        lq = torch.clamp((torch.cat(lq, 0) * 255.0).round(), 0, 255) / 255.
        return lq, torch.cat(gt_patch, 0), torch.cat(usm_patch, 0)

    @torch.no_grad()
    def __call__(self, batch, current_iter=None):
        gt = batch['gt'].to(self.device, non_blocking=True).float()
        b, _, h, w = gt.shape
        g = self.opt['gt_size']
        if h < g or w < g:
            raise ValueError(f'GT canvases are {h}x{w}, smaller than degradation.gt_size {g}')
        if h % self.scale or w % self.scale:
            raise ValueError(f'GT canvases are {h}x{w}, not a multiple of scale {self.scale}')
        k1, k2, ks = (batch[k].to(self.device, non_blocking=True).float()
                      for k in ('kernel1', 'kernel2', 'sinc_kernel'))
        reach = 2 * (self.usm_k1d.numel() // 2) + k1.size(-1) // 2
        if min(h, w) <= reach:  # the mirror padding that makes USM and the first blur exact needs it
            raise ValueError(f'GT canvases are {h}x{w}; they must be larger than {reach} pixels '
                             '(USM reach + first-kernel radius)')
        params = [self.plan(prm, (h, w)) for prm in self.sample_params(b, (h, w))]
        lq, gt_p, usm_p = self.degrade(gt, k1, k2, ks, params)
        if self.opt['queue_size']:
            lq, gt_p, usm_p = self._dequeue_and_enqueue(lq, gt_p, usm_p)
        self._maybe_write_grid(lq, usm_p if self.opt['gt_usm'] else gt_p, current_iter)
        return {'lq': lq.contiguous(), 'gt': gt_p.contiguous(), 'gt_usm': usm_p.contiguous()}

    # ------------------------------------------------------------------------------------ the pool
    def _dequeue_and_enqueue(self, lq, gt, gt_usm):
        """Real-ESRGAN's training-pair pool: fill it, then swap each batch with a random slice of it."""
        b = lq.size(0)
        size = self.opt['queue_size']
        if size % b:
            raise ValueError(f'degradation.queue_size {size} is not a multiple of the batch size {b}')
        new = {'lq': lq, 'gt': gt, 'gt_usm': gt_usm}
        if self.queue is None:
            self.queue = {k: v.new_zeros((size, ) + tuple(v.shape[1:])) for k, v in new.items()}
            self.queue['ptr'] = 0
        q = self.queue
        if q['ptr'] == size:
            idx = torch.randperm(size, generator=self.generator, device=self.device)
            out = {}
            for k, v in new.items():
                q[k] = q[k][idx]
                out[k] = q[k][:b].clone()
                q[k][:b] = v
            return out['lq'], out['gt'], out['gt_usm']
        for k, v in new.items():
            q[k][q['ptr']:q['ptr'] + b] = v
        q['ptr'] += b
        return lq, gt, gt_usm

    def _maybe_write_grid(self, lq, gt, current_iter):
        every = self.opt['debug_grid']['every']
        if not every or current_iter is None or current_iter % every:
            return
        if self.debug_dir is None:
            if not self._warned_debug:
                warnings.warn('degradation.debug_grid.every is set but debug_dir is not; no grid written')
                self._warned_debug = True
            return
        save_pair_grid(lq, gt, os.path.join(self.debug_dir, f'degradation_{current_iter}.png'),
                       self.opt['debug_grid']['num'])


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
