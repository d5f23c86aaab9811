"""Channel maps, drawn and written: a grid of one image's feature per model, the sorted per-channel
comparison of all models, the per-channel CSV and the plain-text summary (docs/channel_maps.md).

The statistics come from :mod:`.channel_stats`.
"""
import math
import os
import re
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from .channel_stats import ChannelStats
from .report import write_csv

__all__ = [
    'GRID_PERCENTILE', 'GRID_MAX_SIDE', 'CSV_FIELDS', 'plot_channel_grid', 'plot_channel_comparison',
    'write_channel_stats', 'write_channel_maps', 'format_table', 'new_figure', 'file_stem', 'text_table',
    'finish_rank_axes'
]

#: the shared colour scale of a grid runs from 0 to this percentile of all |activation| values it shows
GRID_PERCENTILE = 99.5
#: maps are area-averaged to at most this many pixels on their longer side before plotting
GRID_MAX_SIDE = 128


def new_figure(width, height):
    """A matplotlib Figure (Agg canvas, constrained layout) of ``width`` × ``height`` inches."""
    # why: optional heavy dependency (matplotlib), only needed when plots are written
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # why: as above
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
    fig = new_figure(max(4.0, 1.3 * cols * min(aspect, 2.0) + 1.0), 1.3 * rows + 0.9)
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
    fig = new_figure(7.0, 4.5)
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
    finish_rank_axes(ax, 'channel rank (1 = strongest)', "share of the model's total mean |activation|",
                     max(s.channels for s in stats))
    ax.set_ylim(bottom=0)
    fig.savefig(path, dpi=120)
    return fig


def finish_rank_axes(ax, xlabel, ylabel, channels):
    """Labels, x range 1..channels, grid and model legend of a plot of per-channel values against rank."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0.5, channels + 0.5)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title='Model')


CSV_FIELDS = ('model', 'channel', 'mean_abs', 'rank', 'share')


def write_channel_stats(path, stats: List[ChannelStats]):
    """One row per model and channel (channel order): model, channel, mean_abs, rank, share."""
    rows = []
    for s in stats:
        for c, (value, rank, share) in enumerate(zip(s.mean_abs, s.ranks(), s.shares())):
            rows.append({'model': s.model, 'channel': c, 'mean_abs': f'{value:.9g}', 'rank': int(rank),
                         'share': f'{share:.9g}'})
    write_csv(path, rows, list(CSV_FIELDS))


def file_stem(name):
    """``name`` made safe as a file name."""
    return re.sub(r'[^\w.+-]', '_', str(name))


def write_channel_maps(out_dir, stats: List[ChannelStats], first, image_name, top_k=8, max_channels=64):
    """Write ``<out_dir>/<model>_maps.png`` per model, ``comparison.png`` and ``channel_stats.csv``; returns paths."""
    stems = [file_stem(s.model) for s in stats]
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
    return text_table(header, rows)


def text_table(header, rows, left=2):
    """Columns padded to their widest entry; the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in list(rows) + [header]) for i in range(len(header))]
    lines = []
    for r in [header] + list(rows):
        lines.append('  '.join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return '\n'.join(lines)
