"""torch.distributed set-up for torchrun (``--launcher pytorch``) and SLURM (``--launcher slurm``).

Uses PyTorch's own process groups: NCCL on GPUs, gloo on CPU, so every distributed code path
can be tested on a CPU machine.
"""
import datetime
import os
import subprocess

import torch
import torch.distributed as dist


def _slurm_env(port):
    """Translate SLURM variables into the env:// variables torch.distributed reads."""
    rank = int(os.environ['SLURM_PROCID'])
    world = int(os.environ['SLURM_NTASKS'])
    local_rank = int(os.environ.get('SLURM_LOCALID', 0))
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ.get('SLURM_STEP_NODELIST') or os.environ['SLURM_NODELIST']
        addr = subprocess.getoutput(f'scontrol show hostname {nodes} | head -n1').strip()
        os.environ['MASTER_ADDR'] = addr or '127.0.0.1'
    os.environ.setdefault('MASTER_PORT', str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=os.environ.get('SLURM_NTASKS_PER_NODE', '1').split('(')[0])
    return rank, world, local_rank


def init_dist(launcher, use_cuda, backend=None, port=29500, timeout=1800):
    """Initialise the default process group. Returns (rank, world_size, local_rank)."""
    if launcher == 'none':
        return 0, 1, 0
    if launcher == 'slurm':
        rank, world, local_rank = _slurm_env(port)
    elif launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
        if missing:
            raise RuntimeError(f'--launcher pytorch needs the environment variables that torchrun sets '
                               f'(missing: {", ".join(missing)}); start with '
                               '`torchrun --nproc_per_node=N train.py -opt ... --launcher pytorch`')
        rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
    else:
        raise ValueError(f"--launcher: unknown launcher '{launcher}'; use none, pytorch or slurm")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = backend or ('nccl' if use_cuda else 'gloo')
    dist.init_process_group(backend=backend, init_method='env://', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout))
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


def cleanup():
    if is_dist():
        dist.destroy_process_group()
