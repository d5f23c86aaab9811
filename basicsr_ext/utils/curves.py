"""Training history (``experiments/<name>/history.jsonl``) and its curves (``curves.png``).

The history holds one JSON object per line:

    {"kind": "train", "iter": 100, "epoch": 0, "lr": [0.0002], "losses": {"l_pix": 0.031}, "it_per_s": 5.7,
     "time": 1732000000.0}
    {"kind": "val", "iter": 5000, "val_set": "Set5", "metrics": {"psnr": 29.77}, "better": {"psnr": "higher"},
     "time": 1732000000.0}

(one line each in the file; ``time`` is the Unix time of the record).

Each record is appended and flushed on its own, so a killed run keeps everything it logged. A run that
resumes from iteration k first drops the records past k: that part of the run is done again, and the
history of a killed and resumed run then has the iterations of an uninterrupted one.

matplotlib is imported only when a plot is drawn, so importing this module (and the training
pipeline) does not need it.
"""
import json
import math
import os
import time

from .checkpoint import atomic_write

HISTORY_FILE = 'history.jsonl'
CURVES_FILE = 'curves.png'
_KINDS = ('train', 'val')
# redraws requested sooner than this share of the time since the last one allows are left to the next request
# or the end of training: with --debug (validation every 8 iterations) drawing would otherwise dominate a run
PLOT_TIME_SHARE = 0.05
_METRIC_LABELS = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM', 'lpips': 'LPIPS', 'niqe': 'NIQE'}


# ---------------------------------------------------------------------------------------------- reading
def history_path(path):
    """The history.jsonl of an experiment folder, or ``path`` itself when it is a file.

    Raises FileNotFoundError with a one-line message naming ``path``.
    """
    path = str(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, HISTORY_FILE)
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f'{path}: no {HISTORY_FILE} in this folder')
        return candidate
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such experiment folder or history file')
    return path


def _check_record(record):
    """Why ``record`` is not a history record, or None."""
    if not isinstance(record, dict):
        return f'expected a JSON object, got {type(record).__name__}'
    if record.get('kind') not in _KINDS:
        return f"'kind' must be one of {', '.join(_KINDS)}, got {record.get('kind')!r}"
    if not isinstance(record.get('iter'), int) or isinstance(record.get('iter'), bool):
        return f"'iter' must be an integer, got {record.get('iter')!r}"
    table = 'losses' if record['kind'] == 'train' else 'metrics'
    if not isinstance(record.get(table), dict):
        return f"a {record['kind']} record needs a '{table}' object"
    if record['kind'] == 'val' and not isinstance(record.get('val_set'), str):
        return "a val record needs a 'val_set' name"
    return None


def read_history(path):
    """The records of a history.jsonl (a file, or an experiment folder holding one).

    A last line without its newline that does not parse is what a kill in the middle of a write leaves;
    it is dropped. Any other line that is not a history record raises ValueError naming file and line.
    """
    path = history_path(path)
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    # after a complete write the text ends with '\n', so the last element is '' unless a write was cut short
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f'{path}, line {number}: not valid JSON ({err.msg} at column {err.colno})') from None
        problem = _check_record(record)
        if problem:
            raise ValueError(f'{path}, line {number}: {problem}')
        records.append(record)
    return records


def _records_of(history):
    """Records from a path, or a list of records passed through."""
    if isinstance(history, (str, os.PathLike)):
        return read_history(history)
    return list(history)


# ---------------------------------------------------------------------------------------------- writing
def _dump(record):
    # NaN/inf losses are kept (json writes NaN/Infinity and reads them back): a diverging run should show it
    return json.dumps(record, separators=(', ', ': ')) + '\n'


def truncate_history(path, last_iter):
    """Keep the records up to and including ``last_iter``, rewriting ``path`` atomically; returns them.

    Also drops a last line cut short by a kill, which appending would otherwise glue to the next record.
    """
    kept = [r for r in read_history(path) if r['iter'] <= last_iter]

    def write(tmp):
        with open(tmp, 'w', encoding='utf-8') as f:
            f.writelines(_dump(r) for r in kept)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)
    return kept


class History:
    """Appends records to a history.jsonl, one flushed line each.

    ``resume_iter=None`` starts a fresh file; an iteration truncates an existing file to it (see module doc).
    """

    def __init__(self, path, resume_iter=None):
        self.path = str(path)
        self.records = []
        if resume_iter is not None and os.path.isfile(self.path):
            self.records = truncate_history(self.path, resume_iter)
        self._file = open(self.path, 'a' if resume_iter is not None else 'w', encoding='utf-8')
        self._val_keys = {(r['iter'], r['val_set']) for r in self.records if r['kind'] == 'val'}

    def _append(self, record):
        record['time'] = round(time.time(), 3)
        self._file.write(_dump(record))
        self._file.flush()
        self.records.append(record)

    def log_train(self, iteration, epoch, lrs, losses, it_per_s):
        self._append({'kind': 'train', 'iter': int(iteration), 'epoch': int(epoch), 'lr': [float(x) for x in lrs],
                      'losses': {k: float(v) for k, v in losses.items()}, 'it_per_s': float(it_per_s)})

    def log_validation(self, iteration, val_set, metrics, better=None):
        """Returns False (and writes nothing) when this iteration of ``val_set`` is already in the history:
        a run resumed from its final checkpoint validates again what the history already holds."""
        if (iteration, val_set) in self._val_keys:
            return False
        better = better or {}
        self._append({'kind': 'val', 'iter': int(iteration), 'val_set': str(val_set),
                      'metrics': {k: float(v) for k, v in metrics.items()},
                      'better': {k: better.get(k, 'higher') for k in metrics}})
        self._val_keys.add((iteration, val_set))
        return True

    def close(self):
        self._file.close()


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
class TrainingCurves:
    """What the training loop calls: records into ``<experiments_root>/history.jsonl`` and redraws
    ``curves.png`` on request (``logger.plot_curves``). Inactive on ranks other than 0.

    A plotting failure (matplotlib missing, a full disk) is reported once as a warning and never
    stops training; the history keeps being written.
    """

    def __init__(self, opt, resume_iter, logger):
        self.active = opt.get('rank', 0) == 0
        self.logger = logger
        self.title = opt['name']
        self.plot_enabled = opt['logger'].get('plot_curves', True)
        root = opt['path']['experiments_root']
        self.png = os.path.join(root, CURVES_FILE)
        self.better = {m: (mopt or {}).get('better', 'higher')
                       for m, mopt in ((opt.get('val') or {}).get('metrics') or {}).items()}
        self._plotted = 0
        self._next_plot = 0.0
        self._warned = False
        self.history = None
        if not self.active:
            return
        path = os.path.join(root, HISTORY_FILE)
        try:
            self.history = History(path, resume_iter)
        except ValueError as err:
            # a history damaged by hand must not block the resume of a long run: keep it aside, start anew
            aside = f'{path}.damaged_{time.strftime("%Y%m%d_%H%M%S")}'
            os.replace(path, aside)
            logger.warning(f'{err}; the history was moved to {aside} and a new one starts at iteration '
                           f'{resume_iter:,d}.')
            self.history = History(path, None)

    def log_train(self, iteration, epoch, lrs, losses, it_per_s):
        if self.history:
            self.history.log_train(iteration, epoch, lrs, losses, it_per_s)

    def log_validation(self, iteration, results):
        """``results`` as validate_all returns them: ``{val_set: {metric: value}}``."""
        if self.history:
            for val_set, metrics in results.items():
                self.history.log_validation(iteration, val_set, metrics, self.better)

    def plot(self, final=False):
        """Redraw curves.png if something was recorded since the last drawing; unless ``final``, only when
        that keeps the drawing under ``PLOT_TIME_SHARE`` of the run time."""
        if not (self.history and self.plot_enabled) or self._plotted == len(self.history.records):
            return
        start = time.monotonic()
        if not final and start < self._next_plot:
            return
        self._plotted = len(self.history.records)
        try:
            plot_history(self.history.records, self.png, title=self.title)
        except Exception as err:  # the curves are a convenience; the run and its history go on
            if not self._warned:
                self._warned = True
                self.logger.warning(f'Could not draw {self.png} ({type(err).__name__}: {err}); training goes on '
                                    f'and {HISTORY_FILE} is still written. Further plotting errors are not reported.')
        self._next_plot = time.monotonic() + (time.monotonic() - start) * (1 / PLOT_TIME_SHARE - 1)

    def close(self):
        if self.history:
            self.history.close()
            self.history = None
