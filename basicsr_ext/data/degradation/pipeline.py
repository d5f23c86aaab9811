"""Real-ESRGAN's second-order training degradation (docs/degradation.md), run on the training device.

:class:`HighOrderDegradation` turns a batch from :class:`~basicsr_ext.data.gt_only_dataset.GTOnlyDataset`
(or basicsr's ``RealESRGANDataset``: GT canvases plus per-sample blur/sinc kernels) into rounded LR /
GT training patches. The operators are basicsr's (``filter2D``, ``DiffJPEG``) or re-implementations
tested against basicsr's (USM sharpening, resizing, Gaussian/Poisson noise; :mod:`.operators`). What
differs from basicsr's ``RealESRNetModel.feed_data``:

* resize scale/mode, noise type, second blur, final-stage order and crop position are drawn per
  sample (``per_sample_params: true``, draws named in :class:`.draw.SampleDraws`) instead of per batch;
  per-batch drawing and the training-pair queue remain available (``per_sample_params: false``, ``queue_size``);
* all randomness comes from a ``torch.Generator`` owned by this object (seedable, checkpointable), so a
  batch's degradation can be replayed on other targets (:meth:`HighOrderDegradation.replay`);
* only a window around each GT patch is degraded (``crop_before_degrade``), with the coordinates of
  every resize and the JPEG block grid taken from the full canvas, so the LR/GT geometry is the one
  the full-canvas pipeline produces. ``crop_before_degrade: false`` degrades the whole canvas.
"""
import os
import warnings

import torch
from torch.nn import functional as F

from basicsr.utils import DiffJPEG

from ...utils.schema import Field, OptionError, Section
from ...utils.typed import as_plain, options_class, typed_options
from .debug_grid import save_pair_grid
from .draw import draw_batch, sample_parameters
from .geometry import plan
from .operators import (RESIZE_MODES, _matrix_resize, _taps_matrix, add_gaussian_noise, add_poisson_noise,
                        resize_taps, usm_kernel_1d, usm_sharpen, usm_sharpen_valid)
from .ragged import _blur, _blur_valid, _grouped

__all__ = ['HighOrderDegradation']


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
        opt (dict): the ``degradation`` section, validated against :attr:`OPTIONS` and kept typed (``self.opt``).
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
        self.opt = typed_options(as_plain(opt or {}), self.OPTIONS, 'DegradationOptions', 'degradation')
        self.scale = int(scale)
        self.device = torch.device(device)
        if self.opt.gt_size % self.scale:
            raise OptionError(f"degradation.gt_size: {self.opt.gt_size} is not a multiple of scale {self.scale}")
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)
        self.jpeger = DiffJPEG(differentiable=False).to(self.device)
        self.usm_k1d = usm_kernel_1d(self.opt.usm_radius).to(self.device)
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
        draws = draw_batch(batch_size, self.generator, self.device, per_sample=self.opt.per_sample_params)
        lr_canvas = (canvas_hw[0] // self.scale, canvas_hw[1] // self.scale)
        return [sample_parameters(d, self.opt, lr_canvas, self.opt.gt_size // self.scale) for d in draws]

    # ---------------------------------------------------------------------------------- geometry
    def plan(self, prm, canvas_hw):
        """Per-axis stage sizes and windows for one sample (adds them to ``prm``; see :func:`.geometry.plan`)."""
        return plan(prm, canvas_hw, self.scale, self.opt.gt_size,
                    self.opt.context if self.opt.crop_before_degrade else None)

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

    def degrade(self, gt, kernel1, kernel2, sinc_kernel, params, sharpen=True):
        """Run the pipeline on GT canvases with planned ``params``; returns (lq, gt, gt_usm) patches.

        The LR is degraded from the USM-sharpened GT when the ``gt_usm`` option is on and ``sharpen`` is
        true; ``sharpen=False`` degrades the canvases as given (for canvases that are sharpened already).
        """
        s, g = self.scale, self.opt.gt_size
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
        usm = usm_sharpen_valid(region, self.usm_k1d, self.opt.usm_weight, self.opt.usm_threshold)
        source = usm if self.opt.gt_usm and sharpen else region[..., 2 * ru:-2 * ru, 2 * ru:-2 * ru]  # w0 +- r1
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
        return self._run(batch, current_iter)

    def _run(self, batch, current_iter, sharpen=True, write_grid=True):
        """The degradation of ``batch``; ``sharpen`` as in :meth:`degrade`, ``write_grid`` for debug grids."""
        gt = batch['gt'].to(self.device, non_blocking=True).float()
        b, _, h, w = gt.shape
        g = self.opt.gt_size
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
        lq, gt_p, usm_p = self.degrade(gt, k1, k2, ks, params, sharpen)
        if self.opt.queue_size:
            lq, gt_p, usm_p = self._dequeue_and_enqueue(lq, gt_p, usm_p)
        if write_grid:
            self._maybe_write_grid(lq, usm_p if self.opt.gt_usm and sharpen else gt_p, current_iter)
        return {'lq': lq.contiguous(), 'gt': gt_p.contiguous(), 'gt_usm': usm_p.contiguous()}

    # ------------------------------------------------------------------------------------ replay
    @torch.no_grad()
    def replay(self, batch, state_before, targets, current_iter=None):
        """This degradation of ``batch`` again, with each sample's training target replaced by ``targets``.

        ``state_before`` is :meth:`state_dict` from just before ``batch`` was degraded. The patch positions
        are re-drawn from it, ``targets`` (B, 3, gt_size, gt_size) are pasted there into the GT canvases (the
        real canvas around them feeds the blur and resize footprints, as for the real pair), and the
        degradation runs again from the same state: same kernels, crops and draws. Returns :meth:`__call__`'s
        dict for the pasted canvases (no debug grid); the generator and pool are put back afterwards.

        With ``gt_usm`` the targets are USM-sharpened GT (what the LR was degraded from): the canvas is
        sharpened whole, the targets are pasted into it and the replay skips its own sharpening (the same
        values wherever they reach the LR patch, up to float rounding).
        """
        if self.opt.queue_size:
            raise ValueError('HighOrderDegradation.replay: with degradation.queue_size > 0 the LR of a batch '
                             "comes from another iteration's degradation, which cannot be replayed")
        canvas = batch['gt'].to(self.device, non_blocking=True).float()
        sharpened = self.opt.gt_usm
        if sharpened:
            canvas = usm_sharpen(canvas, self.usm_k1d, self.opt.usm_weight, self.opt.usm_threshold)
        size = targets.shape[-1]
        after = self.state_dict()
        try:
            self.load_state_dict(state_before)
            origins = self.sample_params(canvas.shape[0], tuple(canvas.shape[-2:]))
            pasted = canvas.clone()
            for i, origin in enumerate(origins):
                top, left = origin['top'] * self.scale, origin['left'] * self.scale
                pasted[i, :, top:top + size, left:left + size] = targets[i].to(pasted)
            self.load_state_dict(state_before)
            return self._run({**batch, 'gt': pasted}, current_iter, sharpen=not sharpened, write_grid=False)
        finally:
            self.load_state_dict(after)

    def redegrader(self, batch, current_iter=None):
        """``redegrade(targets) -> lq``: :meth:`replay` from the state now, so call it just *before* degrading
        ``batch``: ``redegrade = deg.redegrader(batch, it); out = deg(batch, it); lq_of_mu = redegrade(mu)``.
        """
        state = self.state_dict()

        def redegrade(targets):
            return self.replay(batch, state, targets, current_iter)['lq']

        return redegrade

    # ------------------------------------------------------------------------------------ the pool
    def _dequeue_and_enqueue(self, lq, gt, gt_usm):
        """Real-ESRGAN's training-pair pool: fill it, then swap each batch with a random slice of it."""
        b = lq.size(0)
        size = self.opt.queue_size
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
        every = self.opt.debug_grid.every
        if not every or current_iter is None or current_iter % every:
            return
        if self.debug_dir is None:
            if not self._warned_debug:
                warnings.warn('degradation.debug_grid.every is set but debug_dir is not; no grid written')
                self._warned_debug = True
            return
        save_pair_grid(lq, gt, os.path.join(self.debug_dir, f'degradation_{current_iter}.png'),
                       self.opt.debug_grid.num)


# bound here by name so that a degradation's options pickle (e.g. into a spawned worker)
DegradationOptions = options_class(HighOrderDegradation.OPTIONS, 'DegradationOptions', module=__name__)
