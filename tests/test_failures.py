"""A failing run ends: bad images with loader workers, injected exceptions, failed checkpoint writes, failed peers.

Each run is a real ``train.py``-style process (its own session, output to a file) that must end within a
stated bound; a run that hangs is killed and the test fails.
"""
import errno
import os
import signal
import socket
import subprocess
import sys
import time

import cv2
import torch
import yaml
from skimage import data as skdata

from basicsr_ext.data.image_io import ImageReadError
from basicsr_ext.failures import original_message
from basicsr_ext.train import train_pipeline
from basicsr_ext.utils import checkpoint
from basicsr_ext.utils.checkpoint import find_resume_state, load_checkpoint
from conftest import REPO

EXIT_BOUND = 90  # seconds a failing run may take from start to exit, start-up and two workers included

HARNESS = '''
import atexit, os, sys, time
sys.path.insert(0, {repo!r})
import basicsr_ext  # noqa: F401
import torch
from basicsr_ext.regularizers import REGULARIZER_REGISTRY
from basicsr_ext.regularizers.base import Regularizer
from basicsr_ext.data.image_io import ImageReadError
from basicsr_ext.failures import original_message
from basicsr_ext.train import train_pipeline


@REGULARIZER_REGISTRY.register()
class FailAt(Regularizer):
    """Raises at one iteration, on one rank: an exception from inside the step."""

    def on_iter_start(self, current_iter):
        rank = int(os.environ.get('RANK', 0))
        if current_iter == int(os.environ['FAIL_AT']) and rank == int(os.environ.get('FAIL_RANK', rank)):
            raise RuntimeError(f'injected failure at iteration {{current_iter}} on rank {{rank}}')


if os.environ.get('SLOW_EXIT'):  # keeps the process in its exit path, where a signal must end it at once
    atexit.register(lambda: (print('EXITING', flush=True), time.sleep(float(os.environ['SLOW_EXIT']))))
sys.exit(train_pipeline(sys.argv[1:]))
'''


def write_photos(folder, names=('astronaut', 'coffee', 'chelsea')):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        img = getattr(skdata, name)()[:96, :96]
        cv2.imwrite(str(folder / f'{name}.png'), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return folder


def plant_bad_images(folder):
    (folder / 'empty.png').write_bytes(b'')
    good = (folder / 'astronaut.png').read_bytes()
    (folder / 'truncated.png').write_bytes(good[:len(good) // 3])
    (folder / 'notes.png').write_text('this is a text file, not an image\n')
    return ['empty.png', 'truncated.png', 'notes.png']


def tiny_run(root, name, train_set, total_iter, print_freq=2, **extra):
    """A tiny MSRResNet run on ``train_set`` that checkpoints every 3 iterations."""
    return {
        'name': name, 'scale': 4, 'num_gpu': 0, 'manual_seed': 3,
        'datasets': {'train': train_set},
        'network_g': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 4},
        'path': {'experiments_root': str(root)},
        'train': {'total_iter': total_iter, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'logger': {'print_freq': print_freq, 'save_checkpoint_freq': 3},
        **extra,
    }


def gt_only_options(root, dataroot, workers=2, total_iter=6, **dataset):
    train_set = {'name': 'bad', 'type': 'GTOnlyDataset', 'dataroot_gt': str(dataroot), 'crop_pad_size': 64,
                 'batch_size_per_gpu': 2, 'num_worker_per_gpu': workers, 'use_hflip': False, **dataset}
    return tiny_run(root, 'fail', train_set, total_iter, degradation={'type': 'HighOrderDegradation', 'gt_size': 32},
                    dist_params={'timeout': 30})


class Run:
    """One training process (optionally under torchrun) in its own session, output to a file."""

    def __init__(self, tmp, name, opt, nproc=1, **env):
        harness = tmp / 'harness.py'
        harness.write_text(HARNESS.format(repo=str(REPO)))
        opt_file = tmp / f'{name}.yml'
        opt_file.write_text(yaml.safe_dump(opt))
        cmd = [sys.executable, str(harness), '-opt', str(opt_file)]
        if nproc > 1:
            with socket.socket() as s:
                s.bind(('127.0.0.1', 0))
                port = s.getsockname()[1]
            cmd[1:1] = ['-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', '--master_addr=127.0.0.1',
                        f'--master_port={port}']
            cmd += ['--launcher', 'pytorch']
        environ = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
        environ.update(OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **env)
        self.log = tmp / f'{name}.out'
        self.start = time.monotonic()
        with open(self.log, 'w') as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=environ,
                                         start_new_session=True)

    def wait(self, timeout=EXIT_BOUND):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.seconds = time.monotonic() - self.start
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def output(self):
        return self.log.read_text(errors='replace')


def test_bad_images_with_workers_end_the_run_with_the_path_and_no_traceback(tmp_path):
    folder = write_photos(tmp_path / 'gt')
    bad = plant_bad_images(folder)
    run = Run(tmp_path, 'bad', gt_only_options(tmp_path / 'exp', folder))
    code = run.wait()
    out = run.output()
    assert code is not None, f'the run hung for {EXIT_BOUND} s:\n{out[-3000:]}'
    assert code == 1, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    assert any(os.path.join(str(folder), name) in out for name in bad), out[-3000:]
    assert 'on_bad_image: skip' in out
    assert 'The newest complete checkpoint is' in out


def test_bad_images_skipped_with_workers_train_to_the_end_and_are_counted(tmp_path):
    folder = write_photos(tmp_path / 'gt')
    plant_bad_images(folder)
    opt = gt_only_options(tmp_path / 'exp', folder, on_bad_image='skip', total_iter=8)
    run = Run(tmp_path, 'skip', opt)
    code = run.wait()
    out = run.output()
    assert code == 0, out[-3000:]
    assert (tmp_path / 'exp' / 'models' / 'net_g_8.pth').is_file()
    counts = [int(line.split('unreadable training image(s) were skipped')[0].split()[-1].replace(',', ''))
              for line in out.splitlines() if 'unreadable training image(s) were skipped' in line]
    assert len(counts) == 1 and counts[0] > 0, out[-3000:]


def test_an_exception_in_the_step_with_workers_exits_promptly_and_a_signal_ends_the_exit(tmp_path):
    folder = write_photos(tmp_path / 'gt')
    opt = gt_only_options(tmp_path / 'exp', folder, total_iter=20)
    opt['train']['regularizers'] = [{'type': 'FailAt'}]
    run = Run(tmp_path, 'raise', opt, FAIL_AT='5', SLOW_EXIT='600')
    deadline = time.monotonic() + EXIT_BOUND
    while 'EXITING' not in run.output() and run.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    out = run.output()
    assert 'EXITING' in out, f'the run did not reach its exit path:\n{out[-3000:]}'
    assert 'injected failure at iteration 5' in out and 'Traceback' in out  # unexpected: the traceback is kept
    os.kill(run.proc.pid, signal.SIGTERM)  # while atexit sleeps: it must end the process at once
    code = run.wait(timeout=15)
    assert code is not None and code != 0, f'SIGTERM did not end the exit path:\n{run.output()[-2000:]}'
    log = next((tmp_path / 'exp').glob('train_fail_*.log')).read_text()
    assert 'RuntimeError: injected failure at iteration 5' in log
    assert newest_iter(tmp_path / 'exp') == 3


def newest_iter(root):
    state = find_resume_state(str(root / 'training_states'), str(root / 'models'))
    return None if state is None else int(os.path.basename(state).split('.')[0])


def photo_options(root, total_iter=6):
    train_set = {'name': 'photos', 'type': 'SkimagePhotosDataset', 'photos': ['astronaut'], 'gt_size': 16,
                 'patches_per_image': 4, 'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0}
    return tiny_run(root, 'write', train_set, total_iter, print_freq=3)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_auto_resume_continues(tmp_path, monkeypatch,
                                                                                          capsys):
    exp = tmp_path / 'exp'
    opt_file = tmp_path / 'opt.yml'
    opt_file.write_text(yaml.safe_dump(photo_options(exp)))
    real_fsync, calls = os.fsync, []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) > 2:  # the weights and state of iteration 3 go through; the next write fails
            raise OSError(errno.ENOSPC, 'No space left on device')
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, 'fsync', full_disk)
    assert train_pipeline(['-opt', str(opt_file)]) == 1
    out = capsys.readouterr().out
    failed = exp / 'models' / 'net_g_6.pth'
    assert f"cannot write '{failed}'" in out and 'bytes needed' in out and 'No space left on device' in out
    assert 'The newest complete checkpoint is' in out and '3.state' in out
    assert not failed.exists()
    assert not list(exp.rglob('*.tmp'))
    assert load_checkpoint(exp / 'models' / 'net_g_3.pth')['params']

    monkeypatch.setattr(checkpoint.os, 'fsync', real_fsync)
    assert train_pipeline(['-opt', str(opt_file), '--auto_resume']) == 0
    assert 'Resumed from' in capsys.readouterr().out
    assert (exp / 'models' / 'net_g_6.pth').is_file() and not list(exp.rglob('*.tmp'))


def test_an_unreadable_validation_image_is_an_error_or_skipped_and_counted(tmp_path, capsys):
    hr, lr = write_photos(tmp_path / 'hr'), tmp_path / 'lr'
    lr.mkdir()
    for path in hr.glob('*.png'):
        img = cv2.imread(str(path))
        cv2.imwrite(str(lr / path.name), cv2.resize(img, (24, 24), interpolation=cv2.INTER_AREA))
    (lr / 'coffee.png').write_bytes(b'')
    opt = photo_options(tmp_path / 'exp', total_iter=2)
    opt['datasets']['val'] = {'name': 'pairs', 'type': 'PairedDataset', 'dataroot_gt': str(hr),
                              'dataroot_lq': str(lr)}
    opt['val'] = {'val_freq': 2, 'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}
    opt_file = tmp_path / 'opt.yml'
    opt_file.write_text(yaml.safe_dump(opt))
    assert train_pipeline(['-opt', str(opt_file)]) == 1
    out = capsys.readouterr().out
    assert f"cannot decode image '{lr / 'coffee.png'}': the file is empty" in out and 'Traceback' not in out

    opt['datasets']['val']['on_bad_image'] = 'skip'
    opt_file.write_text(yaml.safe_dump(opt))
    assert train_pipeline(['-opt', str(opt_file)]) == 0
    out = capsys.readouterr().out
    assert 'pairs: 1 unreadable image(s) skipped (on_bad_image: skip); the metrics average the other 2' in out


def test_when_one_of_two_gloo_ranks_raises_both_exit_non_zero_within_the_timeout(tmp_path):
    opt = photo_options(tmp_path / 'exp', total_iter=30)
    opt['datasets']['train']['photos'] = ['astronaut', 'coffee']
    opt['train']['regularizers'] = [{'type': 'FailAt'}]
    opt['dist_params'] = {'timeout': 30}
    run = Run(tmp_path, 'ddp', opt, nproc=2, FAIL_AT='4', FAIL_RANK='1')
    code = run.wait(timeout=EXIT_BOUND + 30)
    out = run.output()
    assert code is not None, f'the job hung:\n{out[-3000:]}'
    assert code != 0 and run.seconds < EXIT_BOUND + 30, out[-3000:]
    assert 'injected failure at iteration 4 on rank 1' in out
    # torchrun reports each worker's exit code; neither rank may have finished normally
    assert 'exitcode  : 1' in out or 'exitcode: 1' in out or 'exit code 1' in out.lower(), out[-3000:]


def test_an_empty_option_file_says_it_is_empty(tmp_path, capsys):
    empty = tmp_path / 'empty.yml'
    empty.write_text('# nothing yet\n')
    assert train_pipeline(['-opt', str(empty)]) == 2
    assert f'{empty}: the option file is empty' in capsys.readouterr().err


def test_known_failure_messages_unwrap_the_worker_traceback():
    wrapped = ImageReadError("Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                             "call last):\n  File \"x.py\", line 1, in f\nbasicsr_ext.data.image_io.ImageReadError: "
                             "cannot decode image '/d/a.png': the file is empty\n")
    assert original_message(wrapped) == "cannot decode image '/d/a.png': the file is empty"
    assert original_message(ValueError('plain')) == 'plain'


def test_out_of_memory_names_the_batch_the_patch_and_the_options_that_lower_them():
    from basicsr_ext.failures import describe_failure
    opt = {'datasets': {'train': {'batch_size_per_gpu': 48}}, 'degradation': {'gt_size': 256}}
    text = describe_failure(torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB'), opt, 7)
    assert text.startswith('Training stopped at iteration 7: out of GPU memory with batch_size_per_gpu 48 and '
                           'patch size 256')
    for option in ('datasets.train.batch_size_per_gpu', 'train.accumulate', 'train.amp: bf16', 'val.tile_size'):
        assert option in text
    assert describe_failure(RuntimeError('a bug'), opt, 7) is None  # unexpected: the caller keeps the traceback


def test_a_nan_metric_on_one_validation_image_leaves_the_mean_of_the_others(tmp_path, monkeypatch, capsys):
    from basicsr_ext.models import validation
    values = iter([float('nan'), 10.0, 20.0])
    monkeypatch.setattr(validation, 'calculate_metric', lambda data, opt: next(values))
    opt = photo_options(tmp_path / 'exp', total_iter=1)
    opt['datasets']['val'] = {'name': 'held', 'type': 'SkimagePhotosDataset', 'photos': ['chelsea', 'coffee', 'ihc'],
                              'max_size': 32}
    opt['val'] = {'val_freq': 1, 'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}
    opt_file = tmp_path / 'opt.yml'
    opt_file.write_text(yaml.safe_dump(opt))
    assert train_pipeline(['-opt', str(opt_file)]) == 0
    out = capsys.readouterr().out
    assert 'held: psnr is NaN on 1 image(s) (e.g. NIQE on flat images); the mean is over the other 2' in out
    assert 'Final validation on held at iteration 1: psnr: 15.0000' in out
