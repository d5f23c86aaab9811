"""LPIPS (Zhang et al., CVPR 2018), lower is better: torchmetrics' implementation, backbone from a local file.

torchmetrics ships the LPIPS linear layers (v0.1) in its package; the AlexNet / VGG16 backbone is
built with random weights (``pnet_rand=True``, so torchvision downloads nothing) and loaded here from
the file :mod:`.backbones` finds.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from .backbones import cached, find_backbone_weights, load_features, metric_device, to_tensor_pair

__all__ = ['LPIPS_NETS', 'build_lpips', 'calculate_lpips']

LPIPS_NETS = {'alex': 'alexnet', 'vgg': 'vgg16'}  # the LPIPS name of a backbone -> torchvision's


def build_lpips(net='alex', weights=None, device=None):
    """The LPIPS network (eval mode, no gradients) on ``device``; cached per (net, weights file, device)."""
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net '{net}' is not one of {', '.join(LPIPS_NETS)}")
    arch = LPIPS_NETS[net]
    source = find_backbone_weights(arch, weights, metric=f'LPIPS ({net})')
    device = metric_device(device)

    def build():
        # why: optional heavy dependency (torchmetrics), imported when an LPIPS network is first built
        from torchmetrics.functional.image.lpips import _LPIPS
        model = _LPIPS(pretrained=True, net=net, pnet_rand=True)  # linear layers from torchmetrics' package
        load_features([getattr(model.net, f'slice{i}') for i in range(1, 6)], arch, source, f'LPIPS ({net})')
        return model.eval().requires_grad_(False).to(device)

    return cached(('lpips', net, str(device)), source, build)


@METRIC_REGISTRY.register()
def calculate_lpips(img, img2, crop_border=0, input_order='HWC', test_y_channel=False, net='alex', weights=None,
                    device=None, **kwargs):
    """LPIPS distance between two images in basicsr's convention (BGR, [0, 255], uint8 or float).

    Args:
        net: backbone, ``'alex'`` (the LPIPS paper's default) or ``'vgg'``.
        weights: torchvision backbone weights: a file, a folder holding torchvision's file, ``'random'``
            (tests only), or None for experiments/pretrained_models/ and $TORCH_HOME/hub/checkpoints/.
        device: where the network runs (default CUDA if available, else CPU).
    """
    model = build_lpips(net, weights, device)
    x, y = to_tensor_pair(img, img2, crop_border, input_order, test_y_channel, 'LPIPS', metric_device(device))
    with torch.inference_mode():
        return float(model(x, y, normalize=True).flatten()[0])


calculate_lpips.better = 'lower'
