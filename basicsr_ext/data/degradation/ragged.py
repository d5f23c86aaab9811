"""Ragged batches: per-sample windows of different sizes, and per-sample kernels of different supports.

Windows differ in size from sample to sample, so intermediate images are kept as lists of (1, C, h, w)
tensors; ops that are exact on zero-padded batches (resize, noise, JPEG) run on packed tensors, one per
group of similar sizes (:func:`_grouped`). Blur kernels are cut to their non-zero support and samples
are batched by support size (:func:`_blur`, :func:`_blur_valid`).
"""
import torch
from torch.nn import functional as F

from .operators import filter2D


# ---------------------------------------------------------------------------------- packing
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


# ---------------------------------------------------------------------------- per-sample blur
def _support_halves(kernels):
    """Per (k, k) kernel, the half-width of the smallest centred square holding all its non-zero taps."""
    k = kernels.shape[-1]
    r = (torch.arange(k, device=kernels.device) - k // 2).abs()
    ring = torch.maximum(r.view(k, 1), r.view(1, k))
    return torch.where(kernels != 0, ring, torch.zeros_like(ring)).flatten(1).amax(1).tolist()


def _odd_crop(kernel, half):
    c = kernel.shape[-1] // 2
    return kernel[..., c - half:c + half + 1, c - half:c + half + 1]


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
