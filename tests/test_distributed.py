"""Distributed training on CPU with gloo: 2 processes under torchrun, srun-style and alone.

Starting a Python process that imports torch and basicsr takes seconds on a loaded machine,
so each launch runs several trainings in a row through a small harness (written to tmp_path)
that also dumps every rank's final weights and validation results, and can slow iterations
down so that a signal reliably lands mid-run.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml

from basicsr_ext.data import ResumableSampler
from basicsr_ext.regularizers import REGULARIZER_REGISTRY
from basicsr_ext.utils import dist as dist_util
from basicsr_ext.utils.checkpoint import find_resume_state, load_checkpoint
from basicsr_ext.utils.options import make_parser
from conftest import REPO

TOTAL = 16  # 4 epochs of 4 iterations: the sampler is reseeded three times
BATCH = 2  # per process; the single-process reference uses 2 × BATCH
LAUNCH_TIMEOUT = 240

HARNESS = r'''
import json, os, sys, time
import basicsr_ext  # noqa: F401
import torch
from basicsr_ext import train
from basicsr_ext.models.sr_model import BlindSRModel
from basicsr_ext.regularizers import REGULARIZER_REGISTRY
from basicsr_ext.regularizers.base import Regularizer


@REGULARIZER_REGISTRY.register()
class NoiseProbe(Regularizer):
    """Draws from the global torch RNG, which differs per rank: a resume must restore each rank's own."""

    def transform_batch(self, lq, gt, current_iter, context):
        return lq + 0.02 * torch.randn_like(lq), gt


captured = {}
build_model, validate_all = train.build_model, train.validate_all


def capture_model(opt):
    captured['model'] = build_model(opt)
    return captured['model']


def capture_validation(*args):
    captured['val'] = validate_all(*args)
    return captured['val']


train.build_model, train.validate_all = capture_model, capture_validation
delay = float(os.environ.get('HARNESS_ITER_SLEEP', 0))
if delay:
    step = BlindSRModel.optimize_parameters
    BlindSRModel.optimize_parameters = lambda self, it: (time.sleep(delay), step(self, it))[1]
eats = REGULARIZER_REGISTRY.get('EATS') if 'EATS' in REGULARIZER_REGISTRY else None
if eats is not None and hasattr(eats, 'draw_pairs'):
    draw = eats.draw_pairs

    def record_draws(self, current_iter):
        pairs = draw(self, current_iter)
        captured.setdefault('eats', []).append([current_iter, pairs])
        return pairs

    eats.draw_pairs = record_draws

if 'TORCHELASTIC_RUN_ID' in os.environ:
    # one group for all runs: train_pipeline uses a group it finds (a destroyed one cannot be re-created
    # on torchrun's store)
    import datetime
    torch.distributed.init_process_group('gloo', timeout=datetime.timedelta(seconds=60))
for argv in json.loads(sys.argv[1]):
    captured.clear()
    code = train.train_pipeline(argv)
    if code:
        sys.exit(code)
    model = captured['model']
    rank, root = model.opt['rank'], model.opt['path']['experiments_root']
    net = model.get_bare_model(model.net_g)
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, os.path.join(root, f'final_rank{rank}.pth'))
    grads = {k: p.grad is not None for k, p in net.named_parameters()}
    with open(os.path.join(root, f'final_rank{rank}.json'), 'w') as f:
        json.dump({'val': captured.get('val'), 'eats': captured.get('eats'), 'has_grad': grads}, f)
'''


# ----------------------------------------------------------------------------- helpers
def options(root, batch=BATCH, total=TOTAL, workers=0, **train):
    return {
        'name': 'dist',
        'model_type': 'BlindSRModel',
        'scale': 4,
        'num_gpu': 0,
        'manual_seed': 5,
        'datasets': {
            'train': {'name': 'photos', 'type': 'SkimagePhotosDataset', 'photos': ['astronaut', 'coffee'],
                      'gt_size': 16, 'patches_per_image': 8, 'batch_size_per_gpu': batch,
                      'num_worker_per_gpu': workers},
            # three images over two ranks: uneven shards
            'val': {'name': 'heldout', 'type': 'SkimagePhotosDataset', 'photos': ['chelsea', 'ihc', 'rocket'],
                    'max_size': 32},
        },
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4},
        'path': {'experiments_root': str(root)},
        'train': {'total_iter': total, 'optim_g': {'type': 'Adam', 'lr': 2e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [12], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, **train},
        'val': {'val_freq': 8, 'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 8},
        'dist_params': {'timeout': 60},
    }


def argv(tmp, name, opt, *extra, launcher='pytorch'):
    path = tmp / f'{name}.yml'
    path.write_text(yaml.safe_dump(opt))
    return ['-opt', str(path), '--launcher', launcher, *extra]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def environment(**extra):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **extra)
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        env.pop(key, None)
    return env


def harness_command(tmp, runs, nproc):
    harness = tmp / 'harness.py'
    harness.write_text(HARNESS)
    if nproc == 1:
        return [sys.executable, str(harness), json.dumps(runs)]
    return [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', '--master_addr=127.0.0.1',
            f'--master_port={free_port()}', str(harness), json.dumps(runs)]


def start(tmp, runs, nproc, log_name, **env):
    log = open(tmp / log_name, 'w')
    return subprocess.Popen(harness_command(tmp, runs, nproc), stdout=log, stderr=subprocess.STDOUT,
                            env=environment(**env), start_new_session=True)


def launch(tmp, runs, nproc, log_name):
    proc = start(tmp, runs, nproc, log_name)
    try:
        proc.wait(LAUNCH_TIMEOUT)
    finally:
        _kill(proc)
    assert proc.returncode == 0, tail(tmp / log_name)


def _kill(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def tail(path, n=40):
    return f'\n--- {path.name} ---\n' + '\n'.join(path.read_text(errors='replace').splitlines()[-n:])


def wait_for_log(root, needle, proc, timeout=LAUNCH_TIMEOUT):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        for log in root.glob('train_dist_*.log'):
            if needle in log.read_text(errors='replace'):
                return True
        time.sleep(0.1)
    return False


def weights(root, rank=0):
    return torch.load(root / f'final_rank{rank}.pth', weights_only=True)


def report(root, rank=0):
    return json.loads((root / f'final_rank{rank}.json').read_text())


def assert_same(a, b, exact=True, what=''):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), f'{what}{k} differs'
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m: f'{what}{k}: {m}')


def newest_iter(root):
    state = find_resume_state(str(root / 'training_states'), str(root / 'models'))
    return None if state is None else int(os.path.basename(state).split('.')[0])


def probe():
    return {'regularizers': [{'type': 'NoiseProbe'}]}


def registered(name):
    return name in REGULARIZER_REGISTRY


# ----------------------------------------------------------------------------- one 2-process launch, many runs
@pytest.fixture(scope='module')
def two_proc(tmp_path_factory):
    """2 processes × batch 2: baseline, a per-rank-random run, its resume from iteration 8, regularizers."""
    tmp = tmp_path_factory.mktemp('two_proc')
    roots = {name: tmp / name for name in ('baseline', 'probe', 'resumed', 'eats', 'adaptive')}
    runs = [
        argv(tmp, 'baseline', options(roots['baseline'])),
        argv(tmp, 'probe', options(roots['probe'], **probe())),
        argv(tmp, 'resumed', options(roots['resumed'], **probe()), '--force_yml',
             f"path:resume_state={roots['probe'] / 'training_states' / '8.state'}"),
    ]
    if registered('EATS'):
        runs.append(argv(tmp, 'eats', options(roots['eats'], total=6, regularizers=[{'type': 'EATS'}])))
    if registered('AdaptiveDropout'):
        adaptive = [{'type': 'AdaptiveDropout', 'implicit': True, 'w_mode': 'vector', 'interval': 0}]
        runs.append(argv(tmp, 'adaptive', options(roots['adaptive'], total=6, regularizers=adaptive)))
    launch(tmp, runs, 2, 'torchrun.log')
    return roots


def test_weights_are_identical_on_every_rank(two_proc):
    for name in ('baseline', 'probe'):
        assert_same(weights(two_proc[name], 0), weights(two_proc[name], 1), what=f'{name}: rank 1 ')


def test_checkpoint_holds_every_ranks_random_state(two_proc):
    state = load_checkpoint(two_proc['probe'] / 'training_states' / f'{TOTAL}.state')
    ranks = state['ranks']
    assert len(ranks) == 2 and not torch.equal(ranks[0]['rng']['torch'], ranks[1]['rng']['torch'])
    assert torch.equal(state['rng']['torch'], ranks[0]['rng']['torch'])


def test_two_process_resume_equals_uninterrupted_run(two_proc):
    # NoiseProbe draws differ per rank: restoring rank 0's stream on rank 1 would change the result
    for rank in (0, 1):
        assert_same(weights(two_proc['probe'], rank), weights(two_proc['resumed'], rank), what=f'rank {rank} ')
    log = next(two_proc['resumed'].glob('train_dist_*.log')).read_text()
    assert 'Resumed from' in log and 'iteration 8' in log


@pytest.mark.skipif(not registered('EATS'), reason='the EATS regularizer (basicsr_ext/regularizers/eats.py) '
                    'is not registered yet')
def test_eats_under_ddp_draws_the_same_pairs_on_every_rank(two_proc):
    root = two_proc['eats']
    assert (root / 'models' / 'net_g_6.pth').exists()
    assert_same(weights(root, 0), weights(root, 1), what='EATS rank 1 ')
    draws = [report(root, r)['eats'] for r in (0, 1)]
    assert draws[0] and draws[0] == draws[1]
    assert len({json.dumps(d[1]) for d in draws[0]}) > 1, 'EATS drew the same pair at every iteration'


@pytest.mark.skipif(not registered('AdaptiveDropout'), reason='the AdaptiveDropout regularizer '
                    '(basicsr_ext/regularizers/adaptive_dropout.py) is not registered yet')
def test_adaptive_dropout_weights_are_learnt_in_step(two_proc):
    root = two_proc['adaptive']
    w0, w1 = weights(root, 0), weights(root, 1)
    learnt = [k for k in w0 if k.startswith('regularizers.') and 'w_logits' in k]
    assert learnt, f'no learnable AdaptiveDropout weights in {sorted(w0)}'
    init = torch.logit(torch.tensor(0.3))
    assert any(not torch.allclose(w0[k], init) for k in learnt), 'the blend weights were not trained'
    assert_same(w0, w1, what='AdaptiveDropout rank 1 ')
    assert all(report(root, r)['has_grad'][k] for k in learnt for r in (0, 1))


@pytest.mark.skipif(not registered('ECO'), reason='the ECO regularizer (basicsr_ext/regularizers/eco.py) '
                    'is not registered yet')
def test_eco_under_ddp(two_proc):
    pytest.skip('written once ECO exists')


# ----------------------------------------------------------------------------- single process: SIGTERM, 1 × 2b
@pytest.fixture(scope='module')
def one_proc(tmp_path_factory, two_proc):
    """SIGTERM a single-process run (with a DataLoader worker), then resume it, train 1 × 2b, re-validate."""
    tmp = tmp_path_factory.mktemp('one_proc')
    roots = {name: tmp / name for name in ('stopped', 'single', 'revalidate')}
    stopped = argv(tmp, 'stopped', options(roots['stopped'], batch=2 * BATCH, workers=1), launcher='none')
    proc = start(tmp, [stopped], 1, 'stopped.log', HARNESS_ITER_SLEEP='0.4')
    try:
        assert wait_for_log(roots['stopped'], 'iter:       3/', proc), tail(tmp / 'stopped.log')
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group, as a terminal or scheduler would
        proc.wait(60)
    finally:
        _kill(proc)
    roots['stopped_rc'] = proc.returncode
    roots['stopped_at'] = newest_iter(roots['stopped'])
    roots['stopped_log'] = (tmp / 'stopped.log').read_text(errors='replace')

    # the 2-process baseline's final weights, validated by one process (lr 0: one step changes nothing)
    revalidate = options(roots['revalidate'], batch=2 * BATCH, total=1)
    revalidate['val']['val_freq'] = 1
    revalidate['path']['pretrain_network_g'] = str(two_proc['baseline'] / 'models' / f'net_g_{TOTAL}.pth')
    revalidate['train']['optim_g']['lr'] = 0.0
    launch(tmp, [stopped + ['--auto_resume'],
                 argv(tmp, 'single', options(roots['single'], batch=2 * BATCH), launcher='none'),
                 argv(tmp, 'revalidate', revalidate, launcher='none')], 1, 'single.log')
    return roots


def test_sigterm_saves_a_checkpoint_and_auto_resume_completes(one_proc):
    assert one_proc['stopped_rc'] == 0, one_proc['stopped_log'][-3000:]
    assert one_proc['stopped_at'] is not None and 3 <= one_proc['stopped_at'] < TOTAL
    assert 'Stopped by signal' in one_proc['stopped_log']
    assert 'DataLoader worker' not in one_proc['stopped_log']
    assert newest_iter(one_proc['stopped']) == TOTAL
    assert_same(weights(one_proc['single']), weights(one_proc['stopped']), what='resumed single process ')


def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(one_proc, two_proc):
    assert_same(weights(one_proc['single']), weights(two_proc['baseline']), exact=False, what='2 × b vs 1 × 2b ')


def test_distributed_validation_equals_single_process_validation(one_proc, two_proc):
    distributed = report(two_proc['baseline'])['val']['heldout']['psnr']
    single = report(one_proc['revalidate'])['val']['heldout']['psnr']
    assert distributed == pytest.approx(single, abs=1e-9)
    assert report(two_proc['baseline'], 1)['val'] == report(two_proc['baseline'], 0)['val']


# ----------------------------------------------------------------------------- 2 processes: SIGTERM, dead rank
def test_sigterm_under_torchrun_then_auto_resume_matches_uninterrupted_run(tmp_path, two_proc):
    root = tmp_path / 'stopped'
    run = argv(tmp_path, 'stopped', options(root, **probe()))
    proc = start(tmp_path, [run], 2, 'stopped.log', HARNESS_ITER_SLEEP='0.4')
    try:
        assert wait_for_log(root, 'iter:       3/', proc), tail(tmp_path / 'stopped.log')
        os.killpg(proc.pid, signal.SIGTERM)  # reaches torchrun, which forwards it to its workers
        proc.wait(90)
    finally:
        _kill(proc)
    stopped_at = newest_iter(root)
    assert stopped_at is not None and 3 <= stopped_at < TOTAL, tail(tmp_path / 'stopped.log')
    assert 'Stopped by signal' in (tmp_path / 'stopped.log').read_text()

    launch(tmp_path, [run + ['--auto_resume']], 2, 'resumed.log')
    for rank in (0, 1):
        assert_same(weights(two_proc['probe'], rank), weights(root, rank), what=f'rank {rank} ')


def test_a_dead_rank_makes_the_other_fail_within_the_timeout(tmp_path):
    """Two srun-style processes (no torchrun agent to tear the group down): SIGKILL rank 1."""
    root = tmp_path / 'dead'
    run = argv(tmp_path, 'dead', options(root, total=400), '--force_yml', 'dist_params:timeout=30',
               launcher='slurm')
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = dict(SLURM_PROCID=str(rank), SLURM_NTASKS='2', SLURM_LOCALID=str(rank), SLURM_NODELIST='localhost',
                   MASTER_PORT=str(port), HARNESS_ITER_SLEEP='0.2')
        procs.append(start(tmp_path, [run], 1, f'rank{rank}.log', **env))
    try:
        assert wait_for_log(root, 'iter:       3/', procs[0]), tail(tmp_path / 'rank0.log') + tail(
            tmp_path / 'rank1.log')
        os.killpg(procs[1].pid, signal.SIGKILL)
        t0 = time.time()
        try:
            procs[0].wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail('rank 0 still runs 60 s after rank 1 died' + tail(tmp_path / 'rank0.log'))
        elapsed = time.time() - t0
    finally:
        for proc in procs:
            _kill(proc)
    assert procs[0].returncode not in (0, None), tail(tmp_path / 'rank0.log')
    assert elapsed < 60


# ----------------------------------------------------------------------------- in-process units
@pytest.mark.parametrize('flag', ['--local_rank', '--local-rank'])
def test_both_local_rank_spellings_are_accepted(flag):
    args = make_parser().parse_args(['-opt', 'x.yml', '--launcher', 'pytorch', f'{flag}=3'])
    assert args.local_rank == 3


@pytest.mark.parametrize('nodelist, host', [('gpu[03-05,09],cpu1', 'gpu03'), ('node7', 'node7'),
                                            ('a-b[1,2]', 'a-b1'), ('n[10-11]x', 'n10')])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert dist_util.first_host(nodelist) == host


@pytest.fixture
def bare_env(monkeypatch):
    """No launcher variables; whatever a test sets (also through init_dist) is undone afterwards."""
    for key in ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'SLURM_PROCID', 'SLURM_NTASKS',
                'SLURM_LOCALID', 'SLURM_STEP_NODELIST', 'SLURM_JOB_NODELIST', 'SLURM_NODELIST'):
        monkeypatch.setenv(key, '')  # records the original value (or its absence) for teardown
        monkeypatch.delenv(key)
    return monkeypatch


def test_slurm_variables_become_torch_distributed_variables(bare_env):
    monkeypatch = bare_env
    monkeypatch.setenv('SLURM_PROCID', '5')
    monkeypatch.setenv('SLURM_NTASKS', '8')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    monkeypatch.setenv('SLURM_STEP_NODELIST', 'gpu[12-13]')
    monkeypatch.setenv('PATH', '/nonexistent')  # no scontrol: the node list is read directly
    assert dist_util._slurm_env(29999) == (5, 8, 1)
    assert (os.environ['MASTER_ADDR'], os.environ['MASTER_PORT']) == ('gpu12', '29999')
    assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK']) == ('5', '8', '1')


def test_launchers_explain_missing_variables(bare_env):
    monkeypatch = bare_env
    with pytest.raises(RuntimeError, match='torchrun'):
        dist_util.init_dist('pytorch', use_cuda=False)
    with pytest.raises(RuntimeError, match='srun'):
        dist_util.init_dist('slurm', use_cuda=False)
    with pytest.raises(RuntimeError, match='gloo'):
        monkeypatch.setenv('SLURM_PROCID', '0')
        monkeypatch.setenv('SLURM_NTASKS', '1')
        dist_util.init_dist('slurm', use_cuda=False, backend='nccl')


def test_sampler_is_reseeded_every_epoch_and_shards_like_one_big_batch():
    one = ResumableSampler(24, seed=3, num_replicas=1, rank=0, batch_size=6)
    shards = [ResumableSampler(24, seed=3, num_replicas=2, rank=r, batch_size=3) for r in (0, 1)]
    orders = []
    for epoch in (0, 1):
        for s in (one, *shards):
            s.set_epoch(epoch)
        big = [i for _, i in one]
        parts = [[i for _, i in s] for s in shards]
        for step in range(4):  # step k of 2 × 3 covers the same samples as step k of 1 × 6
            assert sorted(parts[0][3 * step:3 * step + 3] + parts[1][3 * step:3 * step + 3]) == sorted(
                big[6 * step:6 * step + 6])
        orders.append(big)
    assert orders[0] != orders[1]


def test_scripts_are_executable_strict_and_explain_usage():
    for name in ('dist_train.sh', 'slurm_train.sh'):
        script = REPO / 'scripts' / name
        assert os.access(script, os.X_OK), f'{name} is not executable'
        assert 'set -euo pipefail' in script.read_text()
        out = subprocess.run([str(script)], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and 'usage' in (out.stdout + out.stderr).lower()
        assert subprocess.run(['bash', '-n', str(script)]).returncode == 0
