"""Shared pieces of the speed-benchmark scripts: models built from options, interleaved timing, ratio tables.

Timings are ratios against a reference configuration measured in the same process and the same
rounds: the configurations take turns step by step, so a slow spell of a shared machine hits all
of them alike.
"""
import statistics
import time

import torch

from ..models import build_model
from .options import validate_options


def training_options(network, workdir, total_iter, regularizers=(), gt_size=None, **train):
    """A minimal options dict for a BlindSRModel that trains ``network`` ×4 (``gt_size``: with the training
    degradation)."""
    opt = {
        'name': 'benchmark', 'model_type': 'BlindSRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {'type': 'SkimagePhotosDataset', 'photos': ['astronaut'], 'gt_size': 32}},
        'network_g': dict(network), 'path': {'experiments_root': workdir},
        'train': {
            'total_iter': total_iter,
            'optim_g': {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [total_iter], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
            'regularizers': list(regularizers), **train,
        },
    }
    if gt_size:
        opt['degradation'] = {'type': 'HighOrderDegradation', 'gt_size': gt_size}
    return opt


def build_training_model(network, workdir, total_iter, regularizers=(), gt_size=None, device='cpu', **train):
    opt = training_options(network, workdir, total_iter, regularizers, gt_size, **train)
    opt['num_gpu'] = 1 if torch.device(device).type == 'cuda' else 0
    opt = validate_options(opt)
    opt.update(dist=False, rank=0, world_size=1)
    return build_model(opt)


def _synchronize(device):
    # CUDA runs asynchronously: without this a step's time would be its launch time
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def interleaved_steps(steps, rounds, warmup, device='cpu', on_round=None):
    """Run ``steps`` ({name: callable(round)}) in turn for ``rounds`` rounds; the seconds of each after ``warmup``.

    Returns ``({name: [seconds]}, {name: peak CUDA bytes or None})``.
    """
    times = {name: [] for name in steps}
    peaks = {name: None for name in steps}
    cuda = torch.device(device).type == 'cuda'
    for r in range(rounds):
        for name, step in steps.items():
            _synchronize(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            step(r)
            _synchronize(device)
            elapsed = time.perf_counter() - start
            if cuda:
                peaks[name] = max(peaks[name] or 0, torch.cuda.max_memory_allocated(device))
            if r >= warmup:
                times[name].append(elapsed)
        if on_round is not None:
            on_round(r, times)
    return times, peaks


def ratio_rows(times, reference):
    """(name, median, mean, min, median / reference median, mean / reference mean) per configuration."""
    ref_median, ref_mean = statistics.median(times[reference]), statistics.fmean(times[reference])
    rows = []
    for name, samples in times.items():
        med, mean = statistics.median(samples), statistics.fmean(samples)
        rows.append((name, med, mean, min(samples), med / ref_median, mean / ref_mean))
    return rows
