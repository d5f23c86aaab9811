"""Inference helpers shared by validation, ``test.py`` and ``scripts/inference.py``.

* running a network: padding to the size multiple an architecture needs, tiling with overlap,
  batching same-size images, optional autocast on CUDA;
* loading a network for inference: architecture from a registered name or an options file,
  weights from a checkpoint, with errors that say what does not fit (architecture, scale);
* one image array in, one out, keeping what a user expects of the file: gray stays gray,
  alpha is upscaled on its own and re-attached, 16-bit stays 16-bit.
"""
import contextlib
import inspect
import math
import os
from copy import deepcopy

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.image_io import ImageTooSmallError
from .checkpoint import load_checkpoint
from .schema import OptionError

__all__ = [
    'ScaleMismatchError', 'input_multiple', 'check_input_size', 'forward_padded', 'forward_tiled', 'autocast', 'amp_dtype',
    'check_amp',
    'forward_batches', 'resolve_device', 'measure_scale', 'checkpoint_scale', 'load_state_dict', 'read_arch_options',
    'set_net_scale', 'load_network', 'upscale_array'
]

SCALE_KEYS = ('upscale', 'scale')
CANDIDATE_SCALES = (1, 2, 3, 4, 8)


class ScaleMismatchError(ValueError):
    """A network or checkpoint upsamples by another factor than the one asked for."""


# --------------------------------------------------------------------------- running a network
def input_multiple(net):
    """Input H and W must be multiples of this (window attention: its window size; RRDBNet ×1/×2: unshuffle).

    Window sizes are collected from the blocks (any submodule with an integer ``window_size``)
    because basicsr's SwinIR keeps the size only there, and a block whose ``img_size`` is
    smaller than its window shrinks the window.
    """
    net = getattr(net, 'module', net)
    multiple = 1
    for m in net.modules():
        ws = getattr(m, 'window_size', None)
        if isinstance(ws, int) and ws > 0:
            multiple = math.lcm(multiple, ws)
    if type(net).__name__.startswith('RRDBNet') and getattr(net, 'scale', 4) in (1, 2):
        multiple = math.lcm(multiple, 4 if net.scale == 1 else 2)
    return multiple


def check_input_size(net, h, w, name='input'):
    """Refuse an LR image smaller than one window / unshuffle block: padding would be most of it."""
    need = input_multiple(net)
    if h < need or w < need:
        raise ImageTooSmallError(f'{name} is {h}x{w} (HxW) at the network input; {type(net).__name__} needs at least '
                                 f'{need}x{need} (its window / pixel-unshuffle size); use a larger image')


def _pad_mode(h_pad, w_pad, h, w):
    # 'reflect' needs the pad to be smaller than the input; fall back to replicate for tiny inputs
    return 'reflect' if h_pad < h and w_pad < w else 'replicate'


def forward_padded(net, lq, scale, multiple=None):
    """Reflect-pad ``lq`` at the bottom/right to a multiple, run ``net``, crop the output back."""
    multiple = multiple or input_multiple(net)
    h, w = lq.shape[-2:]
    h_pad, w_pad = (-h) % multiple, (-w) % multiple
    if h_pad or w_pad:
        lq = F.pad(lq, (0, w_pad, 0, h_pad), mode=_pad_mode(h_pad, w_pad, h, w))
    out = net(lq)
    return out[..., :h * scale, :w * scale]


def _round_up(x, m):
    return -(-x // m) * m


def forward_tiled(net, lq, scale, tile, tile_pad=16, multiple=None):
    """Run ``net`` over overlapping tiles of ``lq`` and stitch the centres.

    Each tile of ``tile``×``tile`` LR pixels is processed with ``tile_pad`` pixels of context
    on every side (clipped at the border); only the tile's own region of the output is kept.
    For a network whose receptive field fits in the context the result equals untiled
    inference up to float rounding. ``tile`` and ``tile_pad`` are rounded up to the input
    multiple, so every tile starts on the window grid of the whole image: window attention
    then partitions a tile's interior exactly as it partitions the whole image.
    """
    multiple = multiple or input_multiple(net)
    b, c, h, w = lq.shape
    if tile <= 0 or (tile >= h and tile >= w):
        return forward_padded(net, lq, scale, multiple)
    tile, tile_pad = _round_up(tile, multiple), _round_up(tile_pad, multiple)
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
            py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
            sr = forward_padded(net, lq[..., py0:py1, px0:px1], scale, multiple)
            if out is None:
                out = sr.new_zeros(b, sr.shape[1], h * scale, w * scale)
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                sr[..., (y0 - py0) * scale:(y1 - py0) * scale, (x0 - px0) * scale:(x1 - px0) * scale]
    return out


_AMP_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}


def check_amp(value, where):
    """Option check for an ``amp`` key: false, true (= fp16), 'fp16' or 'bf16'."""
    if value not in (False, True, 'fp16', 'bf16'):
        raise OptionError(f"{where}: expected false, true, 'fp16' or 'bf16', got {value!r}")


def amp_dtype(amp):
    """The autocast dtype of an ``amp`` option value, or None when it is off."""
    return _AMP_DTYPES['fp16' if amp is True else amp] if amp else None


def autocast(device, amp, allow_cpu=False):
    """Autocast context for ``amp`` in (False, True, 'fp16', 'bf16'); a no-op when off.

    Raises:
        ValueError: ``amp`` is set but ``device`` is not CUDA and ``allow_cpu`` is false (CPU
            autocast is far slower than fp32 on CPUs without bf16 units, such as the project's).
    """
    if not amp:
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type != 'cuda' and not allow_cpu:
        raise ValueError(f'amp: mixed precision needs a CUDA device, but the device is {device}; set amp: false')
    return torch.autocast(device_type=device.type, dtype=amp_dtype(amp))


def forward_batches(net, images, scale, batch_size=1, tile=0, tile_pad=16, device='cpu', amp=False):
    """Run ``net`` on a list of CHW float tensors; same-size images go through together.

    Images are grouped by size, in order of first appearance, and each group is cut into
    batches of at most ``batch_size``. Results come back as float32 CHW tensors on the CPU,
    in the input order.

    Yields:
        (index, output) pairs, as batches finish, so a caller can advance a progress bar.
    """
    groups = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    autocast(device, amp)  # fail before the first batch, not inside it
    step = max(1, int(batch_size))
    for indices in groups.values():
        for start in range(0, len(indices), step):
            chunk = indices[start:start + step]
            lq = torch.stack([images[i] for i in chunk]).to(device)
            with torch.no_grad(), autocast(device, amp):  # not inference_mode: callers modify the outputs in place
                out = forward_tiled(net, lq, scale, tile, tile_pad)
            out = out.float().cpu()
            for k, i in enumerate(chunk):
                yield i, out[k]


def resolve_device(device='auto'):
    """``'auto'`` -> cuda if available, else mps, else cpu; an explicit device must exist."""
    if device in (None, 'auto'):
        if torch.cuda.is_available():
            return torch.device('cuda')
        if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
            return torch.device('mps')
        return torch.device('cpu')
    dev = torch.device(device)
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}': CUDA is not available on this machine; use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


# --------------------------------------------------------------------------- scale checks
def _in_channels(net):
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            return m.in_channels
    return 3


def measure_scale(net, device=None):
    """The factor ``net`` really upsamples by, found by running it on a tiny input.

    ``device='meta'`` runs a network built on the meta device (no memory, no compute) and
    returns None if the architecture cannot run there.
    """
    net = getattr(net, 'module', net)
    size = max(input_multiple(net), 8) * 2
    if device is None:
        param = next(iter(net.parameters()), None)
        device = param.device if param is not None else torch.device('cpu')
    x = torch.zeros(1, _in_channels(net), size, size, device=device)
    try:
        with torch.inference_mode():
            out = net(x)
    except Exception:
        if str(device) == 'meta':  # some ops have no meta kernel; the real network is measured later
            return None
        raise
    scale = out.shape[-1] / size
    return int(scale) if float(scale).is_integer() else scale


def _scale_key(net_opt):
    from basicsr.utils.registry import ARCH_REGISTRY
    params = inspect.signature(ARCH_REGISTRY.get(net_opt['type']).__init__).parameters
    for key in SCALE_KEYS:
        if key in params:
            return key, net_opt.get(key, params[key].default)
    return None, None


def _fits(own, state):
    """Do the keys and shapes of ``state`` match ``own`` (a state dict of the same arch)?"""
    own = {k: v for k, v in own.items() if not k.startswith('regularizers.')}
    if set(own) != set(state):
        return False
    derived = ('attn_mask', 'relative_position_index')  # sized by img_size, not learned
    return all(own[k].shape == state[k].shape for k in own if not k.endswith(derived))


def checkpoint_scale(net_opt, state):
    """The scale at which ``net_opt``'s architecture has exactly the keys and shapes of ``state``.

    Builds the architecture on the meta device (no memory) at each candidate scale and
    compares with the checkpoint: upsamplers differ between scales (MSRResNet: one or two
    ``upconv``; RRDBNet ×2: a 12-channel ``conv_first``), so at most one usually fits.
    Returns None if none or several fit.
    """
    from .options import build_meta_network
    key, _ = _scale_key(net_opt)
    if key is None:
        return None
    fits = set()
    for s in CANDIDATE_SCALES:
        try:
            meta = build_meta_network({**net_opt, key: s})
        except Exception:  # an arch that does not support this scale
            continue
        if _fits(meta.state_dict(), state):
            # what the network really does: basicsr's RRDBNet accepts scale=8 but upsamples ×4
            fits.add(measure_scale(meta, 'meta') or s)
    return fits.pop() if len(fits) == 1 else None


# --------------------------------------------------------------------------- loading
def load_state_dict(path, param_key='auto'):
    """Weights from a checkpoint file: ``(state_dict, key)``.

    ``param_key``: ``'params'`` / ``'params_ema'`` (basicsr checkpoints), or ``'auto'`` =
    ``params_ema`` if present, else ``params``, else the file itself when it is a bare
    state dict (key ``None``).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        ckpt = load_checkpoint(path)
    except Exception as err:  # pickle errors are long; the first line says what went wrong
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load checkpoint '{path}': {first}") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint '{path}' holds a {type(ckpt).__name__}, not a state dict")
    if param_key == 'auto':
        key = next((k for k in ('params_ema', 'params') if k in ckpt), None)
    else:
        key = param_key
    if key is not None and key in ckpt:
        return ckpt[key], key
    if param_key == 'auto' and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt, None
    from ..models.sr_model import CheckpointMismatchError
    raise CheckpointMismatchError(f"checkpoint '{path}' has no '{key}' entry (it has: {', '.join(map(str, ckpt))})")


def read_arch_options(arch, overrides=None):
    """Network options ``{type, **kwargs}`` from a registered arch name or an options YAML.

    The YAML may be a training/test options file (its ``network_g`` section is used) or a
    bare ``{type: ..., ...}`` mapping. ``overrides`` (a dict) updates the result.
    """
    from basicsr.utils.registry import ARCH_REGISTRY

    from .options import yaml_load
    if isinstance(arch, dict):
        net_opt = deepcopy(arch)
    elif str(arch).lower().endswith(('.yml', '.yaml')):
        if not os.path.isfile(arch):
            raise FileNotFoundError(f"architecture options file '{arch}' does not exist")
        raw = yaml_load(arch) or {}
        net_opt = raw.get('network_g', raw) if isinstance(raw, dict) else None
        if not isinstance(net_opt, dict) or 'type' not in net_opt:
            raise ValueError(f"'{arch}' has neither a network_g section nor a top-level 'type' key")
        net_opt = deepcopy(net_opt)
    else:
        net_opt = {'type': str(arch)}
    net_opt.update(overrides or {})
    if net_opt['type'] not in ARCH_REGISTRY:
        import difflib
        close = difflib.get_close_matches(str(net_opt['type']), list(ARCH_REGISTRY.keys()), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ''
        raise ValueError(f"unknown architecture '{net_opt['type']}'{hint}")
    return net_opt


def set_net_scale(net_opt, scale):
    """``net_opt`` with its scale argument (``upscale`` or ``scale``) set to ``scale``."""
    key, _ = _scale_key(net_opt)
    if key is None:
        return net_opt
    return {**net_opt, key: int(scale)}


def load_network(net_opt, ckpt_path, param_key='auto', scale=None, device='cpu', strict=True):
    """Build ``net_opt``, load the checkpoint, move to ``device``, eval mode; returns ``(net, scale)``.

    Args:
        scale: the expected factor; None takes whatever the network does.

    Raises:
        ScaleMismatchError: the checkpoint (judged by its upsampler weights) or the built
            network (judged by running it) is of another scale.
        CheckpointMismatchError: the checkpoint is of another architecture/width
            (short summary of missing/unexpected keys).
    """
    from ..archs import build_network
    from ..models.sr_model import CheckpointMismatchError, load_weights
    state, key = load_state_dict(ckpt_path, param_key)
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    net = build_network(net_opt)
    source = f"{ckpt_path} [{key}]" if key else str(ckpt_path)
    try:
        load_weights(net, state, strict, source=source)
    except CheckpointMismatchError as err:
        found = checkpoint_scale(net_opt, state)
        skey, configured = _scale_key(net_opt)
        if found is not None and found != configured:
            raise ScaleMismatchError(
                f"checkpoint '{ckpt_path}' is a ×{found} {net_opt['type']}, but the network is built for "
                f'×{configured} ({skey}: {configured}); use scale {found} or a ×{configured} checkpoint') from err
        raise
    net.eval().to(device)
    measured = measure_scale(net, device)
    if scale is not None and measured != scale:
        raise ScaleMismatchError(f"{net_opt['type']} from '{ckpt_path}' upsamples ×{measured:g}, not ×{scale}; "
                                 f'set the scale to {measured:g}')
    return net, measured


# --------------------------------------------------------------------------- one image array
def _to_unit(img):
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255., 255.
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535., 65535.
    return np.clip(img.astype(np.float32), 0, 1), None


def _from_unit(x, peak, dtype):
    if peak is None:
        return np.clip(x, 0, 1).astype(dtype)
    return np.clip(np.round(x * peak), 0, peak).astype(dtype)


def upscale_array(net, img, scale, tile=0, tile_pad=16, device='cpu', amp=False, name='image'):
    """Super-resolve one image array as OpenCV reads it (``IMREAD_UNCHANGED``: BGR/BGRA/gray, any depth).

    The output has the input's layout and dtype: H x W gray -> gray (the network sees it
    repeated into 3 channels and its output is converted back with OpenCV's luma weights);
    BGRA / gray+alpha -> the colour through the network, the alpha plane upscaled with
    bicubic interpolation and re-attached; uint16 -> uint16 (the network sees [0, 1] floats
    at full precision); uint8 -> uint8.
    """
    dtype = img.dtype
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    alpha = None
    if img.ndim == 3 and img.shape[2] in (2, 4):
        img, alpha = img[:, :, :-1], img[:, :, -1]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    gray = img.ndim == 2
    x, peak = _to_unit(img)
    in_ch = _in_channels(getattr(net, 'module', net))
    if in_ch == 1:
        planes = x[None] if gray else cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)[None]
    else:
        rgb = np.repeat(x[:, :, None], 3, axis=2) if gray else x[:, :, ::-1]
        planes = rgb.transpose(2, 0, 1)
    check_input_size(net, *planes.shape[1:], name=name)
    lq = torch.from_numpy(np.ascontiguousarray(planes))
    (_, out), = forward_batches(net, [lq], scale, 1, tile, tile_pad, device, amp)
    out = out.clamp_(0, 1).numpy().transpose(1, 2, 0)
    if out.shape[2] == 1:
        out = out[:, :, 0] if gray else np.repeat(out, 3, axis=2)
    else:
        out = np.ascontiguousarray(out[:, :, ::-1])  # back to BGR
        if gray:
            out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    out = _from_unit(out, peak, dtype)
    if alpha is not None:
        a, a_peak = _to_unit(alpha)
        a = cv2.resize(a, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
        a = _from_unit(a, a_peak, dtype)
        out = np.concatenate([out if out.ndim == 3 else out[:, :, None], a[:, :, None]], axis=2)
    return out
