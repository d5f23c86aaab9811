"""Channel maps: how the response of a network's feature is spread over its channels.

This module is the entry point of ``scripts/channel_maps.py``: the inputs, the models (read from a
test-options file and loaded as test.py loads them) and the statistics collected over the images.
Capturing and the statistics themselves are in :mod:`.channel_stats` (with the definitions), the
plots, CSV and table in :mod:`.channel_plots`; both are re-exported here.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from basicsr.utils.matlab_functions import imresize
from tqdm import tqdm

from ..archs.forward import check_input_size
from ..config import read_option_file
from ..data.eval_degradations import mod_crop
from ..data.image_io import IMAGE_EXTENSIONS, list_images, read_image
from ..utils.schema import OptionError
from .channel_plots import (GRID_MAX_SIDE, GRID_PERCENTILE, format_table, plot_channel_comparison, plot_channel_grid,
                            write_channel_maps, write_channel_stats)
from .channel_stats import (ChannelStats, SiteError, capture_site_features, channel_mean_abs, find_site,
                            mean_abs_per_channel, top_k_share)
from .models import build_models
from .options import validate_models

__all__ = [
    'SiteError', 'ChannelStats', 'MapModel', 'find_site', 'capture_site_features', 'mean_abs_per_channel',
    'channel_mean_abs', 'top_k_share', 'list_inputs', 'read_models_file', 'load_models', 'collect_channel_stats',
    'plot_channel_grid', 'plot_channel_comparison', 'write_channel_stats', 'write_channel_maps', 'format_table',
    'GRID_PERCENTILE', 'GRID_MAX_SIDE'
]


def list_inputs(path, max_images=None):
    """Image files of ``path`` (a file, or a folder's images sorted by name), at most ``max_images``."""
    if max_images is not None and max_images < 1:
        raise ValueError(f'max_images must be at least 1, got {max_images}')
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input '{path}' does not exist")
    if path.is_file():
        return [path]
    files = [path / p for p in list_images(path)]
    if not files:
        raise FileNotFoundError(f"no images in input folder '{path}' (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files[:max_images]


def read_models_file(path):
    """The validated ``models`` list of a test-options YAML (the file test.py reads; datasets are not needed)."""
    raw = read_option_file(str(path))
    if not isinstance(raw, dict) or 'models' not in raw:
        raise OptionError(f"{path}: no 'models' list; channel maps read the models[] of a test-options file "
                          '(see docs/evaluation.md)')
    return validate_models(raw['models'])


@dataclass
class MapModel:
    """A network loaded for channel maps."""
    name: str
    arch: str
    scale: int
    net: torch.nn.Module


def load_models(models, device):
    """Load validated ``models[]`` entries (see :func:`read_models_file`) with test.py's loader and errors.

    Bicubic pseudo-models have no features; they are left out and their names returned apart.

    Returns:
        (loaded, skipped): a list of :class:`MapModel` and the names of the bicubic entries.
    """
    # the protocol only picks the resampler of bicubic pseudo-models, which are dropped here
    built = build_models({'models': models, 'protocol': 'reflash'}, device)
    loaded = [MapModel(m.name, m.arch, m.scale, m.net) for m in built if hasattr(m, 'net')]
    skipped = [m.name for m in built if not hasattr(m, 'net')]
    if not loaded:
        raise ValueError('models: no network to read features from (bicubic pseudo-models have none)')
    names = [m.name for m in loaded]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ValueError(f"models: the name '{dup}' is used twice; channel maps need one name per model")
    return loaded, skipped


def _lr_tensor(path, scale, downscale):
    img = read_image(path, float32=True, order='rgb')
    if downscale:
        img = np.clip(imresize(mod_crop(img, scale), 1. / scale, antialiasing=True), 0, 1)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None]


def collect_channel_stats(models, site, files, downscale=False, progress=False, on_feature=None):
    """Capture ``site`` of every model on every image.

    Every model is checked for the site before any image is read. Only the first image's
    feature of each model is kept (for the grid); the statistics accumulate per image.
    ``on_feature(model, feature)``, when given, also receives every captured feature (e.g. the
    channel-correlation accumulator), so one pass over the images serves both.

    Returns:
        (stats, first): a :class:`ChannelStats` per model, and per model name the first image's feature.
    """
    for m in models:
        try:
            find_site(m.net, site)
        except SiteError as err:
            raise SiteError(f"model '{m.name}': {err}") from err
    vectors = {m.name: [] for m in models}
    first = {}
    lr_cache = {}
    for path in tqdm(files, unit='img', desc=site, disable=not progress):
        lr_cache.clear()
        for m in models:
            key = m.scale if downscale else None  # the LR depends on the scale only when it is made here
            if key not in lr_cache:
                lr_cache[key] = _lr_tensor(path, m.scale, downscale)
            lq = lr_cache[key]
            check_input_size(m.net, *lq.shape[-2:], name=str(path))
            feat = capture_site_features(m.net, site, lq)
            vectors[m.name].append(mean_abs_per_channel(feat))
            if on_feature is not None:
                on_feature(m, feat)
            first.setdefault(m.name, feat)
    stats = [ChannelStats(m.name, m.arch, site, np.mean(vectors[m.name], axis=0), len(files)) for m in models]
    return stats, first
