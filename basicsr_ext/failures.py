"""How a training run ends when something fails: one clear message for known failures, prompt cleanup.

Known failures (an unreadable or missing image, CUDA out of memory, a checkpoint that cannot be
written) are reported in one paragraph that names the file, option or value and what to do, with no
traceback. Anything else keeps its traceback in the log. Either way :class:`RunResources` ends the
loader workers, flushes the history, curves, tensorboard and log, and destroys the process group,
so the process exits promptly with a non-zero code.
"""
import multiprocessing
import re

import torch

from .data.image_io import ImageMissingError, ImageReadError
from .utils import dist as dist_util
from .utils.checkpoint import CheckpointWriteError
from .utils.logging import flush_logger

# how long loader workers get to exit on their own before they are killed
WORKER_EXIT_TIMEOUT = 5.0


def original_message(err):
    """The message of ``err``; for an exception re-raised from a DataLoader worker, the worker's own message.

    torch re-raises a worker's exception in the main process with the worker's whole traceback as
    its message ('Caught X in DataLoader worker process 0. Original Traceback ...').
    """
    text = str(err)
    if 'Original Traceback' not in text:
        return text
    name = type(err).__name__
    match = list(re.finditer(rf'(?m)^(?:[\w.]+\.)?{name}: ', text))
    return text[match[-1].end():].strip() if match else text.strip().splitlines()[-1]


def _patch_size(opt):
    train = opt['datasets'].get('train', {})
    degradation = opt.get('degradation') or {}
    return degradation.get('gt_size') or train.get('gt_size')


def describe_failure(err, opt, iteration):
    """One paragraph for a known failure, or None for an unexpected one."""
    where = f' at iteration {iteration:,d}' if iteration else ''
    if isinstance(err, ImageMissingError):
        return (f'Training stopped{where}: {original_message(err)}. The file was listed when the run started and '
                'has since been moved or deleted: restore it, or regenerate the dataset folder/meta_info; '
                "or set on_bad_image: skip in the dataset's options to skip missing or unreadable images.")
    if isinstance(err, ImageReadError):
        return (f'Training stopped{where}: {original_message(err)}. Replace or delete the file, or set '
                "on_bad_image: skip in the dataset's options to skip unreadable images (they are counted in the log).")
    if isinstance(err, torch.OutOfMemoryError):
        train = opt['datasets'].get('train', {})
        peak = ''
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
            peak = f', peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB of {total / 2**30:.1f} GiB'
        return (f'Training stopped{where}: out of GPU memory with batch_size_per_gpu '
                f"{train.get('batch_size_per_gpu')} and patch size {_patch_size(opt)}{peak}. Lower "
                'datasets.train.batch_size_per_gpu (train.accumulate: k keeps the effective batch), use '
                'train.amp: bf16, lower the patch size (degradation.gt_size or datasets.train.gt_size), or set '
                'val.tile_size if it happened during validation.')
    if isinstance(err, CheckpointWriteError):
        return (f'Training stopped{where}: {err.strerror}. The previous checkpoint is intact; free space (or fix '
                'the permissions) and continue with --auto_resume.')
    return None


class RunResources:
    """What a run must release however it ends: loader workers, writers, handlers, the process group."""

    def __init__(self):
        self.loader_iterators = []
        self.closers = []  # callables, run in order (curves, tensorboard, wandb, ...)
        self.stop = None
        self.logger = None

    def track_iterator(self, iterator):
        """The training loader's iterator of this epoch (earlier epochs' have ended their workers)."""
        self.loader_iterators = [iterator]
        return iterator

    def close(self):
        """Release everything; safe to call more than once. Signals act at once from here on."""
        if self.stop is not None:
            self.stop.restore()  # from here on a signal acts at once (the handlers the caller had)
            self.stop = None
        for iterator in self.loader_iterators:
            shutdown_workers(iterator)
        self.loader_iterators = []
        for close in self.closers:
            try:
                close()
            except Exception as err:  # a failing writer must not keep the others open
                if self.logger:
                    self.logger.warning(f'while closing the run: {type(err).__name__}: {err}')
        self.closers = []
        if self.logger:
            flush_logger(self.logger)
        dist_util.cleanup()


def shutdown_workers(iterator):
    """End a DataLoader iterator's worker processes: ask them to stop, then kill any that do not.

    The workers ignore SIGTERM/SIGINT (so a scheduler's signal to the whole job lets the main process
    save first), which is also what multiprocessing's exit handler sends them; without this the
    process would wait for them forever after an exception.
    """
    workers = list(getattr(iterator, '_workers', []) or [])
    shutdown = getattr(iterator, '_shutdown_workers', None)
    if shutdown is not None:
        try:
            shutdown()
        except Exception:  # a worker already gone; the kill below ends the rest
            pass
    for worker in workers:
        worker.join(timeout=WORKER_EXIT_TIMEOUT if worker.is_alive() else 0)
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=WORKER_EXIT_TIMEOUT)
    multiprocessing.active_children()  # reaps the ended workers
