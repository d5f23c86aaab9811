"""EATS, the Erase-and-Awaken Training Strategy (OpenReview my0RqY48xz; no public code, see docs/methods.md §4).

Each training iteration draws a layer l among the participating sites (by default every
conv of the network but the last: head, body and tail, the paper's "all layers") and two
distinct channels of it, e (erased) and d (disruptor). The disrupted network f_θ' is the
same network with channel e of layer l's output replaced by a copy of channel d. With
``num_filters: k``, k such pairs (2k distinct channels) are erased in the same layer in the
same pass (the paper's filter-count ablation). The awakening loss pulls its output towards
plain bicubic upsampling,

    L_awa = L1(f_θ'(LR), bicubic↑(LR)),   total = L_pix + loss_weight · L_awa,

so that no single filter can be replaced by another without damage.

The disrupted pass shares everything before layer l with the normal pass. Instead of
recomputing it, the normal pass is recorded (module calls in start order, with their
outputs) and the disrupted pass returns the recorded output for every module call that
finished before layer l started; only the suffix from l on is computed. This needs no
knowledge of the architecture: see :class:`CallTape`.

With ``awaken_fraction`` < 1 only the first ⌈f·B⌉ samples of the (already shuffled) batch
take the disrupted pass: L_awa is then an unbiased estimate of the whole-batch loss at a
fraction of its cost, and replayed prefix outputs are sliced to those samples.
"""
import math

import torch
import torch.nn.functional as F

from ..data import sample_seed
from ..utils.misc import unwrap
from ..utils.schema import Field, OptionError
from .base import REGULARIZER_REGISTRY, Regularizer, check_site_patterns
from .site_transform import resolve_sites, sites_field


# ----------------------------------------------------------------------------- call recording
class _Call:
    __slots__ = ('module', 'subtree_end', 'output', 'versions')

    def __init__(self, module):
        self.module = module
        self.subtree_end = None  # index of the first call after this one's subtree; None while open
        self.output = None
        self.versions = None


def _first_samples(value, keep, batch):
    """``value`` cut to its first ``keep`` samples, or None when it is not batch-first."""
    if isinstance(value, torch.Tensor):
        return value[:keep] if value.dim() > 0 and value.shape[0] == batch else None
    if isinstance(value, (tuple, list)):
        parts = [_first_samples(v, keep, batch) if isinstance(v, torch.Tensor) else v for v in value]
        if any(p is None and isinstance(v, torch.Tensor) for p, v in zip(parts, value)):
            return None
        return type(value)(parts)
    return value


def _tensor_versions(value):
    if isinstance(value, torch.Tensor):
        return (value._version, )
    if isinstance(value, (tuple, list)):
        return tuple(v._version if isinstance(v, torch.Tensor) else None for v in value)
    return ()


class CallTape:
    """Records the module calls of one forward and replays a prefix of them in a later forward.

    Record: every call of a taped module appends an entry in start order (so calls of a
    module used several times, e.g. a shared activation, are told apart by position) and,
    when it returns, its output and the version counters of its output tensors. Recording
    stops when the last module of ``split_modules`` starts: nothing after it can be reused.

    Replay up to split index s: the replayed forward makes the same calls in the same
    order, so a pointer walks the record. A call whose whole subtree ended before entry s
    started returns its recorded output and skips its subtree; an enclosing call (an
    ancestor of entry s) runs normally and its children are matched in turn; entry s and
    everything after run normally. Two checks keep this exact:

    * a recorded output whose version counter moved was changed in place later (e.g. a conv
      output that an ``inplace=True`` activation overwrote): that call is recomputed;
    * a call that is not the recorded one (control flow that differs between the passes)
      ends the replay, and the rest of the forward simply runs.

    A replay on the first ``keep`` samples of the recorded batch returns recorded outputs cut
    to those samples; an output whose first dimension is not the batch (e.g. attention
    windows, B·nW first) cannot be cut safely, so that call is recomputed instead.

    Replayed calls bypass the module's hooks too: their recorded output is already the
    hooked one, so site transforms (e.g. dropout masks) upstream of the split are shared
    with the normal pass rather than redrawn.
    """

    IDLE, RECORD, REPLAY = 0, 1, 2

    def __init__(self):
        self.calls = []
        self.mode = self.IDLE
        self.pending = set()  # modules whose first call has not started yet
        self.first_call = {}  # module -> index of its first call
        self.pointer = 0
        self.split = 0
        self.replayed = 0
        self.diverged = False
        self.keep = None
        self.batch = None

    def start_recording(self, split_modules):
        self.calls = []
        self.first_call = {}
        self.pending = set(split_modules)
        self.mode = self.RECORD

    def start_replay(self, split_module, keep=None, batch=None):
        """Replay up to ``split_module``'s first call; ``keep``: only the first ``keep`` of ``batch`` samples."""
        if split_module not in self.first_call:
            raise RuntimeError('the recorded forward never called the erased layer')
        self.split = self.first_call[split_module]
        self.keep, self.batch = (keep, batch) if keep is not None and keep < batch else (None, None)
        self.pointer = 0
        self.replayed = 0
        self.diverged = False
        self.mode = self.REPLAY

    def stop(self):
        self.mode = self.IDLE

    def clear(self):
        self.stop()
        self.calls = []
        self.first_call = {}

    def __call__(self, module, run, args, kwargs):
        if self.mode == self.RECORD:
            return self._record(module, run, args, kwargs)
        if self.mode == self.REPLAY:
            return self._replay(module, run, args, kwargs)
        return run(*args, **kwargs)

    def _record(self, module, run, args, kwargs):
        entry = _Call(module)
        self.first_call.setdefault(module, len(self.calls))
        self.calls.append(entry)
        if module in self.pending:
            self.pending.discard(module)
            if not self.pending:
                self.mode = self.IDLE
        output = run(*args, **kwargs)
        if self.mode == self.RECORD:
            entry.subtree_end = len(self.calls)
            entry.output = output
            entry.versions = _tensor_versions(output)
        return output

    def _replay(self, module, run, args, kwargs):
        index = self.pointer
        if index >= self.split or self.calls[index].module is not module:
            self.diverged = index < self.split
            self.mode = self.IDLE
            return run(*args, **kwargs)
        entry = self.calls[index]
        end = entry.subtree_end
        if end is not None and end <= self.split and _tensor_versions(entry.output) == entry.versions:
            output = entry.output if self.keep is None else _first_samples(entry.output, self.keep, self.batch)
            if output is not None:
                self.pointer = end
                self.replayed += 1
                return output
        self.pointer = index + 1
        return run(*args, **kwargs)


_TAPED_CLASSES = {}


def _taped_call(self, *args, **kwargs):
    tape = self.__dict__['_call_tape']
    return tape(self, super(type(self), self).__call__, args, kwargs)


def _taped_class(cls):
    # Python looks special methods up on the type, so a subclass overriding __call__ is
    # the way to intercept a module's calls (hooks included) without touching its code.
    taped = _TAPED_CLASSES.get(cls)
    if taped is None:
        taped = type(cls.__name__, (cls, ), {'__call__': _taped_call, '__module__': cls.__module__})
        _TAPED_CLASSES[cls] = taped
    return taped


def attach_tape(root, tape):
    """Route every call of ``root``'s modules through ``tape``; returns an undo list."""
    attached = []
    for module in root.modules():
        if '_call_tape' in module.__dict__:
            continue
        original = module.__class__
        module.__dict__['_call_tape'] = tape
        module.__class__ = _taped_class(original)
        attached.append((module, original))
    return attached


def detach_tape(attached):
    for module, original in attached:
        module.__class__ = original
        del module.__dict__['_call_tape']


# ----------------------------------------------------------------------------- the regularizer
#: every conv whose output is a feature: the convs before the body, inside it and after it (not the last conv)
ALL_LAYERS = ['head.*', 'blocks.*.conv.*', 'tail.*']
#: the body convs only (this framework's default before the head and tail sites existed)
BODY_LAYERS = ['blocks.*.conv.*']


def _channel_list(channels):
    return [int(channels)] if isinstance(channels, int) else [int(c) for c in channels]


@REGULARIZER_REGISTRY.register()
class EATS(Regularizer):
    """Awakening loss on a second pass in which one channel of one layer is overwritten by another."""
    OPTIONS = {
        'layers': sites_field(ALL_LAYERS, doc="participating layers (site patterns); default every conv but the "
                              "last (head, body, tail); ['blocks.*.conv.*']: the body convs only"),
        'layer_ratio': Field(float, 1.0, min=0.0, max=1.0,
                             doc='keep the shallowest ceil(ratio·L) of the L participating layers'),
        'num_pairs': Field(int, 1, min=1, doc='disrupted passes per iteration, each with its own layer and channels; '
                           'L_awa is their mean'),
        'num_filters': Field(int, 1, min=1, doc='(erased, disruptor) channel pairs erased together in the one '
                             'layer of a disrupted pass (the paper: 1; its ablation: 1-5)'),
        'loss_weight': Field(float, 1.0, min=0.0, doc='λ of the awakening loss'),
        'reuse_prefix': Field(bool, True,
                              doc='reuse the normal pass before the erased layer (exact); false: full second pass'),
        'awaken_fraction': Field(float, 1.0, min=0.0, max=1.0,
                                 doc='share of the batch (its first ceil(f·B) samples) that takes the disrupted '
                                 'pass; 1.0 = the whole batch, as in the paper'),
    }

    @classmethod
    def check_sites(cls, opt, sites, where):
        check_site_patterns(cls.__name__, opt['layers'], sites, where, 'layers')
        for key in ('layer_ratio', 'awaken_fraction'):
            if opt[key] <= 0:
                raise OptionError(f"{where}.{key}: {opt[key]!r} must be in (0, 1]")
        need = 2 * opt['num_filters']
        for site in resolve_sites(sites, opt['layers']):
            if site.num_channels() < need:
                raise OptionError(f"{where}.layers: EATS with num_filters {opt['num_filters']} needs {need} channels "
                                  f"per layer, but {sites.arch}'s '{site.name}' has {site.num_channels()}")

    @classmethod
    def check_compile(cls, opt, where):
        if opt['reuse_prefix']:
            raise OptionError(f'{where}: EATS with reuse_prefix: true cannot be compiled (train.compile): its call '
                              "tape records the module calls of an eager forward, which a compiled graph does not "
                              'make, and each drawn layer would recompile it. Set train.compile: false, or '
                              'reuse_prefix: false (the disrupted pass then runs in full, eagerly)')

    def __init__(self, opt, sites, total_iter, network_opt=None):
        super().__init__(opt, sites, total_iter, network_opt)
        layers = resolve_sites(sites, self.opt.layers)
        self.layers = layers[:max(1, math.ceil(self.opt.layer_ratio * len(layers)))]
        self.channels = [site.num_channels() for site in self.layers]
        self.num_pairs = self.opt.num_pairs
        self.num_filters = self.opt.num_filters
        self.loss_weight = self.opt.loss_weight
        self.reuse_prefix = self.opt.reuse_prefix
        self.awaken_fraction = self.opt.awaken_fraction
        self.seed = 0
        self.pairs = []
        self.tape = CallTape()
        self._attached = []

    def draw_pairs(self, current_iter):
        """``num_pairs`` draws (layer index, erased channels, disruptor channels) for this iteration.

        Each draw erases ``num_filters`` channels of one layer, each overwritten by its own disruptor;
        the 2·num_filters channels are distinct (erased e_i and disruptor d_i are drawn in turn, uniformly
        among the channels not drawn yet), so no erased channel is copied from another erased one.
        Drawn from a generator seeded by (seed, iteration) only, so every DDP rank draws the same and
        a resumed run draws what the uninterrupted one would have.
        """
        gen = torch.Generator().manual_seed(sample_seed('EATS', self.seed, current_iter))
        pairs = []
        for _ in range(self.num_pairs):
            layer = int(torch.randint(len(self.layers), (), generator=gen))
            free = list(range(self.channels[layer]))
            erased, disruptors = [], []
            for _ in range(self.num_filters):
                erased.append(free.pop(int(torch.randint(len(free), (), generator=gen))))
                disruptors.append(free.pop(int(torch.randint(len(free), (), generator=gen))))
            pairs.append((layer, tuple(erased), tuple(disruptors)))
        return pairs

    def transform_batch(self, ctx):
        if not self.training:
            return ctx.lq, ctx.gt
        self.seed = ctx.seed
        self.pairs = self.draw_pairs(ctx.iteration)
        if self.reuse_prefix:
            self._start_recording(ctx.net)
        return ctx.lq, ctx.gt

    def _start_recording(self, net):
        self._release()
        self._attached = attach_tape(unwrap(net), self.tape)
        self.tape.start_recording({self.layers[layer].module for layer, _, _ in self.pairs})

    def _release(self):
        self.tape.clear()
        detach_tape(self._attached)
        self._attached = []

    def extra_losses(self, ctx, output):
        if not self.training:
            return {}
        root = unwrap(ctx.net)  # the disrupted pass bypasses DDP; its gradients still sync
        lq = ctx.lq
        pairs = self.pairs or self.draw_pairs(ctx.iteration)
        recorded = bool(self._attached)
        self.tape.stop()
        keep = self.awakened_samples(lq.shape[0])
        try:
            target = F.interpolate(lq[:keep], size=output.shape[-2:], mode='bicubic', align_corners=False).clamp(0, 1)
            losses = [F.l1_loss(self.disrupted_forward(root, lq, *pair, replay=recorded, keep=keep), target)
                      for pair in pairs]
        finally:
            self._release()
            self.pairs = []
        return {'l_awa': self.loss_weight * sum(losses) / len(losses)}

    def awakened_samples(self, batch):
        return max(1, math.ceil(self.awaken_fraction * batch))

    def disrupted_forward(self, root, lq, layer, erased, disruptor, replay=True, keep=None):
        """f_θ'(lq[:keep]): ``root`` with channel(s) ``erased`` of layer ``layer``'s output replaced by ``disruptor``.

        ``erased`` and ``disruptor`` are channel indices or equal-length sequences of them (erased[i] takes
        a copy of disruptor[i]; no erased channel may be a disruptor). With ``replay``, ``lq`` must be the
        batch of the recorded normal pass.
        """
        batch = lq.shape[0]
        keep = batch if keep is None else keep
        site = self.layers[layer]
        erased, disruptor = _channel_list(erased), _channel_list(disruptor)
        if len(erased) != len(disruptor) or set(erased) & set(disruptor) or len(set(erased)) != len(erased):
            raise ValueError(f'EATS: erased channels {erased} and disruptors {disruptor} must pair up one to one, '
                             'with no erased channel among the disruptors')

        def erase(feat):
            return torch.index_copy(feat, 1, torch.tensor(erased, device=feat.device),
                                    feat[:, torch.tensor(disruptor, device=feat.device)])

        handle = site.register_transform(erase)
        try:
            if replay:
                self.tape.start_replay(site.module, keep=keep, batch=batch)
            out = root(lq[:keep])
        finally:
            self.tape.stop()
            handle.remove()
        return out

    def extra_repr(self):
        return (f'layers={len(self.layers)} ({self.layers[0].name} .. {self.layers[-1].name}), '
                f'num_pairs={self.num_pairs}, num_filters={self.num_filters}, loss_weight={self.loss_weight}, '
                f'reuse_prefix={self.reuse_prefix}, '
                f'awaken_fraction={self.awaken_fraction}')
