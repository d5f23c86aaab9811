"""End-to-end training: every arch at every scale, checkpoints, bit-exact resume, SIGKILL recovery."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from basicsr_ext.train import train_pipeline
from basicsr_ext.utils.checkpoint import atomic_save, find_resume_state, load_checkpoint, remove_partial_writes
from conftest import REPO

ARCHS = {
    'MSRResNet': lambda s: dict(type='MSRResNet', num_feat=8, num_block=2, upscale=s),
    'RRDBNetAnyScale': lambda s: dict(type='RRDBNetAnyScale', num_feat=8, num_block=1, num_grow_ch=4, scale=s),
}


def tiny_options(exp_root, scale=4, arch='MSRResNet', total_iter=6, **train):
    return {
        'name': 'tiny',
        'model_type': 'BlindSRModel',
        'scale': scale,
        'num_gpu': 0,
        'manual_seed': 7,
        'datasets': {
            'train': {'name': 'photos', 'type': 'SkimagePhotosDataset', 'photos': ['astronaut'], 'gt_size': 24,
                      'patches_per_image': 8, 'batch_size_per_gpu': 4},
            'val': {'name': 'heldout', 'type': 'SkimagePhotosDataset', 'photos': ['chelsea'], 'max_size': 48},
        },
        'network_g': ARCHS[arch](scale),
        'path': {'experiments_root': str(exp_root)},
        'train': {'total_iter': total_iter, 'ema_decay': 0.9,
                  'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [4], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, **train},
        'val': {'val_freq': 3, 'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 3},
    }


def write_options(tmp_path, opt, name='opt.yml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def run(tmp_path, opt, *extra, name='opt.yml'):
    assert train_pipeline(['-opt', write_options(tmp_path, opt, name), *extra]) == 0


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_each_arch_trains_at_each_scale(tmp_path, arch, scale):
    exp = tmp_path / 'exp'
    run(tmp_path, tiny_options(exp, scale, arch, total_iter=3))
    ckpt = load_checkpoint(exp / 'models' / 'net_g_3.pth')
    assert set(ckpt) == {'params', 'params_ema'}
    assert not any(k.startswith('regularizers') for k in ckpt['params'])
    state = load_checkpoint(exp / 'training_states' / '3.state')
    assert state['iter'] == 3 and set(state['rng']) >= {'python', 'numpy', 'torch'}
    assert (exp / 'opt.yml').exists()  # the options are copied into the experiment
    log = next(exp.glob('train_tiny_*.log')).read_text()
    assert 'it/s' in log and 'eta:' in log and 'mem:' in log and 'l_pix:' in log
    assert 'Final validation on heldout at iteration 3: psnr:' in log


def test_checkpoints_load_into_bare_basicsr_archs(tmp_path):
    from basicsr.archs.srresnet_arch import MSRResNet
    exp = tmp_path / 'exp'
    run(tmp_path, tiny_options(exp, total_iter=3))
    ckpt = torch.load(exp / 'models' / 'net_g_3.pth', weights_only=True)
    net = MSRResNet(num_feat=8, num_block=2, upscale=4)
    net.load_state_dict(ckpt['params_ema'], strict=True)


def test_resumed_run_is_bit_identical_to_uninterrupted_run(tmp_path):
    straight = tmp_path / 'straight'
    run(tmp_path, tiny_options(straight, total_iter=6), name='a.yml')

    resumed = tmp_path / 'resumed'
    run(tmp_path, tiny_options(resumed, total_iter=3), name='b.yml')
    run(tmp_path, tiny_options(resumed, total_iter=6), '--auto_resume', name='b.yml')

    a = load_checkpoint(straight / 'models' / 'net_g_6.pth')
    b = load_checkpoint(resumed / 'models' / 'net_g_6.pth')
    for key in ('params', 'params_ema'):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f'{key}.{name} differs after resume'
    sa = load_checkpoint(straight / 'training_states' / '6.state')
    sb = load_checkpoint(resumed / 'training_states' / '6.state')
    assert sa['schedulers'] == sb['schedulers'] and (sa['epoch'], sa['sampler_position']) == (sb['epoch'],
                                                                                             sb['sampler_position'])
    assert torch.equal(sa['rng']['torch'], sb['rng']['torch'])
    log = next(resumed.glob('train_tiny_*.log'), None)
    assert log is not None


def test_explicit_resume_state_and_corrupt_newest_checkpoint(tmp_path):
    exp = tmp_path / 'exp'
    run(tmp_path, tiny_options(exp, total_iter=6))
    states, models = exp / 'training_states', exp / 'models'
    # a truncated newest state (e.g. from a tool that does not write atomically) is skipped
    (states / '9.state').write_bytes((states / '6.state').read_bytes()[:100])
    (models / 'net_g_9.pth').write_bytes((models / 'net_g_6.pth').read_bytes())
    assert find_resume_state(str(states), str(models)) == str(states / '6.state')
    # a state without its weights is skipped too
    (states / '12.state').write_bytes((states / '6.state').read_bytes())
    assert find_resume_state(str(states), str(models)) == str(states / '6.state')


def test_remove_partial_writes_deletes_only_atomic_save_leftovers(tmp_path):
    atomic_save({'w': torch.ones(2)}, str(tmp_path / '4.state'))
    leftover = tmp_path / '.6.state.k2j4x.tmp'
    leftover.write_bytes(b'truncated')
    (tmp_path / 'notes.tmp').write_text('not ours: no leading dot')
    assert remove_partial_writes(str(tmp_path)) == [str(leftover)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['4.state', 'notes.tmp']
    assert torch.equal(load_checkpoint(tmp_path / '4.state')['w'], torch.ones(2))


def _wait_for(path_glob, needle, timeout):
    end = time.time() + timeout
    while time.time() < end:
        for log in path_glob():
            if needle in log.read_text():
                return True
        time.sleep(0.2)
    return False


def test_sigkill_then_auto_resume_reaches_the_same_weights(tmp_path):
    total = 120  # long enough that the kill lands mid-run even on an idle machine
    reference = tmp_path / 'reference'
    run(tmp_path, tiny_options(reference, total_iter=total), name='ref.yml')

    exp = tmp_path / 'killed'
    opt = tiny_options(exp, total_iter=total)
    opt['logger']['save_checkpoint_freq'] = 2
    opt_file = write_options(tmp_path, opt, 'killed.yml')
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONUNBUFFERED='1')
    proc = subprocess.Popen([sys.executable, str(REPO / 'train.py'), '-opt', opt_file], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: exp.glob('train_tiny_*.log'), 'iter:       7/', 240), 'training did not start'
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    newest = find_resume_state(str(exp / 'training_states'), str(exp / 'models'))
    assert newest is not None and int(os.path.basename(newest).split('.')[0]) < total

    # a kill during a checkpoint write leaves its temporary file; make sure one is there either way
    (exp / 'training_states' / '.8.state.abc123.tmp').write_bytes(b'partial')
    (exp / '.curves.png.x1y2.tmp').write_bytes(b'partial')
    opt['logger']['save_checkpoint_freq'] = 3
    run(tmp_path, opt, '--auto_resume', name='killed.yml')
    a = load_checkpoint(reference / 'models' / f'net_g_{total}.pth')['params']
    b = load_checkpoint(exp / 'models' / f'net_g_{total}.pth')['params']
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for folder in ('.', 'models', 'training_states') for p in exp.glob(f'{folder}/.*.tmp')]


def test_high_order_degradation_training_on_t91_writes_a_degraded_debug_grid(tmp_path, shared_datasets):
    import cv2
    import numpy as np
    exp = tmp_path / 'exp'
    opt = tiny_options(exp, total_iter=2)
    opt['datasets']['train'] = {'name': 'T91', 'type': 'GTOnlyDataset', 'dataroot_gt': str(shared_datasets / 'T91' / 'HR'),
                                'crop_pad_size': 96, 'batch_size_per_gpu': 4, 'num_worker_per_gpu': 0}
    opt['degradation'] = {'type': 'HighOrderDegradation', 'gt_size': 48, 'debug_grid': {'every': 1, 'num': 4}}
    opt['train']['ema_decay'] = 0
    run(tmp_path, opt)
    grid_path = exp / 'visualization' / 'degradation_1.png'
    grid = cv2.imread(str(grid_path))
    assert grid is not None and grid.shape[0] >= 48 and grid.shape[1] >= 2 * 48
    state = load_checkpoint(exp / 'training_states' / '2.state')
    assert 'degradation' in state  # the degradation generator is checkpointed for exact resume
    # the LR half of each pair is visibly degraded: far from a plain nearest upsampling of a downsampled GT
    from basicsr_ext.data import build_degradation
    from basicsr_ext.config import validate_options
    full = validate_options(opt)
    deg = build_degradation(full['degradation'], 4, torch.device('cpu'))
    deg.seed(0)
    from basicsr_ext.data import build_dataset
    ds = build_dataset(full['datasets']['train'])
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    out = deg(batch)
    assert out['lq'].shape[-1] * 4 == out['gt'].shape[-1] == 48
    bicubic = torch.nn.functional.interpolate(out['gt'], scale_factor=0.25, mode='area')
    assert (out['lq'] - bicubic).abs().mean() > 0.02
    assert np.allclose((out['lq'] * 255).numpy(), np.round((out['lq'] * 255).numpy()), atol=1e-3)


def _diverging_options(exp, **train):
    # sane for 5 iterations (checkpoint at 4), then a learning rate that blows the weights up
    opt = tiny_options(exp, total_iter=16, **train)
    opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [5], 'gamma': 1e35}
    opt['val']['val_freq'] = 1000
    opt['logger'] = {'print_freq': 5, 'save_checkpoint_freq': 4}
    return opt


def test_a_non_finite_loss_stops_training_without_writing_a_checkpoint(tmp_path):
    import re
    exp = tmp_path / 'exp'
    assert train_pipeline(['-opt', write_options(tmp_path, _diverging_options(exp))]) == 1
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_4.pth']
    assert all(torch.isfinite(v).all() for v in load_checkpoint(exp / 'models' / 'net_g_4.pth')['params'].values())
    log = next(exp.glob('train_tiny_*.log')).read_text()
    found = re.search(r'Training stopped: the loss became NaN or infinite at iteration (\d+) \(noticed at iteration '
                      r'(\d+); last losses l_pix: (nan|inf)\)\. No checkpoint was written after it; the newest is '
                      r'(\S+)\. Resume from it with --auto_resume after lowering train\.optim_g\.lr, setting '
                      r'train\.grad_clip, or using train\.amp: bf16 instead of fp16\.', log)
    assert found, log[-2000:]
    first, noticed = int(found.group(1)), int(found.group(2))
    assert 6 <= first <= noticed == 8  # the checkpoint at 8 is where it is read
    assert found.group(4) == str(exp / 'training_states' / '4.state')
    assert 'Training finished' not in log


def test_check_finite_false_trains_on_through_a_non_finite_loss(tmp_path):
    exp = tmp_path / 'exp'
    run(tmp_path, _diverging_options(exp, check_finite=False))
    weights = load_checkpoint(exp / 'models' / 'net_g_16.pth')['params']
    assert not all(torch.isfinite(v).all() for v in weights.values())


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path):
    full, halves = tmp_path / 'full', tmp_path / 'halves'
    opt = tiny_options(full, total_iter=4)
    opt['datasets']['train']['batch_size_per_gpu'] = 8
    run(tmp_path, opt, name='full.yml')
    run(tmp_path, tiny_options(halves, total_iter=4, accumulate=2), name='halves.yml')
    a = load_checkpoint(full / 'models' / 'net_g_4.pth')
    b = load_checkpoint(halves / 'models' / 'net_g_4.pth')
    for key in ('params', 'params_ema'):
        for name, tensor in a[key].items():
            assert torch.allclose(tensor, b[key][name], rtol=1e-4, atol=1e-6), f'{key}.{name}'
    log = next(halves.glob('train_tiny_*.log')).read_text()
    assert 'batch 4 × 1 process(es) × 2 accumulated, 1 iterations per epoch, 4 iterations' in log
    assert 'iter:       4/4' in log and 'iter:       5/' not in log


def test_accumulation_resumes_bit_identically_across_an_epoch_boundary(tmp_path):
    def options(root, total):
        opt = tiny_options(root, total_iter=total, accumulate=2)
        opt['datasets']['train']['patches_per_image'] = 12  # 3 batches per epoch: step 2 spans two epochs
        opt['logger']['save_checkpoint_freq'] = 2
        return opt
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    run(tmp_path, options(straight, 5), name='a.yml')
    run(tmp_path, options(resumed, 2), name='b.yml')
    assert load_checkpoint(resumed / 'training_states' / '2.state')['epoch'] == 1
    run(tmp_path, options(resumed, 5), '--auto_resume', name='b.yml')
    a = load_checkpoint(straight / 'models' / 'net_g_5.pth')['params']
    b = load_checkpoint(resumed / 'models' / 'net_g_5.pth')['params']
    assert all(torch.equal(a[k], b[k]) for k in a)
