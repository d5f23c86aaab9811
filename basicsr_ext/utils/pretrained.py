"""Where pretrained weight files (VGG for the perceptual loss, LPIPS/DISTS backbones) are looked for.

Nothing is downloaded at run time. Besides a path the options name, a file is looked for under its
torchvision file name in two places, in this order: the project's ``experiments/pretrained_models/``
(where BasicSR users keep them) and torch.hub's cache, ``$TORCH_HOME/hub/checkpoints``.
"""
import os

import torch
import torchvision

from .paths import PROJECT_ROOT

__all__ = ['PRETRAINED_DIR', 'first_existing', 'locate', 'search_paths', 'torchvision_weights']

PRETRAINED_DIR = PROJECT_ROOT / 'experiments' / 'pretrained_models'


def torchvision_weights(arch):
    """``(file name, size, url)`` of torchvision's ImageNet weights of ``arch``, e.g. ``vgg19-dcbb9e9d.pth``."""
    entry = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    return os.path.basename(entry.url), f"{entry.meta['_file_size']:.1f} MB", entry.url


def search_paths(name):
    """The default places of weights file ``name``, in the order they are tried."""
    return [str(PRETRAINED_DIR / name), os.path.join(torch.hub.get_dir(), 'checkpoints', name)]


def first_existing(paths):
    """The first of ``paths`` that is a file, or None."""
    return next((p for p in paths if os.path.isfile(p)), None)


def locate(name, given, missing_given, missing_default):
    """The weights file ``name``: ``given`` when it is set (a folder stands for the file ``name`` inside it),
    else the first of :func:`search_paths` that exists.

    ``missing_given(path)`` and ``missing_default(candidates)`` build the exception raised when there is none;
    each caller words it for its own option.
    """
    if given is not None:
        path = os.path.expanduser(str(given))
        if os.path.isdir(path):
            path = os.path.join(path, name)
        if not os.path.isfile(path):
            raise missing_given(path)
        return path
    candidates = search_paths(name)
    found = first_existing(candidates)
    if found is None:
        raise missing_default(candidates)
    return found
