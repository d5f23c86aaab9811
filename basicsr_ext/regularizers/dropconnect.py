"""DropConnect (Wan et al., ICML 2013) on convolution weights, applied through hooks."""
import torch
from torch import nn

from ..utils.schema import OptionError
from .base import REGULARIZER_REGISTRY, Regularizer
from .site_transform import drop_probability_field, resolve_sites, sites_field


@REGULARIZER_REGISTRY.register()
class DropConnect(Regularizer):
    """Zero each weight of the sites' convolutions with probability ``p`` on every training forward.

    A forward pre-hook swaps the conv's weight for ``weight·mask/(1-p)`` (one mask per forward,
    shared by the batch: per-sample weight masks would need a conv per sample) and a forward
    hook that runs even on errors swaps the Parameter back, so the optimizer, the EMA and the
    checkpoints only ever see the real weight, and gradients reach it through the mask.
    Inverted scaling makes the eval-mode conv the plain one (the paper's Gaussian moment
    matching at inference is not used). Biases are kept.

    A conv site (``head.<j>``, ``blocks.<i>.conv.<j>``, ``tail.<j>``) masks that conv; ``last_conv_input``
    masks the last conv.
    """
    OPTIONS = {
        'p': drop_probability_field(0.5, 'probability of dropping a weight (the paper\'s 0.5)'),
        'sites': sites_field(['last_conv_input'], doc='conv sites whose weights are masked'),
    }

    @classmethod
    def check_sites(cls, opt, sites, where):
        super().check_sites(opt, sites, where)
        for site in resolve_sites(sites, opt['sites']):
            if not isinstance(site.module, nn.Conv2d):
                raise OptionError(f"{where}.sites: DropConnect masks conv weights, but site '{site.name}' of "
                                  f'{sites.arch} is a {type(site.module).__name__}, not a Conv2d; use conv sites '
                                  '(head.*, blocks.*.conv.*, tail.*) or last_conv_input')

    def __init__(self, opt, sites, total_iter, network_opt=None):
        super().__init__(opt, sites, total_iter, network_opt)
        self.p = self.opt.p
        self.sites = resolve_sites(sites, self.opt.sites)
        self._saved_weights = {}
        self._handles = []
        for site in self.sites:
            self._handles.append(site.module.register_forward_pre_hook(self._mask_weight))
            self._handles.append(site.module.register_forward_hook(self._restore_weight, always_call=True))

    def _mask_weight(self, conv, args):
        if not self.training or self.p == 0:
            return
        weight = conv._parameters['weight']
        keep = torch.empty_like(weight, requires_grad=False).bernoulli_(1 - self.p)
        self._saved_weights[conv] = weight
        # bypasses nn.Module.__setattr__, which refuses a non-Parameter under a parameter's name
        conv._parameters['weight'] = weight * keep / (1 - self.p)

    def _restore_weight(self, conv, args, output):
        weight = self._saved_weights.pop(conv, None)
        if weight is not None:
            conv._parameters['weight'] = weight

    def extra_repr(self):
        return f'p={self.p}, sites=' + ', '.join(s.name for s in self.sites)
