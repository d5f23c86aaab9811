"""Smoke runs of the speed-benchmark scripts: they must keep working, whatever the numbers are."""
import re

import pytest
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


def test_benchmark_training_rows_per_arch_and_variant(tmp_path, capsys):
    import csv
    bench = load_script('benchmark_training')
    threads = torch.get_num_threads()
    try:
        assert bench.main(['--archs', 'SRResNet', 'HAN_lite', '--variants', 'channels_last', 'default', 'amp_bf16',
                           '--batch', '1', '--gt_size', '32', '--iters', '1', '--warmup', '0', '--threads', '1',
                           '--device', 'cpu', '--csv', str(tmp_path / 'rows.csv')]) == 0
    finally:
        torch.set_num_threads(threads)
    with open(tmp_path / 'rows.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['arch'], r['variant']) for r in rows] == [
        (arch, v) for arch in ('SRResNet', 'HAN_lite') for v in ('default', 'channels_last', 'amp_bf16')]
    # the parameter counts of the shipped ×4 configurations (docs/architectures.md)
    assert {r['arch']: int(r['parameters']) for r in rows} == {'SRResNet': 1517571, 'HAN_lite': 783261}
    assert all(float(r['ratio_to_default']) == 1.0 for r in rows if r['variant'] == 'default')
    assert all(r['peak_memory_bytes'] == '' for r in rows)  # peak memory is a CUDA figure
    out = capsys.readouterr().out
    assert '| SRResNet | 1,517,571 | channels_last |' in out and '× default' in out


def test_benchmark_training_rejects_a_gt_size_off_the_scale(capsys):
    bench = load_script('benchmark_training')
    with pytest.raises(SystemExit) as exit_:
        bench.main(['--gt_size', '30'])
    assert exit_.value.code == 2
    assert '--gt_size 30 must be a multiple of the scale 4' in capsys.readouterr().err
