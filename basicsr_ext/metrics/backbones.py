"""ImageNet backbones of the perceptual metrics (LPIPS, DISTS), from local files only.

The metric heads ship inside ``torchmetrics`` (LPIPS' linear layers, DISTS' alpha/beta); the
backbones are torchvision's AlexNet / VGG16 ImageNet weights, which torchvision would download.
Here the networks are always built with random weights and the backbone state dict is loaded from,
in this order:

1. the ``weights`` option: a ``.pth`` file, a folder holding torchvision's file, or ``random``
   (random initialisation: for tests of the wiring only, the values are then meaningless);
2. ``<project>/experiments/pretrained_models/<file>``;
3. ``$TORCH_HOME/hub/checkpoints/<file>`` (torch.hub's cache, ``~/.cache/torch/hub/checkpoints``),

where ``<file>`` is torchvision's file name (:data:`BACKBONE_FILES`). When none exists,
:class:`BackboneWeightsNotFound` names the file, where it comes from and where to put it. Nothing is
ever downloaded.
"""
import logging
import os

import numpy as np
import torch
from basicsr.utils import img2tensor
from basicsr.metrics.metric_util import reorder_image
from torch import nn

from ..utils.pretrained import locate, torchvision_weights

__all__ = ['BACKBONE_FILES', 'RANDOM', 'BackboneWeightsNotFound', 'find_backbone_weights', 'load_features',
           'to_tensor_pair', 'cached', 'metric_device']

RANDOM = 'random'


# torchvision's ImageNet weights of the backbones: (file name, size, where it comes from)
BACKBONE_FILES = {arch: torchvision_weights(arch) for arch in ('alexnet', 'vgg16')}
logger = logging.getLogger('basicsr')
_CACHE = {}


class BackboneWeightsNotFound(FileNotFoundError):
    """No local file holds the backbone weights a perceptual metric needs; the message says where to put one."""


def find_backbone_weights(arch, weights=None, metric='LPIPS'):
    """The file holding ``arch``'s ImageNet weights (or ``'random'``); raises :class:`BackboneWeightsNotFound`."""
    if weights == RANDOM:
        return RANDOM
    name, size, url = BACKBONE_FILES[arch]
    what = f"torchvision's ImageNet {arch} weights ({size}, {url})"
    return locate(
        name, weights,
        lambda path: BackboneWeightsNotFound(
            f"{metric}: '{path}' does not exist: it should be {name}, {what}. Nothing is downloaded at run time; "
            'put the file there or correct the weights option.'),
        lambda candidates: BackboneWeightsNotFound(
            f'{metric} needs {name} ({what}), found neither in {os.path.dirname(candidates[0])}/ nor in '
            f'{os.path.dirname(candidates[1])}/ ($TORCH_HOME/hub/checkpoints). Nothing is downloaded at run time: '
            f'put {name} in one of them, or name its file or folder in the weights option.'))


def load_features(stages, arch, source, metric):
    """Load torchvision ``features.<i>`` weights into ``stages``, modules whose children are named ``<i>``.

    Children without parameters (ReLU, pooling, DISTS' L2 pooling) need nothing; every parameter of the
    others must be in the file. ``source == 'random'`` leaves the random initialisation.
    """
    if source == RANDOM:
        logger.warning(f'{metric}: the {arch} backbone is randomly initialised (weights: random); the values only '
                       'test the wiring')
        return
    holder = nn.Module()
    for stage in stages:
        for name, child in stage.named_children():
            if any(True for _ in child.parameters()):
                holder.add_module(name, child)
    state = torch.load(source, map_location='cpu', weights_only=True)
    state = {k[len('features.'):]: v for k, v in state.items() if k.startswith('features.')}
    wanted = {k for k, _ in holder.named_parameters()}
    missing = sorted(wanted - set(state))
    if missing:
        raise ValueError(f"{metric}: '{source}' is not torchvision's {arch} state dict ({BACKBONE_FILES[arch][0]}): "
                         f"no features.{missing[0]} ({len(missing)} parameters missing)")
    try:
        holder.load_state_dict({k: state[k] for k in wanted}, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{metric}: '{source}' does not fit the {arch} backbone: {err}") from err


def metric_device(device=None):
    """``device`` as a torch.device; default CUDA (the current device) when available, else CPU."""
    if device is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)


def cached(key, source, build):
    """One network per key (metric, backbone, device) and weights file (path, size, time) for the process.

    Built under its own seed on a forked RNG: random weights are the same in every run, and building one in
    the middle of a training run (validation) leaves the run's random stream untouched.
    """
    if source != RANDOM:
        stat = os.stat(source)
        key = (*key, source, stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _CACHE[key] = build()
    return _CACHE[key]


def to_tensor_pair(img, img2, crop_border, input_order, test_y_channel, metric, device):
    """Two basicsr-convention images (BGR, [0, 255], HWC or CHW) as 1x3xHxW RGB float tensors in [0, 1]."""
    if test_y_channel:
        raise ValueError(f'{metric} compares RGB images; set test_y_channel: false for it')
    if img.shape != img2.shape:
        raise ValueError(f'{metric}: image shapes differ, {img.shape} and {img2.shape}')
    out = []
    for x in (img, img2):
        x = reorder_image(np.asarray(x), input_order=input_order).astype(np.float32)
        if crop_border:
            x = x[crop_border:-crop_border, crop_border:-crop_border]
        if x.shape[2] != 3:
            raise ValueError(f'{metric} needs 3-channel images, got {x.shape[2]} channels')
        out.append(img2tensor(x / 255., bgr2rgb=True, float32=True).clamp_(0, 1).unsqueeze(0).to(device))
    return out
