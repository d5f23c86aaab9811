"""Loading weights into a network, with short messages when they do not fit."""
from ..utils.misc import unwrap
from .spec import arch_spec


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not fit the network."""


def _summarise(keys, limit=5):
    keys = sorted(keys)
    more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def strip_module_prefix(state):
    return {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}


def load_weights(net, state, strict=True, source='checkpoint'):
    """Load ``state`` into ``net``; a mismatch raises a short summary of missing/unexpected keys.

    Buffers the architecture's spec declares derived (computed from the options, e.g. SwinIR's
    attention masks sized by ``img_size``) are replaced by the network's own when their shape differs.
    """
    net = unwrap(net)
    spec = arch_spec(net)
    own = net.state_dict()
    state = strip_module_prefix(state)
    for k in list(state):
        if spec.is_derived(k) and k in own and own[k].shape != state[k].shape:
            state[k] = own[k]
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    wrong_shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if strict and (missing or unexpected or wrong_shape):
        parts = [f'{source} does not fit {type(net).__name__}:']
        if missing:
            parts.append(f'{len(missing)} missing keys ({_summarise(missing)})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys ({_summarise(unexpected)})')
        if wrong_shape:
            shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in sorted(wrong_shape)[:3]]
            parts.append(f'{len(wrong_shape)} shape mismatches ({"; ".join(shapes)})')
        parts.append('— is it a checkpoint of another architecture, width or scale?')
        raise CheckpointMismatchError(' '.join(parts))
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(state, strict=False)


def state_fits(own, state, spec):
    """Do the keys and shapes of ``state`` match ``own`` (derived buffers may differ in shape)?"""
    if set(own) != set(state):
        return False
    return all(own[k].shape == state[k].shape for k in own if not spec.is_derived(k))


def pick_param_key(ckpt, wanted='auto', fallback=None):
    """Which weights of a BasicSR checkpoint to load: ``wanted`` if present, else ``fallback``; None if neither.

    ``wanted='auto'`` takes ``params_ema`` when the run kept an EMA, else ``params``.
    """
    if wanted == 'auto':
        return next((k for k in ('params_ema', 'params') if k in ckpt), None)
    if wanted in ckpt:
        return wanted
    return fallback if fallback is not None and fallback in ckpt else None
