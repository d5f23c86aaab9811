"""Channel correlation: how alike the channels of one layer respond (the EATS paper's Fig. 7-8).

EATS argues that a plainly trained SR network has redundant channels, whose responses look alike,
and that erasing and awakening filters makes them more distinct. The figure is the matrix of
cosine similarities between the channel responses of one layer, and the number that sums it up
is the mean of its off-diagonal entries.

Definitions (docs/channel_maps.md#channel-correlation), for a model, a site with C channels and
images 1..N, with x the feature at that site:

* the **response** of channel c is the vector of its values x[c] over every pixel of every image
  (all images concatenated: each pixel counts the same);
* **cos(a, b)** = <r_a, r_b> / (|r_a| |r_b|), accumulated as the Gram matrix G = Σ_images X Xᵀ of the
  (C, pixels) matrices X, so cos(a, b) = G[a, b] / sqrt(G[a, a] G[b, b]). Values are raw (not centred):
  this is cosine similarity, not Pearson correlation. A silent channel (|r| = 0) has NaN similarities;
* **mean off-diagonal** = the mean of cos(a, b) over a ≠ b (NaN entries left out); the mean of
  |cos(a, b)| is reported beside it.
"""
import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from .channel_plots import new_figure, text_table
from .report import write_csv

__all__ = [
    'gram_matrix', 'cosine_matrix', 'mean_off_diagonal', 'ChannelCorrelation', 'CorrelationAccumulator',
    'plot_channel_correlation', 'write_channel_correlation', 'format_correlation_table'
]


def gram_matrix(feature):
    """G = Σ over batch and pixels of x xᵀ for an NCHW feature: a (C, C) float64 numpy array."""
    if feature.ndim != 4:
        raise ValueError(f'expected an NCHW feature, got shape {tuple(feature.shape)}')
    x = feature.detach().double().transpose(0, 1).reshape(feature.shape[1], -1)
    return (x @ x.T).cpu().numpy()


def cosine_matrix(gram):
    """cos(a, b) = G[a, b] / sqrt(G[a, a] G[b, b]); rows and columns of silent channels are NaN."""
    gram = np.asarray(gram, dtype=np.float64)
    norms = np.sqrt(np.clip(np.diag(gram), 0, None))
    with np.errstate(divide='ignore', invalid='ignore'):
        cos = gram / np.outer(norms, norms)
    cos[(norms == 0)[:, None] | (norms == 0)[None, :]] = np.nan
    return np.clip(cos, -1.0, 1.0)


def _off_diagonal(matrix):
    matrix = np.asarray(matrix, dtype=np.float64)
    values = matrix[~np.eye(matrix.shape[0], dtype=bool)]
    return values[np.isfinite(values)]


def mean_off_diagonal(matrix, absolute=False):
    """Mean of the off-diagonal entries (NaN ones left out); NaN when there are none."""
    values = _off_diagonal(matrix)
    if absolute:
        values = np.abs(values)
    return float(values.mean()) if values.size else float('nan')


@dataclass
class ChannelCorrelation:
    """The cosine-similarity matrix of one model's channels at one site, over ``images`` images."""
    model: str
    arch: str
    site: str
    matrix: np.ndarray
    images: int

    @property
    def channels(self):
        return self.matrix.shape[0]

    @property
    def mean_off_diagonal(self):
        return mean_off_diagonal(self.matrix)

    @property
    def mean_abs_off_diagonal(self):
        return mean_off_diagonal(self.matrix, absolute=True)


class CorrelationAccumulator:
    """Collects Gram matrices per model; pass :meth:`add` as ``on_feature`` of ``collect_channel_stats``."""

    def __init__(self, site):
        self.site = site
        self.grams: Dict[str, np.ndarray] = {}
        self.images: Dict[str, int] = {}
        self.arch: Dict[str, str] = {}

    def add(self, model, feature):
        gram = gram_matrix(feature)
        if model.name in self.grams:
            if self.grams[model.name].shape != gram.shape:
                raise ValueError(f"model '{model.name}': features of {gram.shape[0]} and "
                                 f'{self.grams[model.name].shape[0]} channels at {self.site}')
            self.grams[model.name] += gram
        else:
            self.grams[model.name] = gram
        self.images[model.name] = self.images.get(model.name, 0) + feature.shape[0]
        self.arch[model.name] = model.arch

    def results(self) -> List[ChannelCorrelation]:
        return [ChannelCorrelation(name, self.arch[name], self.site, cosine_matrix(gram), self.images[name])
                for name, gram in self.grams.items()]


def plot_channel_correlation(path, results: List[ChannelCorrelation]):
    """One heat map per model (channels in index order, colour -1 to 1), its mean off-diagonal in the title."""
    n = len(results)
    fig = new_figure(3.6 * n + 0.8, 3.9)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
    image = None
    for ax, r in zip(axes, results):
        image = ax.imshow(r.matrix, cmap='RdBu_r', vmin=-1.0, vmax=1.0, interpolation='nearest')
        ax.set_title(f'{r.model} ({r.channels} ch)\nmean off-diagonal {r.mean_off_diagonal:.3f}', fontsize=9)
        ax.set_xlabel('channel')
        ax.set_ylabel('channel')
    fig.colorbar(image, ax=list(axes), shrink=0.8, label='cosine similarity of channel responses')
    images = sorted({r.images for r in results})
    fig.suptitle(f"Site {results[0].site}: channel correlation over {'/'.join(map(str, images))} image(s)",
                 fontsize=10)
    fig.savefig(path, dpi=120)
    return fig


SUMMARY_FIELDS = ('model', 'arch', 'site', 'channels', 'images', 'mean_off_diagonal', 'mean_abs_off_diagonal')


def write_channel_correlation(out_dir, results: List[ChannelCorrelation]):
    """Write ``correlation.png``, ``correlation.csv`` (model, channel_a, channel_b, cosine: every entry) and
    ``correlation_summary.csv`` (one row per model) to ``out_dir``; returns the paths."""
    if not results:
        raise ValueError('no channel correlation to write')
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, 'correlation.png')
    plot_channel_correlation(png, results)
    rows = []
    for r in results:
        for a in range(r.channels):
            for b in range(r.channels):
                rows.append({'model': r.model, 'channel_a': a, 'channel_b': b, 'cosine': f'{r.matrix[a, b]:.9g}'})
    matrix_csv = os.path.join(out_dir, 'correlation.csv')
    write_csv(matrix_csv, rows, ['model', 'channel_a', 'channel_b', 'cosine'])
    summary_csv = os.path.join(out_dir, 'correlation_summary.csv')
    write_csv(summary_csv, [{'model': r.model, 'arch': r.arch, 'site': r.site, 'channels': r.channels,
                             'images': r.images, 'mean_off_diagonal': f'{r.mean_off_diagonal:.9g}',
                             'mean_abs_off_diagonal': f'{r.mean_abs_off_diagonal:.9g}'} for r in results],
              list(SUMMARY_FIELDS))
    return [png, matrix_csv, summary_csv]


def format_correlation_table(results: List[ChannelCorrelation]):
    """Plain-text table: model, arch, channels, mean off-diagonal cosine, mean |cosine|."""
    return text_table(('model', 'arch', 'channels', 'mean off-diag cos', 'mean |off-diag cos|'),
                      [(r.model, r.arch, str(r.channels), f'{r.mean_off_diagonal:.4f}',
                        f'{r.mean_abs_off_diagonal:.4f}') for r in results])
