"""DropBlock (Ghiasi et al., NeurIPS 2018): drop contiguous square regions of feature maps."""
import torch
import torch.nn.functional as F

from ..utils.schema import Field
from .base import REGULARIZER_REGISTRY
from .site_transform import SiteTransformRegularizer, drop_probability_field, sites_field


@REGULARIZER_REGISTRY.register()
class DropBlock(SiteTransformRegularizer):
    """Zero ``block_size``×``block_size`` squares of each feature map, training only.

    Block corners are drawn where a whole block fits, at the rate γ that makes the expected
    dropped fraction about ``drop_rate`` (the paper's formula); masks are independent per
    sample and channel. Kept features are scaled by (number of elements / number kept),
    the paper's normalisation, so the feature's mean magnitude is preserved.
    """
    OPTIONS = {
        'drop_rate': drop_probability_field(0.1, 'expected fraction of dropped feature elements'),
        'block_size': Field(int, 7, min=1, doc='side of the dropped squares, in feature pixels'),
        'sites': sites_field(['last_conv_input']),
    }
    DROPS_FEATURES = True

    def __init__(self, opt, sites, total_iter, network_opt=None):
        super().__init__(opt, sites, total_iter, network_opt)
        self.drop_rate = self.opt.drop_rate
        self.block_size = self.opt.block_size

    def block_mask(self, feat):
        """1 where the feature is dropped; shape of ``feat``."""
        n, c, h, w = feat.shape
        size = min(self.block_size, h, w)
        fit_h, fit_w = h - size + 1, w - size + 1
        gamma = self.drop_rate * h * w / (size * size * fit_h * fit_w)
        corners = (torch.rand(n, c, fit_h, fit_w, device=feat.device) < gamma).to(feat.dtype)
        # a corner at (i, j) covers [i, i+size) × [j, j+size): pad by size-1 on every side so
        # the stride-1 max pool of width `size` sees exactly the corners covering each pixel
        corners = F.pad(corners, (size - 1, size - 1, size - 1, size - 1))
        # a square max is a row max of a column max: 2·size comparisons per pixel instead of size²
        return F.max_pool2d(F.max_pool2d(corners, (size, 1), stride=1), (1, size), stride=1)

    def transform(self, feat, site_index):
        if self.drop_rate == 0:
            return feat
        keep = 1 - self.block_mask(feat)
        return feat * keep * (keep.numel() / keep.sum().clamp_min(1))

    def extra_repr(self):
        return f'drop_rate={self.drop_rate}, block_size={self.block_size}, {super().extra_repr()}'
