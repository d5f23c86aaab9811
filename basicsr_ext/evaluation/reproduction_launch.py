"""Running a reproduction's training: inputs, local processes (one after another or one row per GPU
group, torchrun for a row on several GPUs) and SLURM jobs with dependencies.

Training always runs ``train.py`` in a child process from the project root with ``--auto_resume``, so
an interrupted row continues from its newest checkpoint and a finished one is never started. Each
call is appended to ``<run>/reproduce.json`` (command, devices, wall time, exit code).
"""
import datetime
import json
import os
import shlex
import subprocess
import sys
import time

import cv2

from ..data.skimage_photos_dataset import photo_path
from .reproduction import ROOT, SMOKE_SET, display, python_name, shell, train_argv
from .testsets import prepare_dataset

__all__ = ['make_smoke_data', 'check_benchmarks', 'prepare_validation', 'train_runs', 'slurm_jobs', 'slurm_lines',
           'write_slurm']

SMOKE_TRAIN = ('astronaut', 'coffee', 'rocket', 'chelsea')
SMOKE_TEST = ('motorcycle_left', 'ihc')


def make_smoke_data(plan):
    """The smoke budget's HR sets, centre crops of scikit-image's photos: 96² for training, 48² to test."""
    for names, folder, size in ((SMOKE_TRAIN, os.path.join(plan.benchmark_root, 'smoke_train'), 96),
                                (SMOKE_TEST, os.path.join(plan.benchmark_root, SMOKE_SET, 'HR'), 48)):
        os.makedirs(folder, exist_ok=True)
        for name in names:
            path = os.path.join(folder, f'{name}.png')
            if not os.path.isfile(path):
                img = cv2.imread(photo_path(name), cv2.IMREAD_COLOR)
                top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
                cv2.imwrite(path, img[top:top + size, left:left + size])


def check_benchmarks(plan):
    """Every evaluated set's HR folder exists; else a FileNotFoundError saying where it was looked for."""
    for name in dict.fromkeys((plan.val_set, ) + tuple(plan.budget.datasets)):
        folder = os.path.join(plan.benchmark_root, name, 'HR')
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"benchmark set {name}: folder '{folder}' does not exist; pass --benchmark_root, "
                                    'the folder holding Set5/HR, Set14/HR, BSD100/HR, Urban100/HR and Manga109/HR')


def prepare_validation(plan):
    """The clean LR set the training options validate on, at every scale of the plan (cached)."""
    opt = {'degradations': ['clean'], 'seed': 0, 'protocol': 'reflash', 'cache_dir': plan.cache_dir, 'workers': 1,
           'progress': False}
    dataset = {'name': plan.val_set, 'dataroot_hr': os.path.join(plan.benchmark_root, plan.val_set, 'HR'),
               'dataroot_lr': {}}
    for scale in sorted({r.scale for r in plan.runs.values()}):
        prepare_dataset(opt, dataset, scale)


def _record(run, entry):
    path = os.path.join(run.root, 'reproduce.json')
    data = {'run': run.id, 'train_calls': []}
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    data['train_calls'].append(entry)
    os.makedirs(run.root, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)


def _env(devices):
    return {'CUDA_VISIBLE_DEVICES': ','.join(devices)} if devices else {}


def local_commands(plan, groups):
    """``(run, argv, env)`` per unfinished run in plan order, devices assigned round-robin (as printed
    by --dry_run; the real scheduler gives a row the next free group)."""
    out = []
    todo = [r for r in plan.runs.values() if r.status() != 'finished']
    for i, run in enumerate(todo):
        devices = groups[i % len(groups)]
        nproc = len(devices) if devices else plan.gpus_per_row
        out.append((run, train_argv(run, 'none', nproc), _env(devices)))
    return out


def train_runs(plan, groups, log=print, poll=2.0):
    """Train every unfinished run: at most one per device group at a time, a run only after the runs it
    needs. ``groups``: lists of GPU ids, or ``[None]`` for one run at a time on this machine's default
    devices. Returns ``{run id: reason}`` for the runs that failed or could not start."""
    pending = [r for r in plan.runs.values() if r.status() != 'finished']
    failed, running = {}, {}
    quiet = len(groups) > 1  # several at once: each child's output goes to its run folder
    while pending or running:
        for run in list(pending):
            bad = [n for n in run.needs if n in failed]
            if bad:
                failed[run.id] = f'it needs {bad[0]}, which did not finish'
                pending.remove(run)
        for gi, devices in enumerate(groups):
            if gi in running:
                continue
            ready = next((r for r in pending if all(plan.runs[n].status() == 'finished' for n in r.needs)), None)
            if ready is None:
                break
            pending.remove(ready)
            argv = train_argv(ready, 'none', len(devices) if devices else plan.gpus_per_row, python=sys.executable)
            env = _env(devices)
            before = ready.status()
            log(f"[{ready.id}] {'resuming' if before == 'interrupted' else 'training'}: {shell(argv, env)}")
            os.makedirs(ready.root, exist_ok=True)
            out = open(os.path.join(ready.root, 'reproduce_train.out'), 'a') if quiet else None
            proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                    stderr=subprocess.STDOUT if out else None)
            running[gi] = (ready, proc, time.time(), out, shell(argv, env), before)
        if not running:
            for run in pending:
                failed[run.id] = 'the runs it needs are not finished'
            break
        time.sleep(poll if quiet else 0)
        for gi, (run, proc, t0, out, cmd, before) in list(running.items()):
            if not quiet:
                try:
                    proc.wait()
                except KeyboardInterrupt:  # the child got the SIGINT too: let it save its checkpoint
                    log(f'[{run.id}] interrupted: waiting for train.py to save a checkpoint; rerun to resume')
                    proc.wait()
                    raise
            if proc.poll() is None:
                continue
            del running[gi]
            if out:
                out.close()
            seconds = time.time() - t0
            status = run.status()
            _record(run, {'start': datetime.datetime.fromtimestamp(t0).isoformat(timespec='seconds'),
                          'seconds': round(seconds, 1), 'returncode': proc.returncode, 'command': cmd,
                          'status_before': before, 'status_after': status})
            if proc.returncode != 0 or status != 'finished':
                failed[run.id] = f'train.py exited with code {proc.returncode} (see {display(run.root)})'
            log(f'[{run.id}] {status} after {seconds / 60:.1f} min' + (f': {failed[run.id]}' if run.id in failed
                                                                         else ''))
    return failed


def _var(run_id):
    return 'JOB_' + ''.join(c if c.isalnum() else '_' for c in run_id)


def _sbatch(name, ntasks, output, body):
    return '\n'.join([
        '#!/usr/bin/env bash', f'#SBATCH --job-name={name}', '#SBATCH --nodes=1',
        f'#SBATCH --ntasks-per-node={ntasks}', f'#SBATCH --gres=gpu:{ntasks}', '#SBATCH --cpus-per-task=4',
        f'#SBATCH --output={output}', '#SBATCH --open-mode=append', '#SBATCH --requeue',
        '#SBATCH --signal=B:USR1@300', 'set -euo pipefail', f'cd {shlex.quote(ROOT)}',
        'export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}',
        '# near the time limit: the tasks save a checkpoint and exit, and the job goes back to the queue',
        'on_time_limit() { scancel --signal=TERM "$SLURM_JOB_ID"; wait "$child"; scontrol requeue "$SLURM_JOB_ID"; }',
        'trap on_time_limit USR1', f'{body} &', 'child=$!', 'wait "$child"', ''])


def slurm_jobs(plan, eval_argv):
    """The sbatch jobs: one per unfinished run (ECO after its teacher's job), then the evaluation after
    all of them. Each is ``{var, name, script, text, deps}``."""
    folder = os.path.join(plan.out, 'slurm')
    todo = [r for r in plan.runs.values() if r.status() != 'finished']
    ids = {r.id for r in todo}
    jobs = []
    for run in todo:
        body = 'srun --kill-on-bad-exit=1 ' + shell(train_argv(run, 'slurm', python=python_name()))
        jobs.append({'var': _var(run.id), 'name': run.id, 'script': os.path.join(folder, f'{run.id}.sbatch'),
                     'text': _sbatch(run.id, plan.gpus_per_row, os.path.join(folder, f'{run.id}-%j.out'), body),
                     'deps': [_var(n) for n in run.needs if n in ids]})
    name = 'evaluate_' + '_'.join(t.spec.id for t in plan.tables)
    jobs.append({'var': 'JOB_evaluate', 'name': name, 'script': os.path.join(folder, f'{name}.sbatch'),
                 'text': _sbatch(name, 1, os.path.join(folder, f'{name}-%j.out'), shell(eval_argv)),
                 'deps': [j['var'] for j in jobs]})
    return jobs


def slurm_lines(jobs, sbatch_args=()):
    """The submission as shell lines: ``VAR=$(sbatch --parsable [--dependency=afterok:$A:$B] script)``."""
    extra = ''.join(f' {shlex.quote(a)}' for a in sbatch_args)
    lines = []
    for j in jobs:
        dep = f" --dependency=afterok:{':'.join('$' + d for d in j['deps'])}" if j['deps'] else ''
        lines.append(f"{j['var']}=$(sbatch --parsable{extra}{dep} {shlex.quote(display(j['script']))}) && "
                     f"echo \"{j['name']}: job ${j['var']}\"")
    return lines


def write_slurm(plan, jobs, lines):
    """Write the sbatch scripts and ``submit.sh``; returns the path of submit.sh."""
    folder = os.path.join(plan.out, 'slurm')
    os.makedirs(folder, exist_ok=True)
    for j in jobs:
        with open(j['script'], 'w', encoding='utf-8') as f:
            f.write(j['text'])
    submit = os.path.join(folder, 'submit.sh')
    with open(submit, 'w', encoding='utf-8') as f:
        f.write('\n'.join(['#!/usr/bin/env bash', '# written by scripts/reproduce.py --launcher slurm', 'set -euo pipefail',
                           f'cd {shlex.quote(ROOT)}', *lines, '']))
    os.chmod(submit, 0o755)
    return submit
