"""VGG weights for basicsr's PerceptualLoss from a local file, never from the network.

basicsr's ``VGGFeatureExtractor`` loads ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` relative to the
current directory and otherwise calls torchvision's ``vgg19(pretrained=True)``, which downloads 548 MB. Here
the weights come from, in this order:

1. ``path.pretrained_vgg`` of the options (a torchvision VGG state dict, or a folder holding ``<file>``), or
   ``random`` (random initialisation: for wiring tests only, the perceptual loss is then meaningless);
2. ``<project>/experiments/pretrained_models/<file>`` (where BasicSR users keep them);
3. ``$TORCH_HOME/hub/checkpoints/<file>`` (torch.hub's cache, ``~/.cache/torch/hub/checkpoints`` by default),

where ``<file>`` is torchvision's file name, e.g. ``vgg19-dcbb9e9d.pth``. When none exists,
:class:`VGGWeightsNotFound` names the file, its source and where to put it.

:func:`local_vgg_weights` is the context in which basicsr builds its extractor: inside it, the extractor's
torchvision factory builds only the convolutional ``features`` (no 400 MB classifier) and loads them from
the file found above.
"""
import contextlib
import os
import types

import torch
from basicsr.archs import vgg_arch
from basicsr.utils import get_root_logger
from torch import nn
from torchvision.models import vgg as tv_vgg

from ..utils.pretrained import locate, search_paths, torchvision_weights

__all__ = ['RANDOM_VGG', 'VGG_TYPES', 'VGGWeightsNotFound', 'find_vgg_weights', 'local_vgg_weights', 'vgg_file',
           'vgg_search_paths']

RANDOM_VGG = 'random'
_CONFIGS = {'vgg11': 'A', 'vgg13': 'B', 'vgg16': 'D', 'vgg19': 'E'}  # torchvision's cfgs keys
VGG_TYPES = tuple(sorted(_CONFIGS)) + tuple(f'{name}_bn' for name in sorted(_CONFIGS))


class VGGWeightsNotFound(FileNotFoundError):
    """No local file holds the VGG weights the perceptual loss needs; the message says where to put one."""


def _check_type(vgg_type):
    if vgg_type not in VGG_TYPES:
        raise ValueError(f"vgg_type '{vgg_type}' is not one of {list(VGG_TYPES)}")


def vgg_file(vgg_type='vgg19'):
    """torchvision's file name of the ImageNet weights of ``vgg_type``, e.g. ``vgg19-dcbb9e9d.pth``."""
    _check_type(vgg_type)
    return torchvision_weights(vgg_type)[0]


def vgg_search_paths(vgg_type='vgg19'):
    """The default places of the weights file, in the order they are tried."""
    return search_paths(vgg_file(vgg_type))


def find_vgg_weights(vgg_type='vgg19', path=None):
    """The weights file to use (or ``'random'``); raises :class:`VGGWeightsNotFound` when there is none."""
    if path == RANDOM_VGG:
        return RANDOM_VGG
    _check_type(vgg_type)
    name, size, url = torchvision_weights(vgg_type)
    where = f"torchvision's ImageNet {vgg_type.upper()} weights ({size}, {url})"
    return locate(
        name, path,
        lambda given: VGGWeightsNotFound(
            f"'{given}' does not exist: it should hold {where}. Nothing is downloaded at run time; put the file "
            'there or correct path.pretrained_vgg.'),
        lambda candidates: VGGWeightsNotFound(
            f'{name} not found: the perceptual loss needs {where}. Nothing is downloaded at run time: put {name} in '
            f'{os.path.dirname(candidates[0])}/ or in {os.path.dirname(candidates[1])}/ ($TORCH_HOME/hub/checkpoints), '
            'or set path.pretrained_vgg to its location (experiments/pretrained_models/README.md).'))


class _VGGFeatures(nn.Module):
    """What basicsr's extractor reads of a torchvision VGG: ``features``."""

    def __init__(self, features):
        super().__init__()
        self.features = features


def _builder(vgg_type, path):

    def build(pretrained=False, **kwargs):  # basicsr passes pretrained=True/False; the source is ``path`` either way
        features = tv_vgg.make_layers(tv_vgg.cfgs[_CONFIGS[vgg_type.replace('_bn', '')]], '_bn' in vgg_type)
        source = find_vgg_weights(vgg_type, path)
        if source == RANDOM_VGG:
            get_root_logger().warning(f'Perceptual loss: {vgg_type} is randomly initialised (path.pretrained_vgg: '
                                      'random), which is for tests of the wiring only')
            return _VGGFeatures(features)
        state = torch.load(source, map_location='cpu', weights_only=True)
        state = {k[len('features.'):]: v for k, v in state.items() if k.startswith('features.')}
        try:
            features.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{source}: not torchvision's {vgg_type} state dict ({vgg_file(vgg_type)}): "
                             f'{err}') from err
        get_root_logger().info(f'Perceptual loss: {vgg_type} features from {source}')
        return _VGGFeatures(features)

    return build


@contextlib.contextmanager
def local_vgg_weights(path=None):
    """Build basicsr VGG feature extractors (PerceptualLoss) inside this context: weights from local files only.

    ``path``: ``path.pretrained_vgg`` (a file, ``'random'`` or None for the default places). Nothing is
    looked up unless an extractor is built.
    """
    saved = vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH
    vgg_arch.vgg = types.SimpleNamespace(**{name: _builder(name, path) for name in VGG_TYPES})
    vgg_arch.VGG_PRETRAIN_PATH = ''  # never the CWD-relative file: the order above decides
    try:
        yield
    finally:
        vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = saved
