"""ECO, Empirical Centroid-oriented Optimization (Lee & Heo, AAAI 2024; docs/methods.md §2).

Early in training the targets are replaced by a frozen pretrained teacher's outputs, which
are noise-free "empirical centroids", and the training pair moves to the real one along a
schedule:

    μ = teacher(LR)                       (no_grad, clamped to [0, 1])
    lr = (1-a)·D(μ) + a·LR,   gt = (1-a)·μ + a·GT,   a = a(iteration) from 0 to 1

D is the operator that made LR from GT:

* with the model's training degradation (blind SR), D replays the *same* sampled
  degradation: the degradation's generator is rewound to its state from just before the
  real pair was made and the degradation runs again on the batch with the target patch
  replaced by μ (the kernels travel in the batch), so the same crop, blur, resize, noise
  and JPEG draws apply; the generator is then put back, so the training stream does not
  change. This relies on ``HighOrderDegradation.sample_params`` (its first draw) giving
  each patch's LR origin as ``top``/``left``, and, with ``gt_usm``, on its ``usm_sharpen``;
* without one (paired bicubic data), D is MATLAB bicubic downsampling with antialiasing,
  i.e. basicsr's ``imresize`` (``matlab_bicubic_resize``), batched on the device.

The teacher is kept outside the module tree on purpose: it is not a parameter of the net,
so it is never optimised, averaged into the EMA, saved with the student or wrapped in DDP.
The authors report collapse when the teacher trains along or is the student's EMA.
"""
import hashlib
import math
from collections import OrderedDict

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.matlab_functions import calculate_weights_indices

from ..utils.schema import Field, OptionError
from .base import REGULARIZER_REGISTRY, Regularizer


# ----------------------------------------------------------------------------- MATLAB bicubic
def _resize_matrix(in_length, scale, antialiasing, dtype, device):
    """(out, in) matrix of MATLAB ``imresize`` bicubic weights along one axis, borders folded in.

    basicsr pads symmetrically (edge pixel repeated) and then takes weighted windows; folding
    the padded indices back onto the input gives the same sums as one matrix product.
    """
    out_length = math.ceil(in_length * scale)
    weights, indices, sym_before, _ = calculate_weights_indices(in_length, out_length, scale, 'cubic', 4,
                                                                antialiasing)
    # basicsr's indices address the padded signal, whose first sym_before entries mirror the input
    source = indices.long() - sym_before
    source = torch.where(source < 0, -source - 1, source)
    source = torch.where(source >= in_length, 2 * in_length - 1 - source, source)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, source, weights.double())
    return matrix.to(dtype=dtype, device=device)


def matlab_bicubic_resize(img, scale, antialiasing=True):
    """basicsr/MATLAB ``imresize`` (bicubic) of an (..., H, W) tensor; the output is not rounded or clamped."""
    rows = _resize_matrix(img.shape[-2], scale, antialiasing, img.dtype, img.device)
    cols = _resize_matrix(img.shape[-1], scale, antialiasing, img.dtype, img.device)
    return rows @ img @ cols.transpose(0, 1)


# ----------------------------------------------------------------------------- schedule
def real_pair_weight(progress, schedule='sigmoid'):
    """Weight a of the real pair at ``progress`` t = iteration / schedule_iters.

    sigmoid (the code's): s = clip(1.2(σ(10(t-0.5)) - 0.5), -0.5, 0.5) + 0.5, which is 0 up
    to t ≈ 0.26 and 1 from t ≈ 0.74; linear: a = t. Both are clipped to [0, 1].
    """
    t = min(max(progress, 0.0), 1.0)
    if schedule == 'linear':
        return t
    z = 10.0 * (t - 0.5)
    return min(max(1.2 * (1.0 / (1.0 + math.exp(-z)) - 0.5), -0.5), 0.5) + 0.5


def _degradation_queue_size(deg_opt):
    return int((deg_opt or {}).get('queue_size') or 0)


@REGULARIZER_REGISTRY.register()
class ECO(Regularizer):
    """Train on a mix of a frozen teacher's synthetic pair and the real pair, moving from synthetic to real."""
    #: asks BlindSRModel.feed_data to keep the degradation's generator state of each batch
    NEEDS_DEGRADATION_REPLAY = True

    OPTIONS = {
        'teacher_path': Field(str, kind='file', doc='checkpoint of the frozen pretrained teacher (.pth)'),
        'teacher_param_key': Field(str, 'params_ema',
                                   doc="weights inside the checkpoint; falls back to 'params' when absent"),
        'teacher_network': Field(dict, None, doc='teacher architecture {type, ...}; default: network_g'),
        'schedule': Field(str, 'sigmoid', choices=('sigmoid', 'linear'), doc='how a goes from 0 to 1'),
        'schedule_iters': Field(int, None, min=1, doc='iterations over which a goes from 0 to 1; default total_iter'),
        'cache_teacher': Field(bool, False,
                               doc='keep teacher outputs per LR patch (fixed LR inputs only; not with a degradation)'),
        'cache_size': Field(int, 4096, min=1, doc='most teacher outputs kept (oldest dropped first)'),
    }

    @classmethod
    def check_options(cls, opt, full_opt, where):
        deg = full_opt.get('degradation')
        if _degradation_queue_size(deg):
            raise OptionError(f'{where}: ECO cannot be used with degradation.queue_size > 0: the queue pairs an LR '
                              'with another iteration\'s degradation, which D cannot replay; set queue_size: 0')
        if opt.get('cache_teacher') and deg:
            raise OptionError(f'{where}.cache_teacher: the LR inputs are re-degraded every iteration, so teacher '
                              'outputs never repeat; set cache_teacher: false')

    def __init__(self, opt, sites, total_iter):
        super().__init__(opt, sites, total_iter)
        self.schedule = opt['schedule']
        self.schedule_iters = opt.get('schedule_iters') or total_iter
        self.cache = OrderedDict()
        self.teacher_forwards = 0
        # a plain attribute, outside the module tree (see the module docstring)
        self.__dict__['teacher'] = None

    def real_weight(self, current_iter):
        return real_pair_weight(current_iter / self.schedule_iters, self.schedule)

    # ------------------------------------------------------------------ teacher
    def build_teacher(self, model):
        from ..archs import build_network
        from ..models.sr_model import load_weights  # sr_model imports this package
        from ..utils.checkpoint import load_checkpoint

        net_opt = self.opt.get('teacher_network') or model.opt['network_g']
        teacher = build_network(net_opt)
        path = self.opt['teacher_path']
        ckpt = load_checkpoint(path)
        key = self.opt['teacher_param_key']
        if key not in ckpt:
            fallback = 'params' if key != 'params' else 'params_ema'
            if fallback not in ckpt:
                raise OptionError(f"train.regularizers: ECO teacher_path '{path}' has no '{key}' or '{fallback}' key "
                                  f'(keys: {list(ckpt)})')
            get_root_logger().warning(f"ECO: '{path}' has no '{key}'; using '{fallback}'")
            key = fallback
        load_weights(teacher, ckpt[key], strict=True, source=f'ECO teacher {path} [{key}]')
        teacher.eval().requires_grad_(False).to(model.device)
        get_root_logger().info(f'ECO: frozen teacher {type(teacher).__name__} from {path} [{key}]')
        self.__dict__['teacher'] = teacher
        return teacher

    def _check_model(self, model):
        self.check_options(self.opt, model.opt, 'train.regularizers (ECO)')
        if model.degradation is None:
            return
        if getattr(model, 'degradation_state', None) is None:
            raise RuntimeError('ECO needs the degradation state of the batch; feed batches with '
                               'BlindSRModel.feed_data')
        if not hasattr(model.degradation, 'sample_params'):
            raise RuntimeError(f'ECO cannot replay {type(model.degradation).__name__}: it has no sample_params() '
                               'giving the patch positions it draws')

    def teacher_output(self, lq, model):
        teacher = self.teacher if self.teacher is not None else self.build_teacher(model)
        keys = self._cache_keys(lq, model) if self.opt['cache_teacher'] else None
        if keys is None:
            with torch.no_grad():
                self.teacher_forwards += 1
                return teacher(lq).clamp_(0, 1)
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            with torch.no_grad():
                self.teacher_forwards += 1
                fresh = teacher(lq[missing]).clamp_(0, 1)
            for i, out in zip(missing, fresh):
                self.cache[keys[i]] = out.cpu()
                while len(self.cache) > self.opt['cache_size']:
                    self.cache.popitem(last=False)
        return torch.stack([self.cache[k] for k in keys]).to(lq.device)

    @staticmethod
    def _cache_keys(lq, model):
        # the LR patch's own bytes identify it (a path alone would merge different crops
        # and flips of one image); the path guards against equal patches of different images
        batch = getattr(model, 'batch', None) or {}
        paths = batch.get('lq_path') or batch.get('gt_path') or [''] * lq.shape[0]
        pixels = lq.detach().cpu().contiguous()
        return [(paths[i], hashlib.blake2b(pixels[i].numpy().tobytes(), digest_size=16).hexdigest())
                for i in range(lq.shape[0])]

    # ------------------------------------------------------------------ D
    def degrade(self, mu, lq, model, current_iter):
        """D(μ): the operator that made ``lq`` from the GT, applied to μ."""
        if model.degradation is None:
            lr = matlab_bicubic_resize(mu, 1 / model.opt['scale'])
            if lr.shape != lq.shape:
                raise RuntimeError(f'ECO: bicubic D(μ) has shape {tuple(lr.shape)} but the LR input has '
                                   f'{tuple(lq.shape)}; GT patches must be multiples of the scale')
            return lr
        return self.replay_degradation(mu, model, current_iter)['lq']

    @staticmethod
    def replay_degradation(targets, model, current_iter):
        """The model's degradation of this iteration's batch with the training targets replaced by ``targets``.

        The degradation crops a GT patch out of each (larger) canvas at a position it draws and
        degrades a window around it. The patch positions are re-drawn from the saved state,
        ``targets`` are pasted there (the real canvas stays around them, so blur and resize
        footprints at the patch border see real image, as for the real pair), and the
        degradation runs again from the same state: same kernels, same draws.

        With ``gt_usm`` the targets are USM-sharpened GT (what the LR was degraded from), so
        the canvas is sharpened first, the targets are pasted into it, and the replay skips
        its own sharpening; sharpening the whole canvas gives the window the degradation
        sharpens the same values wherever they reach the LR patch.
        """
        deg = model.degradation
        canvas = model.batch['gt']
        sharpen = bool(getattr(deg, 'opt', {}).get('gt_usm'))
        if sharpen:
            from ..data.degradation import usm_sharpen
            canvas = usm_sharpen(canvas.to(deg.device).float(), deg.usm_k1d, deg.opt['usm_weight'],
                                 deg.opt['usm_threshold'])
        size = targets.shape[-1]
        after = deg.state_dict()
        try:
            deg.load_state_dict(model.degradation_state)
            origins = deg.sample_params(canvas.shape[0], tuple(canvas.shape[-2:]))
            pasted = canvas.clone()
            for i, origin in enumerate(origins):
                top, left = origin['top'] * deg.scale, origin['left'] * deg.scale
                pasted[i, :, top:top + size, left:left + size] = targets[i].to(pasted)
            deg.load_state_dict(model.degradation_state)
            if sharpen:
                deg.opt['gt_usm'] = False
            with torch.no_grad():
                return deg({**model.batch, 'gt': pasted}, current_iter)
        finally:
            if sharpen:
                deg.opt['gt_usm'] = True
            deg.load_state_dict(after)

    # ------------------------------------------------------------------ the hook
    def transform_batch(self, lq, gt, current_iter, context):
        a = self.real_weight(current_iter)
        if a >= 1.0 or not self.training:
            return lq, gt
        model = context['model']
        if self.teacher is None:
            self._check_model(model)
        mu = self.teacher_output(lq, model)
        lr_synthetic = self.degrade(mu, lq, model, current_iter)
        if a <= 0.0:
            return lr_synthetic, mu
        return torch.lerp(lr_synthetic, lq, a), torch.lerp(mu, gt, a)

    def extra_repr(self):
        return (f"teacher_path={self.opt['teacher_path']}, schedule={self.schedule}, "
                f'schedule_iters={self.schedule_iters}, cache_teacher={self.opt["cache_teacher"]}')
