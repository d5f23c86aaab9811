"""Curves of a training history: series, the best point, and the PNG plots (matplotlib, imported on use)."""
import math
import os

from .checkpoint import atomic_write
from .history import _records_of, history_path

_METRIC_LABELS = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM', 'lpips': 'LPIPS', 'niqe': 'NIQE'}



# ---------------------------------------------------------------------------------------------- series
def train_series(records):
    """``(iters, {loss: values}, [lr values per param group])`` of the training records, in file order."""
    train = [r for r in records if r['kind'] == 'train']
    iters = [r['iter'] for r in train]
    names = list(dict.fromkeys(k for r in train for k in r['losses']))
    losses = {k: [r['losses'].get(k, math.nan) for r in train] for k in names}
    per_record = [r.get('lr') or [] for r in train]
    groups = max(map(len, per_record), default=0)
    lrs = [[lr[g] if g < len(lr) else math.nan for lr in per_record] for g in range(groups)]
    return iters, losses, lrs


def val_series(records):
    """``{metric: {val_set: (iters, values, better)}}`` of the validation records, in file order."""
    out = {}
    for r in records:
        if r['kind'] != 'val':
            continue
        for metric, value in r['metrics'].items():
            its, vals, _ = out.setdefault(metric, {}).get(r['val_set'], ([], [], None))
            its.append(r['iter'])
            vals.append(value)
            out[metric][r['val_set']] = (its, vals, (r.get('better') or {}).get(metric, 'higher'))
    return out


def best_point(iters, values, better='higher'):
    """``(iteration, value)`` of the best finite value; a tie goes to the later iteration, as in basicsr's
    best-metric tracking. None when no value is finite."""
    best = None
    for it, v in zip(iters, values):
        if not math.isfinite(v):
            continue
        if best is None or (v >= best[1] if better == 'higher' else v <= best[1]):
            best = (it, v)
    return best


def moving_average(values, n):
    """Trailing mean over ``n`` points; the first points average what came before them."""
    if n <= 1:
        return list(values)
    out, window, total = [], [], 0.0
    for v in values:
        window.append(v)
        total += v
        if len(window) > n:
            total -= window.pop(0)
        out.append(total / len(window))
    return out


def metric_label(metric):
    return _METRIC_LABELS.get(metric.lower(), metric)


# ---------------------------------------------------------------------------------------------- plotting
def _positive(*series):
    values = [v for s in series for v in s if math.isfinite(v)]
    return bool(values) and min(values) > 0


def _new_figure(panels, title):
    # matplotlib takes a second to import; only runs that plot pay for it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    cols = 1 if panels == 1 else 2
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(6.4 * cols, 3.9 * rows + 0.5), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=13)
    for ax in axes[:panels]:
        ax.set_xlabel('iteration')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    return fig, axes[:panels]


def _save(fig, out_png):
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
    return str(out_png)


def _log_scale_if_positive(ax, *series):
    if _positive(*series):
        ax.set_yscale('log')
        return True
    ax.ticklabel_format(axis='y', useOffset=False)
    return False


def _mark_best(ax, iters, values, better, color, label):
    best = best_point(iters, values, better)
    if best is not None:
        ax.plot([best[0]], [best[1]], marker='*', markersize=13, color=color, markeredgecolor='black',
                linestyle='none', label=f'{label} best: {best[1]:.4f} @ {best[0]:,d}')


def plot_history(history, out_png, title=None):
    """Draw the curves of one run into ``out_png``: training losses, learning rate, one panel per
    validation metric (a line per validation set, its best value starred). Panels without data are left out.

    ``history`` is a history.jsonl path, an experiment folder, or a list of records. Returns ``out_png``,
    or None (writing nothing) when there is no record to draw. The PNG is replaced atomically.
    """
    if title is None and isinstance(history, (str, os.PathLike)):
        title = os.path.basename(os.path.dirname(os.path.abspath(history_path(history))))
    records = _records_of(history)
    iters, losses, lrs = train_series(records)
    metrics = val_series(records)
    panels = (['losses'] if losses else []) + (['lr'] if lrs else []) + [('metric', m) for m in metrics]
    if not panels:
        return None
    fig, axes = _new_figure(len(panels), title)
    for ax, panel in zip(axes, panels):
        if panel == 'losses':
            for name, values in losses.items():
                ax.plot(iters, values, linewidth=1.2, label=name)
            log = _log_scale_if_positive(ax, *losses.values())
            ax.set_title('Training losses')
            ax.set_ylabel('loss' + (' (log scale)' if log else ''))
        elif panel == 'lr':
            for g, values in enumerate(lrs):
                ax.plot(iters, values, linewidth=1.2, drawstyle='steps-post',
                        label='lr' if len(lrs) == 1 else f'param group {g}')
            log = _log_scale_if_positive(ax, *lrs)
            ax.set_title('Learning rate')
            ax.set_ylabel('learning rate' + (' (log scale)' if log else ''))
        else:
            metric = panel[1]
            for k, (val_set, (its, vals, better)) in enumerate(metrics[metric].items()):
                color = f'C{k % 10}'
                ax.plot(its, vals, marker='o', markersize=3, linewidth=1.2, color=color, label=val_set)
                _mark_best(ax, its, vals, better, color, val_set)
            ax.set_title(f'Validation {metric}')
            ax.set_ylabel(metric_label(metric))
            ax.ticklabel_format(axis='y', useOffset=False)
        ax.legend(loc='best', fontsize=8)
    return _save(fig, out_png)


def plot_comparison(runs, out_png, metric=None, val_set=None, smooth=1, title=None):
    """Overlay runs in one PNG: training losses (one colour per run, a line style per loss), and
    ``metric`` on ``val_set`` when given. ``runs`` is a list of ``(name, records)``. Returns ``out_png``.

    With ``smooth > 1`` the losses are drawn as a trailing moving average over that many records,
    over the raw values drawn faintly.
    """
    with_losses = [(name, train_series(records)) for name, records in runs]
    panels = (['losses'] if any(s[1] for _, s in with_losses) else []) + (['metric'] if metric else [])
    if not panels:
        raise ValueError('none of the runs has a training or validation record to plot')
    fig, axes = _new_figure(len(panels), title or 'Training curves: ' + ', '.join(name for name, _ in runs))
    styles = ('-', '--', ':', '-.')
    for ax, panel in zip(axes, panels):
        for k, (name, records) in enumerate(runs):
            color = f'C{k % 10}'
            if panel == 'losses':
                iters, losses, _ = with_losses[k][1]
                for j, (loss, values) in enumerate(losses.items()):
                    if smooth > 1:
                        ax.plot(iters, values, color=color, linewidth=0.8, alpha=0.25, linestyle=styles[j % 4])
                    ax.plot(iters, moving_average(values, smooth), color=color, linewidth=1.3,
                            linestyle=styles[j % 4], label=f'{name}: {loss}')
            else:
                series = val_series(records).get(metric, {}).get(val_set)
                if series:
                    its, vals, better = series
                    ax.plot(its, vals, marker='o', markersize=3, linewidth=1.2, color=color, label=name)
                    _mark_best(ax, its, vals, better, color, name)
        if panel == 'losses':
            log = _log_scale_if_positive(ax, *(v for _, s in with_losses for v in s[1].values()))
            ax.set_title('Training loss' + (f' (moving average over {smooth} logged points)' if smooth > 1 else ''))
            ax.set_ylabel('loss' + (' (log scale)' if log else ''))
        else:
            ax.set_title(f'Validation {metric} on {val_set}')
            ax.set_ylabel(metric_label(metric))
            ax.ticklabel_format(axis='y', useOffset=False)
        ax.legend(loc='best', fontsize=8)
    return _save(fig, out_png)


# ---------------------------------------------------------------------------------------------- training
