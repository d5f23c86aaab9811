"""Adaptive Dropout (Xu et al., arXiv 2506.12738, CVPR 2025): blended dropout with layer-wise annealing.

At each site, in training, ``f(x) = w·x + (1-w)·Dropout2d(x, p)``. The official code calls
the blend weight ``p`` and hard-codes the dropout rate 0.5; here ``p`` is the dropout rate
(as in :class:`Dropout`) and ``w`` the blend weight. Since E[Dropout2d(x)] = x, E[f(x)] = x
for any w, and eval mode is the identity.

Explicit annealing (the code's): all sites start at ``w_init``; at iteration
``interval·(k+1)`` site k (shallowest first) switches to w = 1 for good. w is a function of
the iteration alone, so a resumed run uses the same w (the code rebuilt its list on restart
and re-enabled the earlier sites). ``interval: auto`` spreads the switches so that the last
one falls at ``anneal_end·total_iter`` (the code's 17·20k = 340k of 500k, i.e. 0.68).

The deepest site (the final layer) is blended and annealed like the others (``final:
adaptive``, the code) or keeps plain channel dropout for the whole run (``final: standard``,
the paper's method summary: Reflash dropout before the last conv).
"""
import math

import torch
from torch import nn

from ..utils.schema import Field, OptionError
from .base import REGULARIZER_REGISTRY
from .site_transform import (SiteTransformRegularizer, channel_dropout, channel_keep_mask, check_drop_probability,
                             drop_probability_field, resolve_sites, sites_field)

#: the official schedule: the last of 17 SRResNet sites switches at 17·20k = 340k of 500k iterations
CODE_ANNEAL_END = 340000 / 500000


def _check_interval(value, where):
    if value != 'auto' and (isinstance(value, str) or value < 0):
        raise OptionError(f"{where}: {value!r} must be an integer >= 0 or 'auto'")


def _check_final_p(value, where):
    if value is not None:
        check_drop_probability(value, where)


def annealed_site_count(num_sites, final, anneal_last):
    """How many of the ``num_sites`` sites switch to w = 1 (all but the deepest when it keeps its dropout)."""
    keeps_last = final == 'standard' or not anneal_last
    return max(0, num_sites - 1) if keeps_last else num_sites


def auto_interval(total_iter, num_annealed, anneal_end=CODE_ANNEAL_END):
    """``interval: auto``: floor(anneal_end · total_iter / num_annealed), at least 1 (0 when nothing anneals).

    The last annealed site then switches at num_annealed · interval <= anneal_end · total_iter; with the
    defaults on SRResNet (17 sites, 500k iterations) this is the code's 20000.
    """
    if num_annealed == 0:
        return 0
    return max(1, int(anneal_end * total_iter / num_annealed + 1e-9))


@REGULARIZER_REGISTRY.register()
class AdaptiveDropout(SiteTransformRegularizer):
    """Blend each site's feature with its channel dropout, w·x + (1-w)·Dropout2d(x); w anneals to 1 site by site."""
    OPTIONS = {
        'p': drop_probability_field(0.5, 'dropout rate of the dropped branch (the code\'s constant 0.5)'),
        'w_init': Field(float, 0.3, min=0.0, max=1.0,
                        doc='blend weight w of the identity branch before a site is annealed (the code\'s "p")'),
        'interval': Field((int, str), 20000, check=_check_interval,
                          doc="site k switches to w=1 at iteration interval·(k+1), shallowest first; 0: never; "
                          "'auto': floor(anneal_end·total_iter / annealed sites)"),
        'anneal_end': Field(float, CODE_ANNEAL_END, min=0.0, max=1.0,
                            doc="with interval: auto, the fraction of total_iter at which the last annealed site "
                            "switches (the code: 340k/500k = 0.68)"),
        'anneal_last': Field(bool, True, doc='anneal the deepest site too (the code does, at interval·n); '
                             'final: adaptive only'),
        'final': Field(str, 'adaptive', choices=('adaptive', 'standard'),
                       doc='the deepest site: blended and annealed like the others (the code), or plain channel '
                       'dropout with rate final_p for the whole run (the paper\'s summary, Reflash dropout)'),
        'final_p': Field(float, None, check=_check_final_p,
                         doc='dropout rate of the deepest site with final: standard; null: p'),
        'w_mode': Field(str, 'value', choices=('value', 'vector'),
                        doc='one w per site, or one per channel (vector needs implicit: true)'),
        'implicit': Field(bool, False,
                          doc='learn w = sigmoid(θ) by backprop (θ initialised to logit(w_init)) instead of fixing it'),
        'sites': sites_field(['blocks.*.conv.0', 'last_conv_input'],
                             doc='inside every body block after its first conv, and before the last conv'),
    }
    DROPS_FEATURES = True

    @classmethod
    def check_sites(cls, opt, sites, where):
        super().check_sites(opt, sites, where)
        if opt['implicit'] and not 0.0 < opt['w_init'] < 1.0:
            raise OptionError(f"{where}.w_init: {opt['w_init']!r} must be in (0, 1) with implicit: true "
                              '(w is a sigmoid, which never reaches 0 or 1)')
        if opt['w_mode'] == 'vector' and not opt['implicit']:
            raise OptionError(f"{where}.w_mode: 'vector' needs implicit: true; with a fixed w every channel of a "
                              "site gets w_init and the same schedule (annealing is per layer), which is w_mode: "
                              "'value'")
        if opt['final'] == 'standard' and len(resolve_sites(sites, opt['sites'])) < 2:
            raise OptionError(f"{where}.final: 'standard' makes the deepest site plain dropout, but sites "
                              f"{opt['sites']} select only one site on {sites.arch}; use Dropout for that")

    def __init__(self, opt, sites, total_iter, network_opt=None):
        super().__init__(opt, sites, total_iter, network_opt)
        self.p = self.opt.p
        self.anneal_last = self.opt.anneal_last
        self.standard_final = self.opt.final == 'standard'
        self.final_p = self.p if self.opt.final_p is None else self.opt.final_p
        self.num_annealed = annealed_site_count(len(self.sites), self.opt.final, self.opt.anneal_last)
        self.interval = (auto_interval(total_iter, self.num_annealed, self.opt.anneal_end)
                         if self.opt.interval == 'auto' else self.opt.interval)
        self.current_iter = 0
        blended = self.sites[:-1] if self.standard_final else self.sites
        shapes = [(s.num_channels(), ) if self.opt.w_mode == 'vector' else () for s in blended]
        if self.opt.implicit:
            logit = math.log(self.opt.w_init / (1 - self.opt.w_init))
            self.w_logits = nn.ParameterList(nn.Parameter(torch.full(shape, logit)) for shape in shapes)
        else:
            self.w_logits = None
            # buffers only so that .to(device) moves them; they are not state (non-persistent)
            for i, shape in enumerate(shapes):
                self.register_buffer(f'w_fixed_{i}', torch.full(shape, self.opt.w_init), persistent=False)

    def on_iter_start(self, current_iter):
        self.current_iter = current_iter

    def is_standard(self, site_index):
        """Whether the site is the deepest one and keeps plain dropout (``final: standard``)."""
        return self.standard_final and site_index == len(self.sites) - 1

    def annealed(self, site_index, current_iter):
        """Whether the site has switched to w = 1 at ``current_iter``."""
        if self.interval <= 0 or site_index >= self.num_annealed:
            return False
        return current_iter >= self.interval * (site_index + 1)

    def site_weight(self, site_index, current_iter=None):
        """w of a blended site (scalar or per-channel tensor) at ``current_iter`` (default: the current one)."""
        if self.is_standard(site_index):
            raise ValueError(f'site {self.sites[site_index].name} keeps plain dropout (final: standard): it has no w')
        it = self.current_iter if current_iter is None else current_iter
        if self.w_logits is None:
            w = getattr(self, f'w_fixed_{site_index}')
            return torch.ones_like(w) if self.annealed(site_index, it) else w
        w = torch.sigmoid(self.w_logits[site_index])
        if self.annealed(site_index, it):
            # 1 + 0·w rather than a constant: θ stays in the graph (zero gradient), as DDP
            # without find_unused_parameters needs every parameter to take part
            return w * 0 + 1
        return w

    def transform(self, feat, site_index):
        if self.is_standard(site_index):  # Reflash dropout: Dropout2d with inverted scaling
            return channel_dropout(feat, self.final_p)
        if self.w_logits is None and self.annealed(site_index, self.current_iter):
            return feat
        w = self.site_weight(site_index)
        if w.dim() == 1:
            w = w.view(1, -1, 1, 1)
        # w·x + (1-w)·x·m/(1-p) = x·(w + (1-w)·m/(1-p)): one product with an (N, C, 1, 1) factor
        factor = w + (1 - w) * channel_keep_mask(feat, self.p) / (1 - self.p)
        return feat * factor

    def extra_repr(self):
        final = f'standard (p={self.final_p})' if self.standard_final else 'adaptive'
        return (f'p={self.p}, w_init={self.opt.w_init}, interval={self.interval}, final={final}, '
                f'w_mode={self.opt.w_mode}, implicit={self.opt.implicit}, {super().extra_repr()}')
