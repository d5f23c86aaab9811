"""DISTS (Ding et al., TPAMI 2020), lower is better: torchmetrics' network, VGG16 backbone from a local file.

torchmetrics' ``DISTSNetwork`` builds its VGG16 with ImageNet weights, which torchvision would
download, so the stages are assembled here from a randomly initialised VGG16 ``features`` (the max
poolings replaced by DISTS' L2 pooling, at the same indices), and the VGG16 weights are loaded from the
file :mod:`.backbones` finds. ``alpha`` / ``beta`` are the ones torchmetrics ships in its package;
scoring is torchmetrics' own ``forward``.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY
from torch import nn
from torchvision.models import vgg as tv_vgg

from .backbones import cached, find_backbone_weights, load_features, metric_device, to_tensor_pair

__all__ = ['build_dists', 'calculate_dists']

_STAGE_ENDS = (4, 9, 16, 23, 30)  # VGG16 feature indices of the max poolings: stage k ends before _STAGE_ENDS[k]


def _dists_class():
    # why: optional heavy dependency (torchmetrics), imported when a DISTS network is first built
    from torchmetrics.functional.image import dists

    class LocalDISTS(dists.DISTSNetwork):
        """``DISTSNetwork`` whose VGG16 comes from ``features`` (any weights) instead of a download."""

        def __init__(self, features):
            nn.Module.__init__(self)
            start, channels = 0, 3
            for k, end in enumerate(_STAGE_ENDS):
                stage = nn.Sequential()
                if k:  # the stage opens with the L2 pooling that replaces VGG's max pooling
                    stage.add_module(str(start), dists.L2pooling(channels=channels))
                    start += 1
                for i in range(start, end):
                    stage.add_module(str(i), features[i])
                    channels = getattr(features[i], 'out_channels', channels)
                setattr(self, f'stage{k + 1}', stage)
                start = end
            self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
            self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
            self.chns = [3, 64, 128, 256, 512, 512]
            head = torch.load(str(dists._PATH_WEIGHT_DISTS), map_location='cpu', weights_only=True)
            self.alpha = nn.Parameter(head['alpha'])
            self.beta = nn.Parameter(head['beta'])

    return LocalDISTS


def build_dists(weights=None, device=None):
    """The DISTS network (eval mode, no gradients) on ``device``; cached per (weights file, device)."""
    source = find_backbone_weights('vgg16', weights, metric='DISTS')
    device = metric_device(device)

    def build():
        features = tv_vgg.make_layers(tv_vgg.cfgs['D'])  # VGG16's convolutional part, random weights
        model = _dists_class()(features)
        load_features([getattr(model, f'stage{i}') for i in range(1, 6)], 'vgg16', source, 'DISTS')
        return model.eval().requires_grad_(False).to(device)

    return cached(('dists', str(device)), source, build)


@METRIC_REGISTRY.register()
def calculate_dists(img, img2, crop_border=0, input_order='HWC', test_y_channel=False, weights=None, device=None,
                    **kwargs):
    """DISTS between two images in basicsr's convention (BGR, [0, 255]); ``weights``/``device`` as for LPIPS."""
    model = build_dists(weights, device)
    x, y = to_tensor_pair(img, img2, crop_border, input_order, test_y_channel, 'DISTS', metric_device(device))
    return float(model(x, y).flatten()[0])


calculate_dists.better = 'lower'
