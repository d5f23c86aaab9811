"""Networks for inference: built from options, loaded from a checkpoint, run on image lists and arrays.

* loading: the architecture from a registered name or an options file, weights from a checkpoint,
  with errors that say what does not fit (architecture, scale);
* running: batching same-size images, optional autocast on CUDA, tiling (:mod:`..archs.forward`);
* one image array in, one out, of the same kind (:mod:`..data.image_arrays`).

Used by validation, ``test.py`` (:mod:`basicsr_ext.evaluation`) and ``scripts/inference.py``.
"""
import argparse
import json
import os
from copy import deepcopy

import torch
from basicsr.utils.registry import ARCH_REGISTRY

from ..archs import build_network
from ..archs.forward import ScaleMismatchError, check_input_size, checkpoint_scale, forward_tiled, measure_scale
from ..archs.spec import arch_spec, configured_scale
from ..archs.weights import CheckpointMismatchError, load_weights, pick_param_key, strip_module_prefix
from ..config import yaml_load
from ..data.image_arrays import array_to_planes, planes_to_array
from ..utils.amp import autocast
from ..utils.checkpoint import load_checkpoint, load_safetensors
from ..utils.misc import did_you_mean, unwrap

__all__ = [
    'read_checkpoint', 'load_state_dict', 'read_arch_options', 'set_net_scale', 'load_network', 'add_network_arguments',
    'network_options', 'forward_batches', 'upscale_array'
]


# --------------------------------------------------------------------------- loading
def read_checkpoint(path):
    """A checkpoint file as a dict: a .pth as saved; a .safetensors with this project's metadata
    (``logger.save_safetensors``) as ``{<its param_key>: weights, 'meta': {'scale': int, 'network_g': dict}}``,
    one without as its bare weights."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        if path.lower().endswith('.safetensors'):
            tensors, metadata = load_safetensors(path)
            if 'param_key' not in metadata:
                return tensors
            meta = {'scale': int(metadata['scale']), 'network_g': json.loads(metadata.get('network_g', '{}'))}
            return {metadata['param_key']: tensors, 'meta': meta}
        ckpt = load_checkpoint(path)
    except Exception as err:  # pickle errors are long; the first line says what went wrong
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load checkpoint '{path}': {first}") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint '{path}' holds a {type(ckpt).__name__}, not a state dict")
    return ckpt


def load_state_dict(path, param_key='auto'):
    """Weights from a checkpoint file (.pth or .safetensors): ``(state_dict, key)``.

    ``param_key``: ``'params'`` / ``'params_ema'`` (basicsr checkpoints), or ``'auto'`` =
    ``params_ema`` if present, else ``params``, else the file itself when it is a bare
    state dict (key ``None``).
    """
    return _pick_weights(read_checkpoint(path), str(path), param_key)


def _pick_weights(ckpt, path, param_key):
    key = pick_param_key(ckpt, param_key)
    if key is not None:
        return ckpt[key], key
    if param_key == 'auto' and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt, None
    wanted = "'params_ema' or 'params'" if param_key == 'auto' else f"'{param_key}'"
    raise CheckpointMismatchError(f"checkpoint '{path}' has no {wanted} entry (it has: {', '.join(map(str, ckpt))})")


def read_arch_options(arch, overrides=None):
    """Network options ``{type, **kwargs}`` from a registered arch name or an options YAML.

    The YAML may be a training/test options file (its ``network_g`` section is used) or a
    bare ``{type: ..., ...}`` mapping. ``overrides`` (a dict) updates the result.
    """
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
        hint = did_you_mean(net_opt['type'], list(ARCH_REGISTRY.keys()))
        raise ValueError(f"unknown architecture '{net_opt['type']}'{hint}")
    return net_opt


def set_net_scale(net_opt, scale):
    """``net_opt`` with its scale argument (``upscale`` or ``scale``) set to ``scale``."""
    key, _ = configured_scale(net_opt)
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
    ckpt = read_checkpoint(ckpt_path)
    state, key = _pick_weights(ckpt, str(ckpt_path), param_key)
    state = strip_module_prefix(state)
    net = build_network(net_opt)
    source = f"{ckpt_path} [{key}]" if key else str(ckpt_path)
    try:
        load_weights(net, state, strict, source=source)
    except CheckpointMismatchError as err:
        found = checkpoint_scale(net_opt, state)
        skey, configured = configured_scale(net_opt)
        if found is not None and found != configured:
            raise ScaleMismatchError(
                f"checkpoint '{ckpt_path}' is a ×{found} {net_opt['type']}, but the network is built for "
                f'×{configured} ({skey}: {configured}); use scale {found} or a ×{configured} checkpoint') from err
        raise
    net.eval().to(device)
    measured = measure_scale(net, device)
    saved = (ckpt.get('meta') or {}).get('scale')
    if saved is not None and saved != measured:  # ×3 and ×4 RRDBNetAnyScale have the same parameters
        raise ScaleMismatchError(f"checkpoint '{ckpt_path}' was trained at ×{saved} (its metadata says so), but "
                                 f"{net_opt['type']} is built for ×{measured:g}; use scale {saved}")
    if scale is not None and measured != scale:
        raise ScaleMismatchError(f"{net_opt['type']} from '{ckpt_path}' upsamples ×{measured:g}, not ×{scale}; "
                                 f'set the scale to {measured:g}')
    return net, measured


# --------------------------------------------------------------------------- command lines
def add_network_arguments(parser, what='weights to load'):
    """The arguments of a script that loads one network: --model, --arch, --arch_opt, --scale, --param_key."""
    parser.add_argument('--model', required=True, help='checkpoint (.pth or .safetensors)')
    parser.add_argument('--arch', required=True,
                        help='registered architecture name (e.g. MSRResNet) or an options YAML with network_g')
    parser.add_argument('--arch_opt', type=_key_value, nargs='+', default=[], metavar='KEY=VALUE',
                        help='architecture arguments, e.g. num_feat=32 num_block=8')
    parser.add_argument('--scale', type=int, default=None,
                        help='expected scale; with an arch name it also sets the upscale argument (default 4 then)')
    parser.add_argument('--param_key', default='auto', choices=('auto', 'params', 'params_ema'),
                        help=f'{what} (auto: params_ema if present, else params)')


def network_options(args):
    """``network_g`` from :func:`add_network_arguments`' arguments: an arch name gets ``--scale`` (default 4)
    unless ``--arch_opt`` sets it; an options file decides its scale itself."""
    overrides = dict(args.arch_opt)
    net_opt = read_arch_options(args.arch, overrides)
    is_file = str(args.arch).lower().endswith(('.yml', '.yaml'))
    if not is_file and not any(k in overrides for k in ('upscale', 'scale')):
        net_opt = set_net_scale(net_opt, args.scale or 4)
    return net_opt


def _key_value(item):
    if '=' not in item:
        raise argparse.ArgumentTypeError(f"expected key=value, got '{item}'")
    key, value = item.split('=', 1)
    return key, yaml_load(value)


# --------------------------------------------------------------------------- running
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


def upscale_array(net, img, scale, tile=0, tile_pad=16, device='cpu', amp=False, name='image'):
    """Super-resolve one image array as OpenCV reads it (``IMREAD_UNCHANGED``: BGR/BGRA/gray, any depth).

    The output has the input's layout and dtype: H x W gray -> gray (the network sees it
    repeated into 3 channels and its output is converted back with OpenCV's luma weights);
    BGRA / gray+alpha -> the colour through the network, the alpha plane upscaled with
    bicubic interpolation and re-attached; uint16 -> uint16 (the network sees [0, 1] floats
    at full precision); uint8 -> uint8.
    """
    bare = unwrap(net)
    planes, layout = array_to_planes(img, arch_spec(bare).in_channels(bare))
    check_input_size(net, *planes.shape[1:], name=name)
    lq = torch.from_numpy(planes)
    (_, out), = forward_batches(net, [lq], scale, 1, tile, tile_pad, device, amp)
    return planes_to_array(out.clamp_(0, 1).numpy(), layout)
