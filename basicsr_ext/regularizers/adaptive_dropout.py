"""Adaptive Dropout (Xu et al., arXiv 2506.12738, CVPR 2025): blended dropout with layer-wise annealing.

At each site, in training, ``f(x) = w·x + (1-w)·Dropout2d(x, p)``. The official code calls
the blend weight ``p`` and hard-codes the dropout rate 0.5; here ``p`` is the dropout rate
(as in :class:`Dropout`) and ``w`` the blend weight. Since E[Dropout2d(x)] = x, E[f(x)] = x
for any w, and eval mode is the identity.

Explicit annealing (the code's): all sites start at ``w_init``; at iteration
``interval·(k+1)`` site k (shallowest first) switches to w = 1 for good. w is a function of
the iteration alone, so a resumed run uses the same w (the code rebuilt its list on restart
and re-enabled the earlier sites).
"""
import math

import torch
from torch import nn

from ..utils.schema import Field, OptionError
from .base import REGULARIZER_REGISTRY
from .site_transform import SiteTransformRegularizer, channel_keep_mask, drop_probability_field, sites_field


@REGULARIZER_REGISTRY.register()
class AdaptiveDropout(SiteTransformRegularizer):
    """Blend each site's feature with its channel dropout, w·x + (1-w)·Dropout2d(x); w anneals to 1 site by site."""
    OPTIONS = {
        'p': drop_probability_field(0.5, 'dropout rate of the dropped branch (the code\'s constant 0.5)'),
        'w_init': Field(float, 0.3, min=0.0, max=1.0,
                        doc='blend weight w of the identity branch before a site is annealed (the code\'s "p")'),
        'interval': Field(int, 20000, min=0,
                          doc='site k switches to w=1 at iteration interval·(k+1), shallowest first; 0: never'),
        'anneal_last': Field(bool, True, doc='anneal the deepest site too (the code does, at interval·n)'),
        'w_mode': Field(str, 'value', choices=('value', 'vector'), doc='one w per site, or one per channel'),
        'implicit': Field(bool, False,
                          doc='learn w = sigmoid(θ) by backprop (θ initialised to logit(w_init)) instead of fixing it'),
        'sites': sites_field(['blocks.*.conv.0', 'last_conv_input'],
                             doc='inside every body block after its first conv, and before the last conv'),
    }
    INCOMPATIBLE = ('Dropout', 'DropBlock')

    @classmethod
    def check_sites(cls, opt, sites, where):
        super().check_sites(opt, sites, where)
        if opt['implicit'] and not 0.0 < opt['w_init'] < 1.0:
            raise OptionError(f"{where}.w_init: {opt['w_init']!r} must be in (0, 1) with implicit: true "
                              '(w is a sigmoid, which never reaches 0 or 1)')

    def __init__(self, opt, sites, total_iter, network_opt=None):
        super().__init__(opt, sites, total_iter, network_opt)
        self.p = opt['p']
        self.interval = opt['interval']
        self.anneal_last = opt['anneal_last']
        self.current_iter = 0
        shapes = [(s.num_channels(), ) if opt['w_mode'] == 'vector' else () for s in self.sites]
        if opt['implicit']:
            logit = math.log(opt['w_init'] / (1 - opt['w_init']))
            self.w_logits = nn.ParameterList(nn.Parameter(torch.full(shape, logit)) for shape in shapes)
        else:
            self.w_logits = None
            # buffers only so that .to(device) moves them; they are not state (non-persistent)
            for i, shape in enumerate(shapes):
                self.register_buffer(f'w_fixed_{i}', torch.full(shape, opt['w_init']), persistent=False)

    def on_iter_start(self, current_iter):
        self.current_iter = current_iter

    def annealed(self, site_index, current_iter):
        """Whether the site has switched to w = 1 at ``current_iter``."""
        if self.interval <= 0 or (site_index == len(self.sites) - 1 and not self.anneal_last):
            return False
        return current_iter >= self.interval * (site_index + 1)

    def site_weight(self, site_index, current_iter=None):
        """w of a site (scalar or per-channel tensor) at ``current_iter`` (default: the current one)."""
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
        if self.w_logits is None and self.annealed(site_index, self.current_iter):
            return feat
        w = self.site_weight(site_index)
        if w.dim() == 1:
            w = w.view(1, -1, 1, 1)
        # w·x + (1-w)·x·m/(1-p) = x·(w + (1-w)·m/(1-p)): one product with an (N, C, 1, 1) factor
        factor = w + (1 - w) * channel_keep_mask(feat, self.p) / (1 - self.p)
        return feat * factor

    def extra_repr(self):
        return (f'p={self.p}, w_init={self.opt["w_init"]}, interval={self.interval}, w_mode={self.opt["w_mode"]}, '
                f'implicit={self.opt["implicit"]}, {super().extra_repr()}')
