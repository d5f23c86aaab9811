"""The PNG of a report block, with the rules of the tables (:mod:`.report`).

One panel per metric, titled with ↑ (higher is better) or ↓ (lower is better): the models' means by
column, one line per model, the best model of each column ringed (in the metric's direction). Below each
panel, when there is an Improvement row, its bars: positive = better whatever the direction, green when
better, red when worse.
"""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..metrics import METRIC_INFO
from .report import IMPROVEMENT, arrow, best_values, columns, improvement_label
from .scoring import metric_ids

__all__ = ['plot_block']

_MARKERS = 'osD^v<>ph*'


def _panel(ax, models, metric, cols, opt):
    x = np.arange(len(cols))
    for k, r in enumerate(models):
        y = [r[metric].get(c, np.nan) for c in cols]
        ax.plot(x, y, marker=_MARKERS[k % len(_MARKERS)], linewidth=1.2, markersize=6, label=r['model'])
    best = best_values(models, metric, cols)
    bx = [i for i, c in enumerate(cols) if best[c] is not None]
    if len(models) > 1 and bx:
        ax.scatter(bx, [best[cols[i]] for i in bx], s=190, facecolors='none', edgecolors='black', linewidths=1.4,
                   zorder=5, label='best')
    info = METRIC_INFO[metric]
    channel = (' on Y' if opt['test_y_channel'] else ', RGB') if metric in ('psnr', 'ssim') else ''
    ax.set_ylabel(f'{info.label}{channel}')
    ax.set_title(f'{info.label} {arrow(metric)} ({info.better} is better)', fontsize=10)
    ax.grid(True, axis='y', alpha=0.3)
    ax.legend(loc='best', fontsize=8, frameon=True)


def _bars(ax, imp, metric, cols):
    x = np.arange(len(cols))
    vals = [imp[metric].get(c, np.nan) for c in cols]
    colors = ['tab:green' if (v or 0) >= 0 else 'tab:red' for v in vals]
    bars = ax.bar(x, vals, color=colors, width=0.6)
    dec = METRIC_INFO[metric].decimals
    ax.bar_label(bars, labels=[f'{v:+.{dec}f}' for v in vals], fontsize=8)
    ax.axhline(0, color='black', linewidth=0.8)
    ax.set_ylabel(f'{IMPROVEMENT}\n{improvement_label(imp, metric)}', fontsize=8)
    ax.margins(y=0.25)
    ax.grid(True, axis='y', alpha=0.3)


def plot_block(path, dataset, scale, block, opt):
    """Write the PNG of one (dataset, scale) block to ``path``: metric panels in a grid (one column of wide
    panels for the degradation columns, up to three side by side for a single real-set column)."""
    models = [r for r in block if r['model'] != IMPROVEMENT]
    imp = next((r for r in block if r['model'] == IMPROVEMENT), None)
    panels = []
    for metric in metric_ids(opt['metrics']):
        cols = [c for c in columns(opt) if any(c in r[metric] for r in models)]
        if cols:
            panels.append((metric, cols))
    widest = max(len(c) for _, c in panels)
    ncols = 1 if widest > 2 else min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    per = 2 if imp else 1
    width = max(6.0, 0.9 * widest + 2) if ncols == 1 else 3.6 * ncols
    fig = Figure(figsize=(width, nrows * (4.6 if imp else 3.2) + 0.5), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows * per, ncols, height_ratios=[2, 1][:per] * nrows, squeeze=False)
    for k, (metric, cols) in enumerate(panels):
        row, col = divmod(k, ncols)
        top = axes[row * per, col]
        _panel(top, models, metric, cols, opt)
        x = np.arange(len(cols))
        top.set_xticks(x, cols)
        top.set_xlim(-0.5, len(cols) - 0.5)
        if imp:
            bottom = axes[row * per + 1, col]
            _bars(bottom, imp, metric, cols)
            bottom.set_xticks(x, cols)
            bottom.set_xlim(-0.5, len(cols) - 0.5)
            top.tick_params(labelbottom=False)
    for k in range(len(panels), nrows * ncols):
        row, col = divmod(k, ncols)
        for ax in axes[row * per:(row + 1) * per, col]:
            ax.set_visible(False)
    what = 'by degradation' if columns(opt)[0] != 'real' else ''
    fig.suptitle(f'{dataset} ×{scale} {what} ({opt["protocol"]} protocol)'.replace('  ', ' '))
    fig.savefig(path, dpi=120)
