"""Interleaved timing and ratio tables, shared by the speed-benchmark scripts.

Timings are ratios against a reference configuration measured in the same process and the same
rounds: the configurations take turns step by step, so a slow spell of a shared machine hits all
of them alike.
"""
import statistics
import time

import torch

__all__ = ['interleaved_steps', 'ratio_rows']


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
