"""ECO, Empirical Centroid-oriented Optimization (Lee & Heo, AAAI 2024; docs/methods.md §2).

Early in training the targets are replaced by a frozen pretrained teacher's outputs, which
are noise-free "empirical centroids", and the training pair moves to the real one along a
schedule:

    μ = teacher(LR)                       (no_grad, clamped to [0, 1])
    lr = (1-a)·D(μ) + a·LR,   gt = (1-a)·μ + a·GT,   a = a(iteration) from 0 to 1

D is the operator that made LR from GT:

* with the training degradation (blind SR), D is the step context's ``redegrade``: the
  degradation replays the *same* sampled draw (crop, blur, resize, noise, JPEG) on μ and
  leaves its random stream as it was (``HighOrderDegradation.replay``);
* without one (``ctx.redegrade`` is None: paired bicubic data), D is MATLAB bicubic
  downsampling with antialiasing, i.e. basicsr's ``imresize`` (``matlab_bicubic_resize``),
  batched on the device.

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

from ..archs import build_network
from ..archs.weights import load_weights, pick_param_key
from ..utils.checkpoint import load_checkpoint
from ..utils.schema import Field, OptionError
from ..utils.typed import as_plain
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
        deg = full_opt['degradation']
        if _degradation_queue_size(deg):
            raise OptionError(f'{where}: ECO cannot be used with degradation.queue_size > 0: the queue pairs an LR '
                              'with another iteration\'s degradation, which D cannot replay; set queue_size: 0')
        if opt['cache_teacher'] and deg:
            raise OptionError(f'{where}.cache_teacher: the LR inputs are re-degraded every iteration, so teacher '
                              'outputs never repeat; set cache_teacher: false')

    def __init__(self, opt, sites, total_iter, network_opt=None):
        super().__init__(opt, sites, total_iter, network_opt)
        self.schedule = self.opt.schedule
        self.schedule_iters = self.opt.schedule_iters or total_iter
        self.cache = OrderedDict()
        self.teacher_forwards = 0
        # a plain attribute, outside the module tree (see the module docstring)
        self.__dict__['teacher'] = None

    def real_weight(self, current_iter):
        return real_pair_weight(current_iter / self.schedule_iters, self.schedule)

    # ------------------------------------------------------------------ teacher
    def build_teacher(self, device):
        net_opt = as_plain(self.opt.teacher_network) or self.network_opt
        if net_opt is None:
            raise OptionError('train.regularizers: ECO needs teacher_network (or the network options of the student)')
        teacher = build_network(net_opt)
        path = self.opt.teacher_path
        ckpt = load_checkpoint(path)
        wanted = self.opt.teacher_param_key
        fallback = 'params' if wanted != 'params' else 'params_ema'
        key = pick_param_key(ckpt, wanted, fallback)
        if key is None:
            raise OptionError(f"train.regularizers: ECO teacher_path '{path}' has no '{wanted}' or '{fallback}' key "
                              f'(keys: {list(ckpt)})')
        if key != wanted:
            get_root_logger().warning(f"ECO: '{path}' has no '{wanted}'; using '{key}'")
        load_weights(teacher, ckpt[key], strict=True, source=f'ECO teacher {path} [{key}]')
        teacher.eval().requires_grad_(False).to(device)
        get_root_logger().info(f'ECO: frozen teacher {type(teacher).__name__} from {path} [{key}]')
        self.__dict__['teacher'] = teacher
        return teacher

    def teacher_output(self, lq, batch):
        teacher = self.teacher if self.teacher is not None else self.build_teacher(lq.device)
        keys = self._cache_keys(lq, batch) if self.opt.cache_teacher else None
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
                while len(self.cache) > self.opt.cache_size:
                    self.cache.popitem(last=False)
        return torch.stack([self.cache[k] for k in keys]).to(lq.device)

    @staticmethod
    def _cache_keys(lq, batch):
        # the LR patch's own bytes identify it (a path alone would merge different crops
        # and flips of one image); the path guards against equal patches of different images
        batch = batch or {}
        paths = batch.get('lq_path') or batch.get('gt_path') or [''] * lq.shape[0]
        pixels = lq.detach().cpu().contiguous()
        return [(paths[i], hashlib.blake2b(pixels[i].numpy().tobytes(), digest_size=16).hexdigest())
                for i in range(lq.shape[0])]

    # ------------------------------------------------------------------ D
    @staticmethod
    def degrade(mu, ctx):
        """D(μ): the operator that made ``ctx.lq`` from the GT, applied to μ."""
        if ctx.redegrade is not None:
            return ctx.redegrade(mu)
        lr = matlab_bicubic_resize(mu, 1 / ctx.scale)
        if lr.shape != ctx.lq.shape:
            raise RuntimeError(f'ECO: bicubic D(μ) has shape {tuple(lr.shape)} but the LR input has '
                               f'{tuple(ctx.lq.shape)}; GT patches must be multiples of the scale')
        return lr

    # ------------------------------------------------------------------ the hook
    def transform_batch(self, ctx):
        lq, gt = ctx.lq, ctx.gt
        a = self.real_weight(ctx.iteration)
        if a >= 1.0 or not self.training:
            return lq, gt
        mu = self.teacher_output(lq, ctx.batch)
        lr_synthetic = self.degrade(mu, ctx)
        if a <= 0.0:
            return lr_synthetic, mu
        return torch.lerp(lr_synthetic, lq, a), torch.lerp(mu, gt, a)

    def extra_repr(self):
        return (f"teacher_path={self.opt.teacher_path}, schedule={self.schedule}, "
                f'schedule_iters={self.schedule_iters}, cache_teacher={self.opt.cache_teacher}')
