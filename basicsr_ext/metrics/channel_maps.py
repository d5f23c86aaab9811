"""Channel maps: how the response of a network's feature is spread over its channels.

The generalisation papers of blind SR show what a regularizer does to the features with such
figures: EATS (Fig. 1) compares the per-channel responses of a shallow body block of SRResNet
with and without EATS; Reflash Dropout shows that without dropout a few channels dominate. This
module captures the feature at one named site (:mod:`basicsr_ext.archs.sites`) of one or more
trained networks and summarises it per channel.

Definitions (docs/channel_maps.md):

* **mean |activation|** of channel c: the mean of ``|x[c]|`` over the pixels of one image's
  feature, then averaged over the images, each image weighing the same whatever its size;
* **share** of channel c: its mean |activation| divided by the sum over all channels;
* **top-k share** (dominance): the summed share of the k channels with the largest mean
  |activation|. It lies in [k/C, 1]: k/C when every channel responds equally, 1 when the
  other C-k channels are silent.

Features are read in eval mode through a site transform that returns its input unchanged, so
the captured tensor is exactly what flows through the network. Inputs are padded to the size
multiple the arch needs (as for inference) and the padded border is cut from the feature again,
so reflected pixels never enter the statistics.
"""
import difflib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from ..archs.sites import describe_names, get_sites
from ..data.image_io import IMAGE_EXTENSIONS, list_images, read_image
from ..data.test_degradations import mod_crop
from ..utils.inference import check_input_size, forward_padded, input_multiple

__all__ = [
    'SiteError', 'ChannelStats', 'MapModel', 'find_site', 'capture_site_features', 'mean_abs_per_channel',
    'channel_mean_abs', 'top_k_share', 'list_inputs', 'read_models_file', 'load_models', 'collect_channel_stats',
    'plot_channel_grid', 'plot_channel_comparison', 'write_channel_stats', 'write_channel_maps', 'format_table',
    'GRID_PERCENTILE', 'GRID_MAX_SIDE'
]

#: the shared colour scale of a grid runs from 0 to this percentile of all |activation| values it shows
GRID_PERCENTILE = 99.5
#: maps are area-averaged to at most this many pixels on their longer side before plotting
GRID_MAX_SIDE = 128


class SiteError(ValueError):
    """A site name that the network does not have."""


# --------------------------------------------------------------------------- capturing
def find_site(net, site_name):
    """The :class:`~basicsr_ext.archs.sites.Site` called ``site_name`` in ``net``, or a SiteError listing its sites."""
    sites = get_sites(net)
    names = sites.names()
    if site_name in names:
        return sites[site_name]
    close = difflib.get_close_matches(str(site_name), names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ''
    raise SiteError(f"unknown site '{site_name}': {sites.arch} has no such site{hint}; "
                    f'{sites.arch} has: {describe_names(names)}')


def _crop_padding(feat, in_hw, padded_hw):
    # a site may run at another resolution than the input (HR after the upsampler, half LR after
    # RRDBNet's pixel-unshuffle): keep the same fraction of rows and columns as the unpadded input
    (h, w), (ph, pw) = in_hw, padded_hw
    fh, fw = feat.shape[-2:]
    return feat[..., :-(-h * fh // ph), :-(-w * fw // pw)]


class _Captured(Exception):
    """Raised by the recording transform: the layers after the site are not needed."""


def capture_site_features(net, site_name, lq):
    """The feature at ``site_name`` for the input ``lq`` (NCHW in [0, 1]): an NCHW float32 CPU tensor.

    The network runs in eval mode without gradients (its previous mode is restored afterwards),
    and only up to the site: the upsampler at HR resolution, most of the cost of a shallow
    site, is skipped. Token sites (SwinIR) come as the NCHW view the site exposes. Raises
    SiteError for an unknown site.
    """
    site = find_site(net, site_name)
    captured = []

    def record(feat):
        captured.append(feat.detach().float().cpu())
        raise _Captured

    param = next(iter(net.parameters()), None)
    lq = lq.to(param.device if param is not None else 'cpu')
    multiple = input_multiple(net)
    h, w = lq.shape[-2:]
    was_training = net.training
    handle = site.register_transform(record)
    try:
        net.eval()
        with torch.no_grad():
            forward_padded(net, lq, 1, multiple)  # scale 1: the output is never reached, nothing to crop
    except _Captured:
        pass
    finally:
        handle.remove()
        net.train(was_training)
    if not captured:
        raise RuntimeError(f"site '{site_name}' of {type(net).__name__} did not run in the forward pass")
    return _crop_padding(captured[0], (h, w), (-(-h // multiple) * multiple, -(-w // multiple) * multiple))


# --------------------------------------------------------------------------- statistics
def mean_abs_per_channel(feature):
    """Mean |activation| of each channel of an NCHW feature over batch, height and width (float64 numpy)."""
    if feature.ndim != 4:
        raise ValueError(f'expected an NCHW feature, got shape {tuple(feature.shape)}')
    return feature.detach().double().abs().mean(dim=(0, 2, 3)).cpu().numpy()


def channel_mean_abs(features):
    """Per-channel mean |activation| over several NCHW features (one per image), each image weighing the same."""
    vectors = [mean_abs_per_channel(f) for f in features]
    if not vectors:
        raise ValueError('no features to summarise')
    counts = sorted({len(v) for v in vectors})
    if len(counts) > 1:
        raise ValueError(f'features have different channel counts {counts}; they come from different sites or archs')
    return np.mean(vectors, axis=0)


def top_k_share(mean_abs, k):
    """Share of the total mean |activation| held by the ``k`` strongest channels, in [k/C, 1].

    ``k`` larger than the channel count counts every channel (share 1). All-zero responses have
    no share to speak of: NaN.
    """
    if int(k) < 1:
        raise ValueError(f'top_k must be at least 1, got {k}')
    values = np.sort(np.asarray(mean_abs, dtype=np.float64))[::-1]
    total = values.sum()
    if total <= 0:
        return float('nan')
    return float(values[:int(k)].sum() / total)


@dataclass
class ChannelStats:
    """Per-channel mean |activation| of one model at one site over ``images`` images."""
    model: str
    arch: str
    site: str
    mean_abs: np.ndarray
    images: int

    @property
    def channels(self):
        return len(self.mean_abs)

    def shares(self):
        total = self.mean_abs.sum()
        return self.mean_abs / total if total > 0 else np.full_like(self.mean_abs, np.nan)

    def ranks(self):
        """Rank of each channel, 1 = largest mean |activation|; ties keep channel order."""
        order = np.argsort(-self.mean_abs, kind='stable')
        ranks = np.empty(self.channels, dtype=int)
        ranks[order] = np.arange(1, self.channels + 1)
        return ranks

    def top_k_share(self, k):
        return top_k_share(self.mean_abs, k)


# --------------------------------------------------------------------------- inputs and models
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
    from ..utils.options import read_option_file
    from ..utils.schema import OptionError
    from .benchmark import validate_models
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
    from .benchmark import build_models
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
    from basicsr.utils.matlab_functions import imresize
    img = read_image(path, float32=True, order='rgb')
    if downscale:
        img = np.clip(imresize(mod_crop(img, scale), 1. / scale, antialiasing=True), 0, 1)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None]


def collect_channel_stats(models, site, files, downscale=False, progress=False):
    """Capture ``site`` of every model on every image.

    Every model is checked for the site before any image is read. Only the first image's
    feature of each model is kept (for the grid); the statistics accumulate per image.

    Returns:
        (stats, first): a :class:`ChannelStats` per model, and per model name the first image's feature.
    """
    for m in models:
        try:
            find_site(m.net, site)
        except SiteError as err:
            raise SiteError(f"model '{m.name}': {err}") from err
    from tqdm import tqdm
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
            first.setdefault(m.name, feat)
    stats = [ChannelStats(m.name, m.arch, site, np.mean(vectors[m.name], axis=0), len(files)) for m in models]
    return stats, first


# --------------------------------------------------------------------------- plots and tables
def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout='constrained')
    FigureCanvasAgg(fig)
    return fig


def _shrink(maps):
    # a panel is ~130 px wide: area-averaging larger maps first loses nothing visible and keeps plots fast
    factor = math.ceil(max(maps.shape[-2:]) / GRID_MAX_SIDE)
    if factor <= 1:
        return maps
    size = (-(-maps.shape[-2] // factor), -(-maps.shape[-1] // factor))
    return F.adaptive_avg_pool2d(maps[None], size)[0]


def plot_channel_grid(path, feature, title, max_channels=64):
    """A grid of the |activation| maps of one image's feature, strongest channel first.

    Channels are sorted by their mean |activation| on this image and labelled with their index;
    at most ``max_channels`` (the strongest) are shown. All panels share one colour scale, from 0
    to the :data:`GRID_PERCENTILE` th percentile of every |activation| shown, so a weak channel
    looks dark next to a dominant one (a per-panel scale would make every channel look alike).
    Returns the matplotlib Figure (already saved to ``path``).
    """
    if feature.ndim == 4:
        if feature.shape[0] != 1:
            raise ValueError(f'expected the feature of one image, got a batch of {feature.shape[0]}')
        feature = feature[0]
    maps = feature.detach().float().abs().cpu()
    order = np.argsort(-maps.double().mean(dim=(1, 2)).numpy(), kind='stable')[:max(1, int(max_channels))]
    shown = _shrink(maps[torch.from_numpy(order.copy())]).numpy()
    vmax = float(np.percentile(shown, GRID_PERCENTILE))
    vmax = vmax if vmax > 0 else 1.0  # silent channels: any positive scale shows them black
    n = len(order)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    aspect = shown.shape[2] / shown.shape[1]
    fig = _figure(max(4.0, 1.3 * cols * min(aspect, 2.0) + 1.0), 1.3 * rows + 0.9)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for ax, channel, panel in zip(axes, order, shown):
        image = ax.imshow(panel, cmap='inferno', vmin=0.0, vmax=vmax, interpolation='nearest')
        ax.set_title(f'ch {channel}', fontsize=7, pad=2)
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=f'|activation| (scale 0 to {GRID_PERCENTILE:g}th pct)')
    shown_of = f'{n} of {feature.shape[0]}' if n < feature.shape[0] else f'all {n}'
    fig.suptitle(f'{title}\n{shown_of} channels, sorted by mean |activation|; shared colour scale 0–{vmax:.3g}',
                 fontsize=9)
    fig.savefig(path, dpi=100)
    return fig


def plot_channel_comparison(path, stats: List[ChannelStats], site, top_k=8):
    """Per-channel mean |activation|, sorted descending, one line per model.

    Each model's values are divided by their sum (its total response), so a point is the share
    of the model's response held by the channel of that rank: models with different feature
    scales compare, and the first ``k`` points add up to the top-k share. Returns the Figure.
    """
    fig = _figure(7.0, 4.5)
    ax = fig.subplots()
    markers = 'osD^v<>ph*'
    for i, s in enumerate(stats):
        ranks = np.arange(1, s.channels + 1)
        share = np.sort(s.shares())[::-1]
        ax.plot(ranks, share, marker=markers[i % len(markers)] if s.channels <= 64 else None, markersize=3,
                linewidth=1.2, label=f'{s.model} ({s.channels} ch, top-{top_k} share {s.top_k_share(top_k):.3f})')
    for c in sorted({s.channels for s in stats}):
        ax.axhline(1.0 / c, color='gray', linestyle=':', linewidth=1, label=f'uniform (1/{c})')
    images = sorted({s.images for s in stats})
    ax.set_title(f'Site {site}: per-channel mean |activation|, sorted\n'
                 f"normalised per model to sum 1; {'/'.join(map(str, images))} image(s)", fontsize=10)
    ax.set_xlabel('channel rank (1 = strongest)')
    ax.set_ylabel("share of the model's total mean |activation|")
    ax.set_xlim(0.5, max(s.channels for s in stats) + 0.5)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title='Model')
    fig.savefig(path, dpi=120)
    return fig


CSV_FIELDS = ('model', 'channel', 'mean_abs', 'rank', 'share')


def write_channel_stats(path, stats: List[ChannelStats]):
    """One row per model and channel (channel order): model, channel, mean_abs, rank, share."""
    from .report import write_csv
    rows = []
    for s in stats:
        for c, (value, rank, share) in enumerate(zip(s.mean_abs, s.ranks(), s.shares())):
            rows.append({'model': s.model, 'channel': c, 'mean_abs': f'{value:.9g}', 'rank': int(rank),
                         'share': f'{share:.9g}'})
    write_csv(path, rows, list(CSV_FIELDS))


def _file_stem(name):
    return re.sub(r'[^\w.+-]', '_', str(name))


def write_channel_maps(out_dir, stats: List[ChannelStats], first, image_name, top_k=8, max_channels=64):
    """Write ``<out_dir>/<model>_maps.png`` per model, ``comparison.png`` and ``channel_stats.csv``; returns paths."""
    stems = [_file_stem(s.model) for s in stats]
    clash = next((s.model for s, stem in zip(stats, stems) if stems.count(stem) > 1), None)
    if clash is not None:
        raise ValueError(f"model names {[s.model for s in stats]} give the same file name for '{clash}'; rename one")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for s, stem in zip(stats, stems):
        path = os.path.join(out_dir, f'{stem}_maps.png')
        plot_channel_grid(path, first[s.model], f'{s.model} ({s.arch}) at {s.site} on {image_name}', max_channels)
        written.append(path)
    path = os.path.join(out_dir, 'comparison.png')
    plot_channel_comparison(path, stats, stats[0].site, top_k)
    written.append(path)
    path = os.path.join(out_dir, 'channel_stats.csv')
    write_channel_stats(path, stats)
    written.append(path)
    return written


def format_table(stats: List[ChannelStats], top_k=8):
    """Plain-text table: model, arch, channels, top-k share, and the share k/C of equal channels."""
    header = ('model', 'arch', 'channels', f'top-{top_k} share', 'uniform')
    rows = [(s.model, s.arch, str(s.channels), f'{s.top_k_share(top_k):.3f}',
             f'{min(top_k, s.channels) / s.channels:.3f}') for s in stats]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        lines.append('  '.join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return '\n'.join(lines)
