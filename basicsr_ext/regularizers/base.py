"""The regularizer contract: what a regularizer sees of a training step, and when.

A regularizer is an ``nn.Module`` built from one entry of ``train.regularizers``, the sites
of the trained network and the network's options. Each training iteration the model calls:

1. ``on_iter_start(current_iter)``: update schedules (computed from the iteration, never
   accumulated, so a resumed run is identical);
2. ``transform_batch(ctx) -> (lq, gt)``: change the training pair (ECO mixes in teacher outputs);
3. the forward pass of the network, during which the site transforms act;
4. ``extra_losses(ctx, output) -> {name: loss}``: added to the total loss (EATS's awakening loss).

``ctx`` is a :class:`StepContext`: the step's tensors, the raw batch, the scale, the bare
network, the iteration, the seed and, when the LR was made by the training degradation,
``redegrade(targets)``, which replays this batch's degradation draw on other targets. A
regularizer never sees the model.

Validation calls the classmethods ``check_sites(opt, sites, where)`` (the sites the entry
names exist in the arch) and ``check_options(opt, full_opt, where)`` (the entry fits the
rest of the options).

The model keeps the regularizers beside the network in one training wrapper
(:class:`~basicsr_ext.models.trainable.TrainableNetwork`), so their learnable parameters
are optimised and synchronised like any other while ``params`` stays the bare network.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from basicsr.utils.registry import Registry
from torch import nn

from ..utils.schema import Field, OptionError
from ..utils.typed import as_plain, typed_options


@dataclass(frozen=True)
class StepContext:
    """What a regularizer sees of one training step."""
    lq: torch.Tensor
    gt: torch.Tensor
    batch: Mapping  # the raw batch from the loader (paths, kernels, ...)
    scale: int
    net: nn.Module  # the bare architecture being trained (no DDP wrapper)
    iteration: int
    seed: int  # manual_seed of the run: draws derived from (seed, iteration) agree across ranks and resumes
    #: D(targets): this batch's training degradation replayed on ``targets`` (same crop, kernels, noise,
    #: JPEG); None when the LR inputs came from the dataset
    redegrade: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def with_pair(self, lq, gt):
        return StepContext(lq, gt, self.batch, self.scale, self.net, self.iteration, self.seed, self.redegrade)


REGULARIZER_REGISTRY = Registry('regularizer')


class Regularizer(nn.Module):
    #: option schema of this regularizer (``type`` excluded)
    OPTIONS: Dict[str, Field] = {}
    #: names of regularizer types this one cannot be combined with
    INCOMPATIBLE: Tuple[str, ...] = ()
    #: drops features at its sites: two such regularizers may be combined only on disjoint sites
    DROPS_FEATURES: bool = False

    def __init__(self, opt: dict, sites, total_iter: int, network_opt: Optional[dict] = None):
        super().__init__()
        # frozen and typed, defaults filled: subclasses read self.opt.p, never opt.get('p', default)
        self.opt = typed_options({k: v for k, v in as_plain(opt).items() if k != 'type'}, self.OPTIONS,
                                 f'{type(self).__name__}Options', type(self).__name__)
        self.total_iter = total_iter
        self.network_opt = network_opt  # network_g, for regularizers that build a network of the same kind

    @classmethod
    def check_sites(cls, opt: dict, sites, where: str):
        """Raise OptionError if ``opt`` names sites that ``sites`` lacks. Default: resolve ``opt['sites']``."""
        check_site_patterns(cls.__name__, opt.get('sites'), sites, where, 'sites')

    @classmethod
    def feature_sites(cls, opt: dict, sites) -> List[str]:
        """Names of the sites whose features this entry rewrites (default: none)."""
        return []

    @classmethod
    def check_options(cls, opt: dict, full_opt: dict, where: str):
        """Raise OptionError if ``opt`` does not fit the rest of the options (data, degradation). Default: no check."""

    @classmethod
    def check_compile(cls, opt: dict, where: str):
        """Raise OptionError naming this regularizer if it cannot train under ``train.compile``. Default: it can
        (site hooks and pre-forward transforms are traced into the compiled graph)."""

    def on_iter_start(self, current_iter: int):
        pass

    def transform_batch(self, ctx: StepContext) -> Tuple[torch.Tensor, torch.Tensor]:
        return ctx.lq, ctx.gt

    def extra_losses(self, ctx: StepContext, output: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {}


def combination_error(cls, opt, other_cls, other_opt, sites) -> Optional[str]:
    """Why two validated entries (``other`` listed first) cannot be combined, or None.

    The same type twice and pairs named in ``INCOMPATIBLE`` are rejected outright; two regularizers
    that drop features (``DROPS_FEATURES``) are rejected only when their sites overlap, since stacking two
    dropouts on one feature is a different method from either.
    """
    name, other = cls.__name__, other_cls.__name__
    if name == other or other in cls.INCOMPATIBLE or name in other_cls.INCOMPATIBLE:
        return f'{name} cannot be combined with {other}'
    if cls.DROPS_FEATURES and other_cls.DROPS_FEATURES:
        mine = cls.feature_sites(opt, sites)
        shared = [s for s in other_cls.feature_sites(other_opt, sites) if s in mine]
        if shared:
            listed = ', '.join(f"'{s}'" for s in shared)
            return (f'{name} and {other} both drop features at {sites.arch} site{"s" if len(shared) > 1 else ""} '
                    f'{listed}; two dropouts on one feature are a different method from either, so give them '
                    'disjoint sites')
    return None


def check_site_patterns(name, patterns, sites, where, key):
    """Raise OptionError naming the regularizer, the pattern and the arch when a pattern matches no site."""
    for pattern in _as_list(patterns):
        try:
            sites.select(pattern)
        except KeyError as err:
            raise OptionError(f"{where}.{key}: {name} needs site '{pattern}', which "
                              f'{sites.arch} lacks; {sites.arch} has: {err.args[0].split("sites are: ")[-1]}')


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
