"""The random draws of the training degradation, by name.

Every random choice of a sample's degradation comes from one uniform [0, 1) number. A batch's numbers
are drawn in one generator call, a (batch, 21) float64 tensor whose columns are the fields of
:class:`SampleDraws` in declaration order; :func:`sample_parameters` turns one sample's draws into the
parameters the pipeline runs with. The field order is the generator's column order: adding, removing
or reordering a field changes every draw after it (and what a checkpointed generator resumes to).
"""
import bisect
from dataclasses import dataclass, fields

import numpy as np
import torch

__all__ = ['SampleDraws', 'PER_BATCH', 'UPDOWN', 'draw_batch', 'sample_parameters']

UPDOWN = ('up', 'down', 'keep')


@dataclass(frozen=True)
class SampleDraws:
    """One sample's uniform [0, 1) draws, one per random choice, named after the pipeline stage they drive."""
    # first degradation (the first blur kernel comes with the batch)
    resize1_kind: float  # up / down / keep, weighted by resize_prob
    resize1_scale: float  # where in resize_range (the up or the down part)
    resize1_mode: float  # one of resize_modes
    noise1_gaussian: float  # Gaussian (< gaussian_noise_prob) or Poisson
    noise1_sigma: float  # Gaussian sigma in noise_range
    noise1_poisson_scale: float  # Poisson scale in poisson_scale_range
    noise1_gray: float  # gray noise (< gray_noise_prob)
    jpeg1_quality: float  # quality in jpeg_range
    # second degradation
    blur2_apply: float  # second blur with kernel2 (< second_blur_prob)
    resize2_kind: float
    resize2_scale: float
    resize2_mode: float
    noise2_gaussian: float
    noise2_sigma: float
    noise2_poisson_scale: float
    noise2_gray: float
    # final stage: {resize back + sinc filter, JPEG} in either order
    final_sinc_first: float  # sinc then JPEG (< 0.5), else JPEG then sinc
    resize3_mode: float  # mode of the resize back to the LR size
    jpeg2_quality: float  # quality in jpeg_range2
    # where the LR patch lies on the LR canvas
    crop_top: float
    crop_left: float


NAMES = tuple(f.name for f in fields(SampleDraws))

#: draws shared by the whole batch when ``per_sample_params`` is false (Real-ESRGAN draws these per
#: batch; noise strengths, gray flags and JPEG qualities it draws per sample)
PER_BATCH = ('resize1_kind', 'resize1_scale', 'resize1_mode', 'noise1_gaussian', 'blur2_apply', 'resize2_kind',
             'resize2_scale', 'resize2_mode', 'noise2_gaussian', 'final_sinc_first', 'resize3_mode', 'crop_top',
             'crop_left')


def draw_batch(batch_size, generator, device, per_sample=True):
    """Every draw of a batch in one ``generator`` call: a list of :class:`SampleDraws`, one per sample."""
    u = torch.rand((batch_size, len(NAMES)), generator=generator, device=device, dtype=torch.float64).cpu().numpy()
    if not per_sample:
        shared = [NAMES.index(name) for name in PER_BATCH]
        u[:, shared] = u[0, shared]
    return [SampleDraws(*row) for row in u]


def _scale_of(probs, rng, u_kind, u_scale):
    cum = np.cumsum(probs)
    kind = UPDOWN[min(bisect.bisect_right(cum, u_kind * cum[-1]), 2)]
    if kind == 'up':
        return 1 + u_scale * (rng[1] - 1)
    if kind == 'down':
        return rng[0] + u_scale * (1 - rng[0])
    return 1.0


def _lerp(rng, u):
    return rng[0] + u * (rng[1] - rng[0])


def _pick(choices, u):
    return choices[min(int(u * len(choices)), len(choices) - 1)]


def sample_parameters(d, opt, lr_canvas_hw, lr_patch):
    """The parameters of one sample's degradation from its draws ``d`` and the typed ``degradation`` options.

    ``lr_canvas_hw`` is the LR size of the canvas and ``lr_patch`` the LR patch size; ``top``/``left``
    are the patch origin on the LR canvas.
    """
    o, modes = opt, opt.resize_modes
    nl_h, nl_w = lr_canvas_hw
    return {
        's1': _scale_of(o.resize_prob, o.resize_range, d.resize1_kind, d.resize1_scale),
        'mode1': _pick(modes, d.resize1_mode),
        'gauss1': d.noise1_gaussian < o.gaussian_noise_prob,
        'sigma1': _lerp(o.noise_range, d.noise1_sigma),
        'poisson1': _lerp(o.poisson_scale_range, d.noise1_poisson_scale),
        'gray1': d.noise1_gray < o.gray_noise_prob,
        'q1': _lerp(o.jpeg_range, d.jpeg1_quality),
        'blur2': d.blur2_apply < o.second_blur_prob,
        's2': _scale_of(o.resize_prob2, o.resize_range2, d.resize2_kind, d.resize2_scale),
        'mode2': _pick(modes, d.resize2_mode),
        'gauss2': d.noise2_gaussian < o.gaussian_noise_prob2,
        'sigma2': _lerp(o.noise_range2, d.noise2_sigma),
        'poisson2': _lerp(o.poisson_scale_range2, d.noise2_poisson_scale),
        'gray2': d.noise2_gray < o.gray_noise_prob2,
        'sinc_first': d.final_sinc_first < 0.5,
        'mode3': _pick(modes, d.resize3_mode),
        'q2': _lerp(o.jpeg_range2, d.jpeg2_quality),
        'top': min(int(d.crop_top * (nl_h - lr_patch + 1)), nl_h - lr_patch),
        'left': min(int(d.crop_left * (nl_w - lr_patch + 1)), nl_w - lr_patch),
    }
