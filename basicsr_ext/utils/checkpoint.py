"""Atomic checkpoint files, RNG state capture, and discovery of the newest complete checkpoint."""
import glob
import io
import json
import os
import random
import re
import shutil
import tempfile

import numpy as np
import torch


def atomic_write(path, write):
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A kill at any moment leaves either the previous file or the complete new one, plus at most a
    ``.<name>.<random>.tmp`` file, which :func:`remove_partial_writes` deletes on resume.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:  # after the rename there is nothing left to remove; after a failure, the partial copy
        if os.path.exists(tmp):
            os.remove(tmp)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, permissions, I/O error); the previous one is intact."""


def _free_bytes(folder):
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def atomic_save(obj, path):
    """torch.save through :func:`atomic_write`, synced to disk before the rename.

    The object is serialised in memory first, so a failed write can say how many bytes it needed.
    On failure the temporary file is removed, the file at ``path`` (the previous checkpoint, if any)
    is left as it was, and :class:`CheckpointWriteError` names the path, the bytes and the cause.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getbuffer(), path)


def atomic_write_bytes(data, path):
    """``data`` to ``path`` through :func:`atomic_write`, synced to disk before the rename; a failure raises
    :class:`CheckpointWriteError` (see :func:`atomic_save`)."""

    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    try:
        atomic_write(path, write)
    except OSError as err:
        free = _free_bytes(os.path.dirname(os.path.abspath(path)))
        room = f', {free:,d} bytes free there' if free is not None else ''
        raise CheckpointWriteError(err.errno, f"cannot write '{path}' ({len(data):,d} bytes needed{room}): "
                                   f'{err.strerror or err}') from err


def remove_partial_writes(folder):
    """Delete the temporary files that ``atomic_save`` leaves behind when its process is killed mid-write.

    They are never a usable checkpoint, and a run that is preempted often would otherwise accumulate them.
    Returns the removed paths.
    """
    removed = []
    for p in glob.glob(os.path.join(glob.escape(folder), '.*.tmp')):
        if os.path.isfile(p):
            os.remove(p)
            removed.append(p)
    return removed


def get_rng_states():
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def load_checkpoint(path):
    """Load our own .pth/.state files: CPU first, weights-only unpickling (numpy RNG state allowlisted)."""
    with torch.serialization.safe_globals(_SAFE_GLOBALS):
        return torch.load(path, map_location='cpu', weights_only=True)


def _numpy_safe_globals():
    out = [np.ndarray, np.dtype, type(np.dtype('uint32'))]
    try:
        out.append(np._core.multiarray._reconstruct)
    except AttributeError:
        out.append(np.core.multiarray._reconstruct)
    return out


_SAFE_GLOBALS = _numpy_safe_globals()


def checkpoint_iters(states_dir):
    """Iterations that have a .state file, newest first."""
    iters = []
    for p in glob.glob(os.path.join(states_dir, '*.state')):
        m = re.fullmatch(r'(\d+)\.state', os.path.basename(p))
        if m:
            iters.append(int(m.group(1)))
    return sorted(iters, reverse=True)


def find_resume_state(states_dir, models_dir, logger=None):
    """Path of the newest .state whose file and network weights both load, or None."""
    for it in checkpoint_iters(states_dir):
        state_path = os.path.join(states_dir, f'{it}.state')
        net_path = os.path.join(models_dir, f'net_g_{it}.pth')
        try:
            load_checkpoint(state_path)
            load_checkpoint(net_path)
        except Exception as err:  # an unreadable checkpoint is skipped, the previous one is tried
            if logger:
                logger.warning(f'skipping checkpoint {it}: {type(err).__name__}: {err}')
            continue
        return state_path
    return None


def prune_checkpoints(states_dir, models_dir, keep):
    """Keep only the newest ``keep`` checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    for it in checkpoint_iters(states_dir)[keep:]:
        for p in (os.path.join(states_dir, f'{it}.state'), os.path.join(models_dir, f'net_g_{it}.pth'),
                  os.path.join(models_dir, f'net_g_{it}.safetensors'),  # logger.save_safetensors
                  os.path.join(models_dir, f'net_d_{it}.pth')):  # net_d: the GAN model's discriminator
            if os.path.exists(p):
                os.remove(p)


# --------------------------------------------------------------------------- safetensors
def safetensors_metadata(param_key, network_g, scale):
    """The metadata of a .safetensors checkpoint (strings only): which weights these are, the network
    options and the scale, which a loader cannot read from the weights alone (RRDBNetAnyScale ×3 has
    exactly the parameters of ×4)."""
    return {'format': 'pt', 'param_key': str(param_key), 'arch': str(network_g.get('type', '')),
            'scale': str(int(scale)), 'network_g': json.dumps(network_g, sort_keys=True)}


def atomic_save_safetensors(tensors, path, metadata):
    """``tensors`` (a state dict) as a .safetensors file with string ``metadata``, written atomically."""
    from safetensors.torch import save  # a package only .safetensors output needs, imported when it is asked for
    atomic_write_bytes(save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata),
                       path)


def load_safetensors(path):
    """``(state dict on the CPU, metadata dict)`` of a .safetensors file; the metadata is {} when it has none."""
    from safetensors import safe_open  # a package only .safetensors files need, imported when one is read
    tensors = {}
    with safe_open(str(path), framework='pt', device='cpu') as f:
        metadata = dict(f.metadata() or {})
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, metadata
