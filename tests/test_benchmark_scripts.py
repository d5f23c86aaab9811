"""Smoke runs of the speed-benchmark scripts: they must keep working, whatever the numbers are."""
import re

import torch

from conftest import load_script


def test_benchmark_regularizers_prints_a_ratio_row_per_configuration(capsys):
    bench = load_script('benchmark_regularizers')
    threads = torch.get_num_threads()
    try:
        only = ['EATS (awaken 1/2 batch)', 'ECO', 'baseline, channels_last']
        assert bench.main(['--batch', '1', '--gt_size', '32', '--iters', '2', '--warmup', '0', '--threads', '1',
                           '--only', *only]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = {m.group(1): [float(x) for x in m.groups()[1:]] for m in re.finditer(
        r'^\| ([^|]+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$', out, re.M)}
    assert set(rows) == {'baseline', *only, 'ECO teacher forward alone (no_grad)'}
    assert rows['baseline'][3:] == [1.0, 1.0]
    assert all(low <= med and ratio > 0 for med, _, low, ratio, _ in rows.values())
    assert 'ECO - baseline = ' in out
