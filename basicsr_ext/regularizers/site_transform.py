"""Shared machinery of the regularizers that transform features at named sites.

Not a regularizer itself (nothing here is registered): Dropout, AdaptiveDropout and
DropBlock derive from :class:`SiteTransformRegularizer`; EATS and DropConnect use
:func:`resolve_sites`.
"""
from typing import List

import torch

from ..utils.schema import Field, OptionError
from .base import Regularizer


def resolve_sites(sites, patterns) -> List:
    """The sites matching any of ``patterns``, each once, ordered shallow to deep."""
    depth = {name: i for i, name in enumerate(sites.names())}
    chosen = {}
    for pattern in patterns:
        for site in sites.select(pattern):
            chosen[site.name] = site
    return sorted(chosen.values(), key=lambda s: depth[s.name])


def check_drop_probability(value, where):
    # p = 1 would divide by zero in the inverted scaling 1/(1-p)
    if not 0.0 <= value < 1.0:
        raise OptionError(f'{where}: {value!r} must be in [0, 1)')


def drop_probability_field(default, doc):
    return Field(float, default, doc=doc, check=check_drop_probability)


def sites_field(default, doc='site patterns (see docs/regularizers.md), shallow to deep'):
    return Field(list, list(default), item=Field(str), doc=doc)


def channel_keep_mask(feat, p):
    """Bernoulli(1-p) mask of shape (N, C, 1, 1): one draw per sample and channel, as Dropout2d."""
    return torch.empty(feat.shape[0], feat.shape[1], 1, 1, dtype=feat.dtype, device=feat.device).bernoulli_(1 - p)


def channel_dropout(feat, p):
    """Dropout2d in training: whole channels of a sample zeroed with probability p, survivors scaled by 1/(1-p)."""
    return feat * channel_keep_mask(feat, p).div_(1 - p)


class SiteTransformRegularizer(Regularizer):
    """A regularizer that rewrites the feature at each of its sites, in training mode only.

    Subclasses implement ``transform(feat_nchw, site_index)``. The hooks read
    ``self.training``, so ``net.eval()`` (which reaches this module, a submodule of the
    net) makes every site an identity without removing anything.
    """

    def __init__(self, opt, sites, total_iter, network_opt=None):
        super().__init__(opt, sites, total_iter, network_opt)
        self.sites = resolve_sites(sites, self.opt.sites)
        self._handles = [site.register_transform(self._site_hook(i)) for i, site in enumerate(self.sites)]

    @classmethod
    def feature_sites(cls, opt, sites):
        return [s.name for s in resolve_sites(sites, opt['sites'])]

    def _site_hook(self, index):

        def hook(feat):
            return self.transform(feat, index) if self.training else feat

        return hook

    def transform(self, feat, site_index):
        raise NotImplementedError

    def extra_repr(self):
        return 'sites=' + ', '.join(s.name for s in self.sites)
