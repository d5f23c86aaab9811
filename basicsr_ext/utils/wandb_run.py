"""Weights & Biases logging of a training run, configured by ``logger.wandb`` as in BasicSR's option files.

The training loop makes one :class:`WandbRun` per run and calls it where it records the same numbers
into ``history.jsonl``: :meth:`~WandbRun.log_train` (losses, learning rates, it/s, epoch) and
:meth:`~WandbRun.log_validation` (each validation set's metrics), then :meth:`~WandbRun.finish`.
Names follow the tensorboard events: ``losses/<name>``, ``train/lr``, ``train/it_per_s``,
``metrics/<val set>/<metric>``; every value is plotted against ``iteration``, so a resumed run that
logs iterations again (after the last checkpoint) is not dropped by wandb's step counter.

The run id is stored in each ``.state`` file (``wandb_run_id``); resuming from it continues the same
wandb run (``resume='allow'``). ``logger.wandb.resume_id`` names another run to continue instead.
Without ``logger.wandb.project`` (or on ranks other than 0) the object does nothing.
"""
import os

__all__ = ['WandbRun']


class WandbRun:
    """One training run's wandb run, or a no-op when wandb logging is off.

    Args:
        options: the typed training options (``config.typed_training_options``; the model's ``options``):
            ``logger.wandb``, ``name``, ``rank``, ``path.experiments_root``; all of them go to wandb's config.
        stored_id: the run id of the .state file this run resumes from, if any.
        logger: where to say which run is logged to.

    Raises:
        RuntimeError: wandb is configured but cannot start a run (not logged in, no network):
            the message says how to log in or to log offline.
    """

    def __init__(self, options, stored_id=None, logger=None):
        self._run = None
        self.id = None
        cfg = options.logger.wandb
        if not cfg.project or options.rank != 0:
            return
        # wandb is a large optional package (the wandb extra) that starts a service process: only runs
        # that log to it import it
        import wandb
        run_id = cfg.resume_id or stored_id  # None: wandb makes a new id
        # the run's files go to WANDB_DIR, else the experiment folder (read here: wandb keeps the first value it
        # saw in a process)
        folder = os.environ.get('WANDB_DIR') or options.path.experiments_root
        try:
            self._run = wandb.init(project=cfg.project, entity=cfg.entity, name=cfg.name or options.name,
                                   tags=list(cfg.tags) or None, id=run_id, resume='allow',
                                   config=_plain(options.as_dict()), dir=folder)
        except Exception as err:  # wandb's errors differ by cause and version; the message names the fix
            which = f'run {run_id}' if run_id else 'a run'
            raise RuntimeError(f"logger.wandb: wandb could not start {which} in project {cfg.project!r} "
                               f'({type(err).__name__}: {err}). Log in with `wandb login` (or set WANDB_API_KEY), '
                               'or set WANDB_MODE=offline to write the run to disk and `wandb sync` it later.') from err
        self.id = self._run.id
        self._run.define_metric('iteration')
        self._run.define_metric('*', step_metric='iteration')
        if logger is not None:
            where = self._run.url or os.path.dirname(self._run.dir)
            why = ' (logger.wandb.resume_id)' if cfg.resume_id else ' (resumed)' if stored_id else ''
            logger.info(f'wandb run {self.id}{why}: {where}')

    @property
    def active(self):
        return self._run is not None

    def log_train(self, iteration, epoch, lrs, losses, it_per_s):
        if self._run is None:
            return
        data = {'iteration': iteration, 'train/epoch': epoch, 'train/it_per_s': it_per_s}
        data.update({f'losses/{k}': float(v) for k, v in losses.items()})
        lrs = list(lrs)
        data.update({'train/lr' if len(lrs) == 1 else f'train/lr_{i}': float(lr) for i, lr in enumerate(lrs)})
        self._run.log(data)

    def log_validation(self, iteration, results):
        """``results`` as the training loop's validation returns them: ``{val_set: {metric: value}}``."""
        if self._run is None:
            return
        data = {'iteration': iteration}
        for val_set, metrics in results.items():
            data.update({f'metrics/{val_set}/{m}': float(v) for m, v in metrics.items()})
        self._run.log(data)

    def finish(self, exit_code=0):
        """End the run (wandb writes out what it holds); 0 marks it finished, anything else failed.
        Only the first call acts, so a cleanup path may call :meth:`abort` after a successful finish."""
        if self._run is None:
            return
        run, self._run = self._run, None
        run.finish(exit_code=exit_code)

    def abort(self):
        """Finish as failed, unless :meth:`finish` already ran: for the cleanup of a run that ends early."""
        self.finish(exit_code=1)


def _plain(value):
    """The options as JSON-like values for wandb's config (tuples as lists, anything else as a string)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
