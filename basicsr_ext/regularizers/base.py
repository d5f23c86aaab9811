"""The regularizer contract used by the model class.

A regularizer is an ``nn.Module`` built from one entry of ``train.regularizers`` and the
sites of the trained network. The model calls, each training iteration:

1. ``on_iter_start(current_iter)``: update schedules (computed from the iteration, never
   accumulated, so a resumed run is identical);
2. ``transform_batch(lq, gt, current_iter, context) -> (lq, gt)``: change the training pair
   (ECO mixes in teacher outputs);
3. the forward pass of the network, during which the site transforms act;
4. ``extra_losses(net, lq, gt, output, current_iter) -> {name: loss}``: added to the total
   loss (EATS's awakening loss).

Validation calls the classmethods ``check_sites(opt, sites, where)`` (the sites the entry
names exist in the arch) and ``check_options(opt, full_opt, where)`` (the entry fits the
rest of the options). A class attribute ``NEEDS_DEGRADATION_REPLAY = True`` makes
``BlindSRModel.feed_data`` keep the degradation's state from before each batch
(``model.degradation_state``), so the batch's degradation can be replayed.

Regularizer modules are attached to the network as the submodule ``regularizers`` before
any DDP wrapping, so their learnable parameters are optimised and synchronised like any
other; ``save_network`` stores them under ``params_regularizers``, keeping ``params``
loadable into the bare architecture.
"""
from typing import Dict, Tuple

import torch
from basicsr.utils.registry import Registry
from torch import nn

from ..utils.schema import Field, OptionError

REGULARIZER_REGISTRY = Registry('regularizer')


class Regularizer(nn.Module):
    #: option schema of this regularizer (``type`` excluded)
    OPTIONS: Dict[str, Field] = {}
    #: names of regularizer types this one cannot be combined with
    INCOMPATIBLE: Tuple[str, ...] = ()

    def __init__(self, opt: dict, sites, total_iter: int):
        super().__init__()
        self.opt = opt
        self.total_iter = total_iter

    @classmethod
    def check_sites(cls, opt: dict, sites, where: str):
        """Raise OptionError if ``opt`` names sites that ``sites`` lacks. Default: resolve ``opt['sites']``."""
        check_site_patterns(cls.__name__, opt.get('sites'), sites, where, 'sites')

    @classmethod
    def check_options(cls, opt: dict, full_opt: dict, where: str):
        """Raise OptionError if ``opt`` does not fit the rest of the options (data, degradation). Default: no check."""

    def on_iter_start(self, current_iter: int):
        pass

    def transform_batch(self, lq: torch.Tensor, gt: torch.Tensor, current_iter: int, context: dict):
        return lq, gt

    def extra_losses(self, net, lq, gt, output, current_iter: int) -> Dict[str, torch.Tensor]:
        return {}


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
