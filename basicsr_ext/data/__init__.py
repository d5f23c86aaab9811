"""Datasets, the training degradation, and resumable, reproducible data loading.

Reproducibility design: the training sampler yields ``(epoch, index)`` pairs from a
permutation seeded by ``(seed, epoch)``, and :class:`SeededDataset` seeds ``random``,
``numpy`` and ``torch`` from ``(seed, epoch, index)`` around each ``__getitem__`` (then
restores the caller's RNG state). A sample therefore does not depend on which worker or
rank loads it, and resuming at (epoch, position) replays exactly the same batches.
"""
import hashlib
import importlib
import os
import random
from copy import deepcopy
from os import path as osp

import numpy as np
import torch
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils.data import Dataset, Sampler

_folder = osp.dirname(osp.abspath(__file__))
_modules = [
    importlib.import_module(f'basicsr_ext.data.{osp.splitext(f)[0]}') for f in sorted(os.listdir(_folder))
    if f.endswith('_dataset.py')
]


from ..utils.typed import as_plain, typed_options  # noqa: E402
from .degradation import HighOrderDegradation  # noqa: E402
from .gt_only_dataset import loader_options  # noqa: E402

DEGRADATION_TYPES = {'HighOrderDegradation': HighOrderDegradation}


def build_degradation(opt, scale, device):
    opt = dict(opt)
    return DEGRADATION_TYPES[opt.pop('type')](opt, scale, device)


def sample_seed(*parts):
    """A stable 32-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, 'little')


class ResumableSampler(Sampler):
    """Shuffled, optionally enlarged and sharded sampler that can start mid-epoch.

    Yields ``(epoch, index)``; rank r of w takes every w-th index of the epoch's permutation,
    so w ranks × batch b see the same samples per step as 1 rank × batch w·b.
    """

    def __init__(self, dataset_len, seed=0, num_replicas=1, rank=0, ratio=1, batch_size=1):
        self.dataset_len = dataset_len
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.total = int(dataset_len * ratio)
        # drop the tail so every rank has the same whole number of batches
        self.per_rank = (self.total // (num_replicas * batch_size)) * batch_size
        if self.per_rank == 0:
            raise ValueError(f'the training set has {dataset_len} images (×{ratio} enlarge ratio), fewer than '
                             f'one batch of {batch_size} per process × {num_replicas} processes')
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch, start=0):
        """Start ``epoch`` at sample ``start`` of this rank (for resuming mid-epoch)."""
        self.epoch = epoch
        self.start = start

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(sample_seed('sampler', self.seed, self.epoch))
        perm = torch.randperm(self.total, generator=g).tolist()
        mine = perm[self.rank:self.per_rank * self.num_replicas:self.num_replicas]
        for i in mine[self.start:]:
            yield (self.epoch, i)

    def __len__(self):
        return self.per_rank - self.start


class SeededDataset(Dataset):
    """Wraps a map-style dataset; item ``(epoch, i)`` is ``base[i % len]`` under a per-sample seed."""

    def __init__(self, base, seed):
        self.base = base
        self.seed = seed
        self.opt = getattr(base, 'opt', {})

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        s = sample_seed('sample', self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)
            try:
                return self.base[index % len(self.base)]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def build_dataset(dataset_opt):
    opt = deepcopy(dataset_opt)
    return DATASET_REGISTRY.get(opt['type'])(opt)


LOADER_OPTIONS = {key: spec for key, spec in loader_options('').items()
                  if key in ('batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio', 'pin_memory',
                             'persistent_workers', 'prefetch_mode')}


def dataset_name(dataset):
    """The ``name`` option of a dataset: ours carry typed options, basicsr's a plain dict."""
    opt = dataset.opt
    return opt['name'] if isinstance(opt, dict) else opt.name


def loader_settings(dataset_opt):
    """The loader keys (:data:`LOADER_OPTIONS`) of a training dataset section, typed; absent ones take their
    schema defaults (a basicsr dataset's section need not state them all)."""
    return typed_options({k: v for k, v in as_plain(dataset_opt).items() if k in LOADER_OPTIONS}, LOADER_OPTIONS,
                         'LoaderOptions')


def build_train_loader(dataset, dataset_opt, seed, world_size=1, rank=0):
    """The resumable training loader, configured by :func:`loader_settings` of ``dataset_opt``."""
    opt = loader_settings(dataset_opt)
    batch = opt.batch_size_per_gpu
    sampler = ResumableSampler(
        len(dataset), seed=seed, num_replicas=world_size, rank=rank, ratio=opt.dataset_enlarge_ratio,
        batch_size=batch)
    workers = opt.num_worker_per_gpu
    loader = torch.utils.data.DataLoader(
        SeededDataset(dataset, seed),
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        # a private generator keeps the loader from drawing on the global RNG, whose state is checkpointed
        generator=torch.Generator().manual_seed(seed),
        pin_memory=bool(opt.pin_memory),
        persistent_workers=bool(workers) and opt.persistent_workers)
    return loader, sampler


class _Shard(Dataset):

    def __init__(self, base, indices):
        self.base, self.indices = base, indices
        self.opt = getattr(base, 'opt', {})

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[self.indices[i]]


def build_val_loader(dataset, world_size=1, rank=0):
    """Batch-1 loader over this rank's share of the images (rank r takes images r, r+w, ...)."""
    shard = dataset if world_size == 1 else _Shard(dataset, list(range(rank, len(dataset), world_size)))
    # a private generator: creating the iterator must not draw on the checkpointed global RNG
    return torch.utils.data.DataLoader(shard, batch_size=1, shuffle=False, num_workers=0,
                                       generator=torch.Generator())


__all__ = [
    'DEGRADATION_TYPES', 'ResumableSampler', 'SeededDataset', 'build_dataset', 'build_degradation',
    'build_train_loader', 'build_val_loader', 'dataset_name', 'loader_settings', 'sample_seed'
]
