"""Dropout before the last convolution (Kong et al., "Reflash Dropout in Image Super-Resolution", CVPR 2022)."""
import torch.nn.functional as F

from ..utils.schema import Field
from .base import REGULARIZER_REGISTRY
from .site_transform import SiteTransformRegularizer, channel_dropout, drop_probability_field, sites_field


@REGULARIZER_REGISTRY.register()
class Dropout(SiteTransformRegularizer):
    """Inverted dropout at the sites, training only.

    Channel-wise (``Dropout2d``: a whole feature map of a sample is zeroed) is the paper's
    main setting; element-wise is its ablation. Survivors are scaled by 1/(1-p), so the
    expected feature is unchanged and the eval-mode network needs no rescaling.
    """
    OPTIONS = {
        'p': drop_probability_field(0.5, 'probability of dropping (Kong et al.\'s code: 0.7 SRResNet, 0.5 RRDB; '
                                    'the EATS paper: 0.5 SRResNet, 0.7 RRDB)'),
        'channel_wise': Field(bool, True, doc='drop whole channels (Dropout2d); false: single elements'),
        'sites': sites_field(['last_conv_input']),
    }
    DROPS_FEATURES = True

    def __init__(self, opt, sites, total_iter, network_opt=None):
        super().__init__(opt, sites, total_iter, network_opt)
        self.p = self.opt.p
        self.channel_wise = self.opt.channel_wise

    def transform(self, feat, site_index):
        if not self.channel_wise:
            return F.dropout(feat, self.p, training=True)
        return channel_dropout(feat, self.p)

    def extra_repr(self):
        return f'p={self.p}, channel_wise={self.channel_wise}, {super().extra_repr()}'
