"""torch.distributed for torchrun (``--launcher pytorch``) and SLURM (``--launcher slurm``).

Uses PyTorch's own process groups: NCCL on GPUs, gloo on CPU, so every distributed code path
can be tested on a CPU machine. Also holds the pieces of the training loop that only matter
with several processes or under a scheduler: per-rank state gathering and the stop flag.
"""
import datetime
import functools
import os
import re
import signal
import subprocess

import torch
import torch.distributed as dist


def first_host(nodelist):
    """First host name of a SLURM node list such as ``gpu[03-05,09],cpu1`` (no scontrol needed)."""
    m = re.match(r'([^,\[]+)(?:\[([^\]]+)\])?', nodelist.strip())
    if not m:
        raise ValueError(f'cannot read a host name from the SLURM node list {nodelist!r}')
    prefix, ranges = m.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(',')[0].split('-')[0]


def _slurm_master_addr(nodelist):
    try:
        out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True, text=True, timeout=30)
        hosts = out.stdout.split() if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):  # no scontrol on this node: expand the list ourselves
        hosts = []
    return hosts[0] if hosts else first_host(nodelist)


def _slurm_env(port):
    """Translate SLURM variables into the env:// variables torch.distributed reads."""
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher slurm needs the variables srun sets (missing: {", ".join(missing)}); '
                           'start each process with srun, or use --launcher pytorch with torchrun')
    rank = int(os.environ['SLURM_PROCID'])
    world = int(os.environ['SLURM_NTASKS'])
    local_rank = int(os.environ.get('SLURM_LOCALID', 0))
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ.get('SLURM_STEP_NODELIST') or os.environ.get('SLURM_JOB_NODELIST') or os.environ.get(
            'SLURM_NODELIST', '127.0.0.1')
        os.environ['MASTER_ADDR'] = _slurm_master_addr(nodes)
    os.environ.setdefault('MASTER_PORT', str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
    return rank, world, local_rank


def _torchrun_env(local_rank_arg):
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs the environment variables that torchrun sets '
                           f'(missing: {", ".join(missing)}); start with '
                           '`torchrun --nproc_per_node=N train.py -opt ... --launcher pytorch`')
    # the deprecated torch.distributed.launch passes --local-rank instead of setting LOCAL_RANK
    local_rank = int(os.environ.get('LOCAL_RANK', local_rank_arg or 0))
    return int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), local_rank


_owned = False  # whether init_dist created the default group (and cleanup may destroy it)


def init_dist(launcher, use_cuda, backend=None, port=29500, timeout=600, local_rank=None):
    """Initialise the default process group. Returns (rank, world_size, local_rank).

    ``timeout`` bounds every collective: if a rank dies or hangs, the others fail after it
    instead of waiting forever (with NCCL through asynchronous error handling). A group that
    the calling program has already initialised is used as it is.
    """
    global _owned
    if launcher == 'none':
        return 0, 1, 0
    if is_dist():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get('LOCAL_RANK', local_rank or 0))
    backend = backend or ('nccl' if use_cuda else 'gloo')
    if backend == 'nccl' and not use_cuda:
        raise RuntimeError("dist_params.backend: 'nccl' needs GPUs; use 'gloo' for CPU training (num_gpu: 0)")
    if launcher == 'slurm':
        rank, world, local_rank = _slurm_env(port)
    elif launcher == 'pytorch':
        rank, world, local_rank = _torchrun_env(local_rank)
    else:
        raise ValueError(f"--launcher: unknown launcher '{launcher}'; use none, pytorch or slurm")
    if use_cuda:
        # a scheduler may expose only this task's GPU (--gpus-per-task), making it device 0
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if backend == 'nccl':
        # without it a collective whose peer died blocks the process past the timeout
        os.environ.setdefault('TORCH_NCCL_ASYNC_ERROR_HANDLING', '1')
    dist.init_process_group(backend=backend, init_method='env://', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout))
    _owned = True
    return rank, world, local_rank


def is_dist():
    return dist.is_available() and dist.is_initialized()


def barrier():
    if is_dist():
        dist.barrier()


def any_rank(flag: bool, device) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not is_dist():
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj, src=0):
    """``obj`` of rank ``src`` on every rank (picklable objects only)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj):
    """List of every rank's ``obj``, in rank order, on every rank."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup():
    """Destroy the default group if init_dist created it."""
    global _owned
    if is_dist() and _owned:
        dist.destroy_process_group()
    _owned = False


class StopNow(KeyboardInterrupt):
    """A second SIGTERM/SIGINT: the run stops at once, without finishing the iteration or saving."""


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag checked between iterations (a checkpoint is saved, then exit).

    SLURM preemption and time limits send SIGTERM to every task; torchrun forwards the signal
    it receives to its workers (which it starts in their own sessions). A second signal of either
    kind raises :class:`StopNow`, which ends the run at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise StopNow(f'second signal {signal.Signals(signum).name}')
        self.signal = signum

    def restore(self):
        """Reinstate the handlers found at construction (train_pipeline may run inside a larger program)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _ignore_stop_signals(worker_init_fn, worker_id):
    # torch's own worker handler dies on a SIGTERM not sent by the main process, and the main
    # process then raises from its SIGCHLD handler before it can save; workers still exit
    # when the main process does, through DataLoader's parent watchdog.
    for sig in StopRequest.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if worker_init_fn is not None:
        worker_init_fn(worker_id)


def shield_workers(loader):
    """Make ``loader``'s worker processes outlive a SIGTERM/SIGINT sent to the whole job or process group."""
    loader.worker_init_fn = functools.partial(_ignore_stop_signals, loader.worker_init_fn)
    return loader
