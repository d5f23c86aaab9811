"""scripts/gpu_check.py: the --device cpu --smoke run prints its one table; failures give exit code 1; the FLOP
counter and the peak table behind its MFU rows."""
import json
import re

import pytest
import torch

from basicsr_ext.utils.flops import count_flops, peak_bf16_flops, training_step_flops
from conftest import load_script


def table_rows(out):
    return [[c.strip() for c in line.strip('|').split(' | ')] for line in out.splitlines()
            if line.startswith('| ') and not line.startswith('| check |')]


def test_smoke_run_prints_one_table_with_every_section(tmp_path, capsys):
    gpu_check = load_script('gpu_check')
    threads = torch.get_num_threads()
    try:
        argv = ['--device', 'cpu', '--smoke', '--threads', '1', '--json', str(tmp_path / 'rows.json')]
        assert gpu_check.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert out.count('| check | configuration | result | goal | status |') == 1
    assert out.startswith('gpu_check --smoke: CPU, 1 thread, ') and 'all checks passed (smoke: goals not judged)' in out
    rows = table_rows(out)
    assert all(len(r) == 5 for r in rows)
    by_check = {}
    for check, config, result, goal, status in rows:
        by_check.setdefault(check, []).append((config, result, goal, status))
    assert set(by_check) == {'degradation', 'test.py', 'nccl', 'speed', 'data', 'eats', 'goal'}
    assert by_check['nccl'] == [('1-process torchrun, --launcher pytorch', 'not run: NCCL needs CUDA', '', 'skip')]
    assert by_check['degradation'][0][3] == 'PASS' and 'KS p' in by_check['degradation'][0][1]
    assert by_check['test.py'][0][3] == 'PASS'
    speed = {config: result for config, result, _, _ in by_check['speed']}
    for arch in ('SRResNet', 'RRDB', 'SwinIR', 'HAN_lite'):
        for variant in ('fp32', 'channels_last', 'stock basicsr SRModel (fp32)'):
            assert re.fullmatch(r'[\d.]+ it/s.*', speed[f'{arch} {variant}']), (arch, variant)
        assert speed[f'{arch} bf16 variants'].startswith('not run: bf16 autocast on a CPU is emulated')
    compiled = [result for config, result, _, _ in by_check['speed'] if config == 'SRResNet channels_last+compile']
    assert len(compiled) == 2
    assert re.fullmatch(r'compiled in \d+ s \(its first 1 step\(s\), untimed below\)', compiled[0])
    assert re.fullmatch(r'[\d.]+ it/s.*', compiled[1])
    assert re.fullmatch(r'[\d.]+× \(interleaved in one run\)', speed['SRResNet channels_last+compile / channels_last'])
    assert speed['RRDB channels_last+compile'] == 'not run: --smoke times compile on SRResNet only'
    goals = {config: (result, goal, status) for config, result, goal, status in by_check['goal']}
    assert goals['RRDB MFU in bf16'] == ('not measured: no bf16 on the CPU', '≥ 35%', 'skip')
    assert [s for c, (_, _, s) in goals.items() if 'stock basicsr' in c] == ['n/a (smoke)'] * 2
    assert all(status == 'n/a (smoke)' for _, _, goal, status in by_check['data'] + by_check['eats'] if goal)
    saved = json.loads((tmp_path / 'rows.json').read_text())
    assert [[r[k] for k in ('check', 'configuration', 'result', 'goal', 'status')] for r in saved['rows']] == rows
    assert all(isinstance(r['value'], float) for r in saved['rows'] if r['status'] == 'n/a (smoke)')


def test_a_raising_section_and_a_spent_budget_fail_with_exit_1(capsys, monkeypatch):
    gpu_check = load_script('gpu_check')

    def broken(check):
        raise RuntimeError('the degradation\nbroke')

    monkeypatch.setitem(gpu_check.SECTIONS, 'degradation', broken)
    assert gpu_check.main(['--device', 'cpu', '--smoke', '--only', 'degradation']) == 1
    out = capsys.readouterr().out
    assert table_rows(out) == [['degradation', 'raised', 'RuntimeError: the degradation broke', '', 'FAIL']]
    assert '1 failure(s)' in out
    assert gpu_check.main(['--device', 'cpu', '--smoke', '--only', 'eats', '--budget', '0']) == 1
    assert table_rows(capsys.readouterr().out) == [
        ['eats', 'not run', 'the --budget of 0 s was spent before it started', '', 'FAIL']]


def test_training_flops_of_a_conv_match_the_formula():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.rand(2, 3, 10, 12)
    forward = 2 * 3 * 8 * 3 * 3 * 10 * 12 * 2  # 2 FLOPs per multiply-accumulate, every output pixel
    assert count_flops(conv, x) == (forward, (2, 8, 10, 12))
    # backward: the weight gradient only (the input needs none), as many FLOPs as the forward
    assert training_step_flops(conv, x) == 2 * forward
    assert all(p.grad is None for p in conv.parameters())
    assert training_step_flops(conv, x.requires_grad_()) == 3 * forward


@pytest.mark.parametrize('name, tflops', [
    ('NVIDIA H100 80GB HBM3', 989), ('NVIDIA H100 PCIe', 756), ('NVIDIA H200', 989), ('NVIDIA H200 NVL', 835),
    ('NVIDIA A100-SXM4-80GB', 312), ('NVIDIA A100 80GB PCIe', 312), ('NVIDIA L40S', 362), ('NVIDIA L4', 121),
    ('NVIDIA A10', 125), ('NVIDIA A10G', None), ('Tesla V100-SXM2-16GB', None), ('NVIDIA GH200 480GB', 989)])
def test_peak_table_matches_whole_names(name, tflops):
    assert peak_bf16_flops(name) == (None if tflops is None else tflops * 1e12)


def test_the_nccl_rows_training_file_trains(tmp_path):
    """The file the GPU check hands to torchrun trains; here in one CPU process without a process group (the
    NCCL row itself needs CUDA)."""
    import yaml
    from basicsr_ext.train import train_pipeline
    from basicsr_ext.utils.checkpoint import load_checkpoint
    gpu_check = load_script('gpu_check')
    opt = gpu_check.nccl_options(tmp_path / 'exp', 4)
    assert opt['dist_params']['backend'] == 'nccl' and opt['num_gpu'] == 1
    opt.update(num_gpu=0, dist_params={})
    opt['logger']['print_freq'] = 2
    (tmp_path / 'nccl.yml').write_text(yaml.safe_dump(opt))
    assert train_pipeline(['-opt', str(tmp_path / 'nccl.yml')]) == 0
    assert set(load_checkpoint(tmp_path / 'exp' / 'models' / 'net_g_4.pth')) == {'params'}
