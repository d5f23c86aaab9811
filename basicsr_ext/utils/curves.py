"""What the training loop calls to keep ``history.jsonl`` and redraw ``curves.png``."""
import os
import time

from .curve_plots import plot_history
from .history import HISTORY_FILE, History

CURVES_FILE = 'curves.png'
# redraws requested sooner than this share of the time since the last one allows are left to the next request
# or the end of training: with --debug (validation every 8 iterations) drawing would otherwise dominate a run
PLOT_TIME_SHARE = 0.05


class TrainingCurves:
    """What the training loop calls: records into ``<experiments_root>/history.jsonl`` and redraws
    ``curves.png`` on request (``logger.plot_curves``). Inactive on ranks other than 0.

    A plotting failure (matplotlib missing, a full disk) is reported once as a warning and never
    stops training; the history keeps being written.
    """

    def __init__(self, options, resume_iter, logger):
        """``options``: the typed training options (``config.typed_training_options``; the model's
        ``options``); read are ``rank``, ``name``, ``logger.plot_curves``, ``path.experiments_root`` and each
        validation metric's ``better``."""
        self.active = options.rank == 0
        self.logger = logger
        self.title = options.name
        self.plot_enabled = options.logger.plot_curves
        root = options.path.experiments_root
        self.png = os.path.join(root, CURVES_FILE)
        metrics = options.val.metrics if options.val is not None else {}
        self.better = {m: metric.better for m, metric in metrics.items()}
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
