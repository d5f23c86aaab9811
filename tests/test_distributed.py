"""Distributed training on CPU with gloo: 2 processes under torchrun, srun-style and alone.

Starting a Python process that imports torch and basicsr takes seconds (far more on a loaded
machine), so the file launches few of them: the three signal experiments (SIGTERM to one
process, SIGTERM to torchrun, SIGKILL of one of two srun-style ranks) start together, then one
torchrun launch runs every other 2-process training in a row through a small harness (written
to tmp_path) that dumps each rank's final weights and validation results and can slow
iterations down so that a signal lands mid-run. Single-process references run in this process.
"""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
import yaml

from basicsr_ext import train
from basicsr_ext.data import ResumableSampler
from basicsr_ext.models import build_model
from basicsr_ext.utils import dist as dist_util
from basicsr_ext.utils.checkpoint import find_resume_state, get_rng_states, load_checkpoint
from basicsr_ext.config import load_options, make_parser
from conftest import REPO

TOTAL = 16  # 4 epochs of 4 iterations: the sampler is reseeded three times
BATCH = 2  # per process; the single-process reference uses 2 × BATCH
LAUNCH_TIMEOUT = 300
STOP_AFTER = 'iter:       3/'  # signal once this line is logged
DEAD_RANK_BOUND = 60  # seconds; the run's collective timeout is 30

HARNESS = r'''
import datetime, json, os, sys, time
import basicsr_ext  # noqa: F401
import torch
from torch.nn.parallel import DistributedDataParallel
from basicsr_ext import train
from basicsr_ext.models.sr_model import BlindSRModel
from basicsr_ext.regularizers import REGULARIZER_REGISTRY
from basicsr_ext.regularizers.base import Regularizer


@REGULARIZER_REGISTRY.register()
class NoiseProbe(Regularizer):
    """Draws from the global torch RNG, which differs per rank: a resume must restore each rank's own."""

    def transform_batch(self, ctx):
        return ctx.lq + 0.02 * torch.randn_like(ctx.lq), ctx.gt


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
    BlindSRModel.optimize_parameters = lambda self, it, *micro: (time.sleep(delay), step(self, it, *micro))[1]
eats = REGULARIZER_REGISTRY.get('EATS')
draw = eats.draw_pairs


def record_draws(self, current_iter):
    pairs = draw(self, current_iter)
    captured.setdefault('eats', []).append([current_iter, pairs])
    return pairs


eats.draw_pairs = record_draws


def teacher_report(model):
    for reg in model.regularizers:
        teacher = reg.__dict__.get('teacher')
        if teacher is not None:
            wrapped = {id(p) for p in model.net_g.parameters()}
            return {'ddp': isinstance(teacher, DistributedDataParallel),
                    'in_student': any(id(p) in wrapped for p in teacher.parameters()),
                    'requires_grad': any(p.requires_grad for p in teacher.parameters()),
                    'has_grad': any(p.grad is not None for p in teacher.parameters()),
                    'forwards': getattr(reg, 'teacher_forwards', None),
                    'weights': {k: v.flatten()[:4].tolist() for k, v in teacher.state_dict().items()}}
    return None


if 'TORCHELASTIC_RUN_ID' in os.environ:
    # one group for all runs, which train_pipeline uses as it finds it: a destroyed default group
    # cannot be created again on torchrun's store
    torch.distributed.init_process_group('gloo', timeout=datetime.timedelta(seconds=60))
for argv in json.loads(sys.argv[1]):
    captured.clear()
    code = train.train_pipeline(argv)
    if code:
        sys.exit(code)
    model = captured['model']
    rank, root = model.opt['rank'], model.opt['path']['experiments_root']
    net = model.get_bare_model(model.net_g)
    regs = model.regularizers
    # the network's keys, and the regularizers' under 'regularizers.' (they sit beside it in the training wrapper)
    state = dict(net.state_dict())
    params = dict(net.named_parameters())
    for i, reg in enumerate(regs):
        state.update({f'regularizers.{i}.{k}': v for k, v in reg.state_dict().items()})
        params.update({f'regularizers.{i}.{k}': p for k, p in reg.named_parameters()})
    torch.save({k: v.detach().cpu() for k, v in state.items()}, os.path.join(root, f'final_rank{rank}.pth'))
    with open(os.path.join(root, f'final_rank{rank}.json'), 'w') as f:
        json.dump({'val': captured.get('val'), 'eats': captured.get('eats'), 'teacher': teacher_report(model),
                   'has_grad': {k: p.grad is not None for k, p in params.items()}}, f)
'''


# ----------------------------------------------------------------------------- helpers
def options(root, batch=BATCH, total=TOTAL, workers=0, **train_opt):
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
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, **train_opt},
        'val': {'val_freq': 8, 'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 8},
        'dist_params': {'timeout': 60},
    }


def probe():
    return {'regularizers': [{'type': 'NoiseProbe'}]}


def argv(tmp, name, opt, *extra, launcher='pytorch'):
    path = tmp / f'{name}.yml'
    path.write_text(yaml.safe_dump(opt))
    return ['-opt', str(path), '--launcher', launcher, *extra]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Launch:
    """One harness process (or torchrun with ``nproc`` harness workers) in its own session, output to a file."""

    def __init__(self, tmp, name, runs, nproc=1, **env):
        harness = tmp / 'harness.py'
        harness.write_text(HARNESS)
        cmd = [sys.executable, str(harness), json.dumps(runs)]
        if nproc > 1:
            cmd[1:1] = ['-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', '--master_addr=127.0.0.1',
                        f'--master_port={free_port()}']
        environ = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK',
                                                                    'MASTER_ADDR', 'MASTER_PORT')}
        environ.update(OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **env)
        self.log = tmp / f'{name}.out'
        with open(self.log, 'w') as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=environ,
                                         start_new_session=True)

    def signal(self, sig):
        os.killpg(self.proc.pid, sig)  # the whole group, as a terminal or a scheduler would

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.poll() is None:
                self.signal(signal.SIGKILL)
                self.proc.wait(30)

    def tail(self, n=40):
        lines = self.log.read_text(errors='replace').splitlines()[-n:]
        return f'\n--- {self.log.name} ---\n' + '\n'.join(lines)


def logged(root, needle):
    return any(needle in log.read_text(errors='replace') for log in root.glob('train_dist_*.log'))


def weights(root, rank=0):
    return torch.load(root / f'final_rank{rank}.pth', weights_only=True)


def checkpoint_weights(root, it=TOTAL):
    return load_checkpoint(root / 'models' / f'net_g_{it}.pth')['params']


def report(root, rank=0):
    return json.loads((root / f'final_rank{rank}.json').read_text())


def assert_same(a, b, exact=True, what=''):
    a = {k: v for k, v in a.items() if not k.startswith('regularizers.')}
    b = {k: v for k, v in b.items() if not k.startswith('regularizers.')}
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), f'{what}{k} differs'
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m: f'{what}{k}: {m}')


def newest_iter(root):
    state = find_resume_state(str(root / 'training_states'), str(root / 'models'))
    return None if state is None else int(os.path.basename(state).split('.')[0])


@contextmanager
def one_thread():
    # the subprocesses run with one thread; so do the in-process references, for bit-equal results
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_here(run_argv):
    """train_pipeline in this process; returns the last validation results."""
    results = {}
    validate_all = train.validate_all

    def capture(*args):
        results.update(validate_all(*args))
        return results

    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setattr(train, 'validate_all', capture)
        assert train.train_pipeline(run_argv) == 0
    return results


# ----------------------------------------------------------------------------- the launches
@pytest.fixture(scope='module')
def launched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    roots = SimpleNamespace(**{name: tmp / name for name in (
        'stopped_single', 'stopped_torchrun', 'dead', 'baseline', 'probe', 'resumed', 'eats', 'adaptive', 'eco',
        'accumulated')})
    out = SimpleNamespace(roots=roots, tmp=tmp)

    # 1. the signal experiments, together
    out.stopped_single_argv = argv(tmp, 'stopped_single', options(roots.stopped_single, batch=2 * BATCH, workers=1),
                                   launcher='none')
    stopped_torchrun_argv = argv(tmp, 'stopped_torchrun', options(roots.stopped_torchrun, **probe()))
    single = Launch(tmp, 'stopped_single', [out.stopped_single_argv], HARNESS_ITER_SLEEP='0.4')
    torchrun = Launch(tmp, 'stopped_torchrun', [stopped_torchrun_argv], nproc=2, HARNESS_ITER_SLEEP='0.4')
    dead_argv = argv(tmp, 'dead', options(roots.dead, total=400), '--force_yml', 'dist_params:timeout=30',
                     launcher='slurm')
    port = str(free_port())
    dead = [Launch(tmp, f'dead_rank{r}', [dead_argv], SLURM_PROCID=str(r), SLURM_NTASKS='2', SLURM_LOCALID=str(r),
                   SLURM_NODELIST='localhost', MASTER_PORT=port, HARNESS_ITER_SLEEP='0.2') for r in (0, 1)]
    actions = {
        'stopped_single': (single, roots.stopped_single, lambda: single.signal(signal.SIGTERM)),
        'stopped_torchrun': (torchrun, roots.stopped_torchrun, lambda: torchrun.signal(signal.SIGTERM)),
        'dead': (dead[0], roots.dead, lambda: dead[1].signal(signal.SIGKILL)),
    }
    out.signalled = {}
    deadline = time.time() + LAUNCH_TIMEOUT
    while len(out.signalled) < len(actions) and time.time() < deadline:
        for name, (launch, root, act) in actions.items():
            if name not in out.signalled and launch.proc.poll() is None and logged(root, STOP_AFTER):
                act()
                out.signalled[name] = time.time()
            elif name not in out.signalled and launch.proc.poll() is not None:
                out.signalled[name] = None  # ended before the signal: the tests report it
        time.sleep(0.1)
    # every process ends by itself: bound each wait from its signal
    ended = {}
    watched = {'stopped_single': single, 'stopped_torchrun': torchrun, 'dead': dead[0], 'dead_rank1': dead[1]}
    start = time.time()
    while len(ended) < len(watched) and time.time() - start < 90:
        for name, launch in watched.items():
            if name not in ended and launch.proc.poll() is not None:
                ended[name] = time.time()
        time.sleep(0.1)
    out.rc = {name: launch.wait(0) for name, launch in watched.items()}  # kills what still runs
    since = out.signalled.get('dead')
    out.dead_elapsed = ended['dead'] - since if since and 'dead' in ended else None
    out.single_tail, out.torchrun_tail = single.tail(), torchrun.tail()
    out.dead_tail = dead[0].tail() + dead[1].tail()
    out.stopped_at = {name: newest_iter(getattr(roots, name)) for name in ('stopped_single', 'stopped_torchrun')}

    # 2. every other 2-process run, in one torchrun launch
    runs = [
        argv(tmp, 'baseline', options(roots.baseline)),
        argv(tmp, 'probe', options(roots.probe, **probe())),
        argv(tmp, 'resumed', options(roots.resumed, **probe()), '--force_yml',
             f'path:resume_state={roots.probe / "training_states" / "8.state"}'),
        stopped_torchrun_argv + ['--auto_resume'],
    ]
    runs.append(argv(tmp, 'accumulated', options(roots.accumulated, batch=BATCH // 2, accumulate=2)))
    runs.append(argv(tmp, 'eats', options(roots.eats, total=6, regularizers=[{'type': 'EATS'}])))
    adaptive = [{'type': 'AdaptiveDropout', 'implicit': True, 'w_mode': 'vector', 'interval': 0}]
    runs.append(argv(tmp, 'adaptive', options(roots.adaptive, total=6, regularizers=adaptive)))
    eco = [{'type': 'ECO', 'teacher_path': str(roots.baseline / 'models' / f'net_g_{TOTAL}.pth'),
            'teacher_param_key': 'params', 'schedule_iters': 12}]
    runs.append(argv(tmp, 'eco', options(roots.eco, total=6, regularizers=eco)))
    many = Launch(tmp, 'torchrun', runs, nproc=2)
    out.many_rc, out.many_tail = many.wait(LAUNCH_TIMEOUT), many.tail()
    return out


@pytest.fixture(scope='module')
def two_proc(launched):
    assert launched.many_rc == 0, launched.many_tail
    return launched.roots


@pytest.fixture(scope='module')
def single_reference(tmp_path_factory):
    """1 process × batch 2b, trained in this process."""
    tmp = tmp_path_factory.mktemp('single')
    train_here(argv(tmp, 'single', options(tmp / 'single', batch=2 * BATCH), launcher='none'))
    return tmp / 'single'


# ----------------------------------------------------------------------------- 2 processes
def test_weights_are_identical_on_every_rank(two_proc):
    for root in (two_proc.baseline, two_proc.probe):
        assert_same(weights(root, 0), weights(root, 1), what=f'{root.name}: rank 1 ')


def test_checkpoint_holds_every_ranks_random_state(two_proc):
    state = load_checkpoint(two_proc.probe / 'training_states' / f'{TOTAL}.state')
    ranks = state['ranks']
    assert len(ranks) == 2 and not torch.equal(ranks[0]['rng']['torch'], ranks[1]['rng']['torch'])
    assert torch.equal(state['rng']['torch'], ranks[0]['rng']['torch'])


def test_two_process_resume_equals_uninterrupted_run(two_proc):
    # NoiseProbe draws differ per rank: restoring rank 0's stream on rank 1 would change the result
    for rank in (0, 1):
        assert_same(weights(two_proc.probe, rank), weights(two_proc.resumed, rank), what=f'rank {rank} ')
    log = next(two_proc.resumed.glob('train_dist_*.log')).read_text()
    assert 'Resumed from' in log and '(iteration 8, epoch 1)' in log


def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(two_proc, single_reference):
    assert_same(checkpoint_weights(single_reference), weights(two_proc.baseline), exact=False,
                what='2 × b vs 1 × 2b: ')


def test_two_processes_accumulating_two_micro_batches_equal_one_process_with_the_whole_batch(two_proc,
                                                                                              single_reference):
    # DDP skips the gradient all-reduce on the first micro-batch (no_sync) and does it on the second
    assert_same(weights(two_proc.accumulated, 0), weights(two_proc.accumulated, 1), what='accumulated: rank 1 ')
    assert_same(checkpoint_weights(single_reference), weights(two_proc.accumulated), exact=False,
                what='2 × (b/2) × 2 accumulated vs 1 × 2b: ')


def test_distributed_validation_equals_single_process_validation(two_proc, tmp_path):
    # the 2-process run's final weights, validated by one process (lr 0: its one step changes nothing)
    opt = options(tmp_path / 'revalidate', batch=2 * BATCH, total=1)
    opt['val']['val_freq'] = 1
    opt['path']['pretrain_network_g'] = str(two_proc.baseline / 'models' / f'net_g_{TOTAL}.pth')
    opt['train']['optim_g']['lr'] = 0.0
    single = train_here(argv(tmp_path, 'revalidate', opt, launcher='none'))['heldout']['psnr']
    distributed = [report(two_proc.baseline, r)['val']['heldout']['psnr'] for r in (0, 1)]
    assert distributed[0] == distributed[1]
    assert distributed[0] == pytest.approx(single, abs=1e-6)


def test_eats_under_ddp_draws_the_same_pairs_on_every_rank(two_proc):
    root = two_proc.eats
    assert (root / 'models' / 'net_g_6.pth').exists()
    assert_same(weights(root, 0), weights(root, 1), what='EATS rank 1 ')
    draws = [report(root, r)['eats'] for r in (0, 1)]
    assert draws[0], 'EATS.draw_pairs was not called (renamed?)'
    assert draws[0] == draws[1]
    assert len({json.dumps(d[1]) for d in draws[0]}) > 1, 'EATS drew the same pair at every iteration'


def test_adaptive_dropout_weights_are_learnt_in_step(two_proc):
    root = two_proc.adaptive
    w0, w1 = weights(root, 0), weights(root, 1)
    learnt = [k for k in w0 if k.startswith('regularizers.') and 'w_logits' in k]
    assert learnt, f'no learnable AdaptiveDropout weights in {sorted(w0)}'
    assert any(not torch.allclose(w0[k], torch.logit(torch.tensor(0.3))) for k in learnt), 'w was not trained'
    for k in learnt:
        assert torch.equal(w0[k], w1[k]), f'{k} differs between ranks'
        assert all(report(root, r)['has_grad'][k] for r in (0, 1))


def test_eco_teacher_is_frozen_outside_ddp_on_every_rank(two_proc):
    root = two_proc.eco
    assert (root / 'models' / 'net_g_6.pth').exists()
    assert_same(weights(root, 0), weights(root, 1), what='ECO rank 1 ')
    teachers = [report(root, r)['teacher'] for r in (0, 1)]
    assert all(teachers), 'no rank built an ECO teacher'
    for t in teachers:
        assert not (t['ddp'] or t['in_student'] or t['requires_grad'] or t['has_grad'])
        assert t['forwards'] and t['forwards'] > 0
    teacher_ckpt = checkpoint_weights(two_proc.baseline)
    assert teachers[0]['weights'] == teachers[1]['weights'] == {
        k: v.flatten()[:4].tolist() for k, v in teacher_ckpt.items()}
    assert not any('teacher' in k for k in weights(root, 0))


# ----------------------------------------------------------------------------- signals and failures
def test_sigterm_under_torchrun_then_auto_resume_matches_uninterrupted_run(launched, two_proc):
    assert launched.signalled['stopped_torchrun'], 'the run ended before SIGTERM' + launched.torchrun_tail
    stopped_at = launched.stopped_at['stopped_torchrun']
    assert stopped_at is not None and 3 <= stopped_at < TOTAL, launched.torchrun_tail
    assert 'Stopped by signal' in launched.torchrun_tail
    for rank in (0, 1):
        assert_same(weights(two_proc.probe, rank), weights(two_proc.stopped_torchrun, rank), what=f'rank {rank} ')


def test_sigterm_single_process_then_auto_resume_matches_uninterrupted_run(launched, single_reference):
    assert launched.signalled['stopped_single'], 'the run ended before SIGTERM' + launched.single_tail
    assert launched.rc['stopped_single'] == 0, launched.single_tail
    stopped_at = launched.stopped_at['stopped_single']
    assert stopped_at is not None and 3 <= stopped_at < TOTAL, launched.single_tail
    assert 'Stopped by signal' in launched.single_tail
    assert 'DataLoader worker' not in launched.single_tail  # its worker got the SIGTERM too
    train_here(launched.stopped_single_argv + ['--auto_resume'])
    assert newest_iter(launched.roots.stopped_single) == TOTAL
    assert_same(checkpoint_weights(single_reference), checkpoint_weights(launched.roots.stopped_single))


def test_a_dead_rank_makes_the_other_fail_within_the_timeout(launched):
    """Two srun-style processes (no torchrun agent to tear the group down): SIGKILL rank 1."""
    assert launched.signalled['dead'], 'rank 0 ended before rank 1 was killed' + launched.dead_tail
    elapsed, rc = launched.dead_elapsed, launched.rc['dead']
    assert elapsed is not None, f'rank 0 still ran {DEAD_RANK_BOUND} s after rank 1 died' + launched.dead_tail
    assert rc not in (0, None) and elapsed < DEAD_RANK_BOUND, launched.dead_tail


@pytest.fixture
def degraded_models(tmp_path):
    """Models of rank 0 and 1 (of 2) with the training degradation, built in this process."""
    raw = options(tmp_path / 'deg')
    raw['degradation'] = {'type': 'HighOrderDegradation', 'gt_size': 16}
    path = tmp_path / 'deg.yml'
    path.write_text(yaml.safe_dump(raw))
    models = []
    for rank in (0, 1):
        opt = load_options(str(path))
        opt.update(rank=rank, world_size=2, dist=False)
        models.append(build_model(opt))
    return models


def test_each_rank_seeds_its_degradation_with_manual_seed_plus_rank(degraded_models):
    for rank, model in enumerate(degraded_models):
        expected = torch.Generator().manual_seed(model.opt['manual_seed'] + rank).get_state()
        assert torch.equal(model.degradation.state_dict()['generator'], expected)


def test_resume_gives_each_rank_its_own_streams(degraded_models):
    with torch.random.fork_rng(devices=[]):
        saved = []
        for rank, model in enumerate(degraded_models):
            torch.manual_seed(100 + rank)
            torch.rand(rank + 1, generator=model.degradation.generator)  # the streams move on differently
            saved.append({'rng': get_rng_states(), **model.rank_state()})
        state, log = {'iter': 8, 'rng': saved[0]['rng'], 'ranks': saved}, logging.getLogger('test')
        model = degraded_models[1]
        model.degradation.seed(0)
        torch.manual_seed(0)
        train._restore_rank_state(model, state, model.opt, log)
        assert torch.equal(torch.get_rng_state(), saved[1]['rng']['torch'])
        assert torch.equal(model.degradation.state_dict()['generator'], saved[1]['degradation']['generator'])
        # another number of processes: fresh streams, not rank 0's
        train._restore_rank_state(model, {**state, 'ranks': saved[:1]}, model.opt, log)
        assert not torch.equal(torch.get_rng_state(), saved[0]['rng']['torch'])


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
    with pytest.raises(RuntimeError, match='torchrun'):
        dist_util.init_dist('pytorch', use_cuda=False)
    with pytest.raises(RuntimeError, match='srun'):
        dist_util.init_dist('slurm', use_cuda=False)
    with pytest.raises(RuntimeError, match='gloo'):
        dist_util.init_dist('pytorch', use_cuda=False, backend='nccl')
    with pytest.raises(ValueError, match='none, pytorch or slurm'):
        dist_util.init_dist('mpi', use_cuda=False)


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
        assert out.returncode == 2 and 'usage:' in out.stderr


@pytest.fixture
def echo_bin(tmp_path):
    """``srun`` and ``python`` stand-ins that print the command line they were given."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name in ('srun', 'python'):
        (bin_dir / name).write_text('#!/bin/sh\necho "$(basename "$0") $*"\n')
        (bin_dir / name).chmod(0o755)
    (tmp_path / 'x.yml').write_text('')
    clean = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'NNODES', 'NODE_RANK', 'RDZV_'))}

    def run(script, *args, **env):
        environ = dict(clean, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', PYTHON=str(bin_dir / 'python'), **env)
        out = subprocess.run([str(REPO / 'scripts' / script), *args], capture_output=True, text=True, env=environ,
                             cwd=tmp_path, timeout=30)
        return out.returncode, out.stdout.split(), out.stderr

    return run


def test_dist_train_sh_builds_torchrun_commands(echo_bin):
    code, cmd, _ = echo_bin('dist_train.sh', '4', 'x.yml', '--auto_resume')
    assert code == 0 and cmd[:3] == ['python', '-m', 'torch.distributed.run']
    assert {'--nproc_per_node=4', '--nnodes=1', '--standalone', '--launcher', 'pytorch', '--auto_resume'} <= set(cmd)
    code, cmd, _ = echo_bin('dist_train.sh', '8', 'x.yml', NNODES='2', NODE_RANK='1', MASTER_ADDR='node0')
    assert code == 0 and {'--nnodes=2', '--node_rank=1', '--master_addr=node0', '--master_port=29500'} <= set(cmd)
    code, cmd, _ = echo_bin('dist_train.sh', '8', 'x.yml', NNODES='2', RDZV_ENDPOINT='node0:29400')
    assert code == 0 and {'--rdzv_backend=c10d', '--rdzv_endpoint=node0:29400'} <= set(cmd)
    code, _, err = echo_bin('dist_train.sh', '8', 'x.yml', NNODES='2')
    assert code == 2 and 'NODE_RANK' in err
    code, _, err = echo_bin('dist_train.sh', '2', 'missing.yml')
    assert code == 2 and 'missing.yml' in err


def test_slurm_train_sh_builds_srun_commands(echo_bin):
    code, cmd, _ = echo_bin('slurm_train.sh', 'x.yml', '4', '--debug')
    assert code == 0 and cmd[0] == 'srun'
    assert {'--kill-on-bad-exit=1', '--ntasks=4', '--ntasks-per-node=4', '--gres=gpu:4'} <= set(cmd)
    assert cmd[-4:] == ['--launcher', 'slurm', '--auto_resume', '--debug']
    # inside a job the step takes the job's allocation
    code, cmd, _ = echo_bin('slurm_train.sh', 'x.yml', SLURM_JOB_ID='42', SRUN_ARGS='--exclusive -l')
    assert code == 0 and not any(a.startswith(('--ntasks', '--gres')) for a in cmd)
    assert {'--kill-on-bad-exit=1', '--exclusive', '-l', '--auto_resume'} <= set(cmd)
