"""Networks built on the meta device: shapes without memory or initialisation, for option checks.

Validators build the configured network this way to check its constructor arguments, its sites and
the scale it upsamples by, and :func:`.forward.checkpoint_scale` builds one per candidate scale to
find the scale a checkpoint was trained at.
"""
import torch

from . import build_network

__all__ = ['build_meta_network']


class _MetaFactories(torch.overrides.TorchFunctionMode):
    """Create tensors on the meta device, except ``arange``/``linspace``, whose values constructors read.

    basicsr's SwinIR calls ``.item()`` on a ``linspace``, which a plain ``torch.device('meta')`` refuses.
    """
    _KEEP = (torch.arange, torch.linspace)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES and func not in self._KEEP and kwargs.get('device') is None:
            kwargs['device'] = 'meta'
        return func(*args, **kwargs)


_FACTORIES = torch.utils._device._device_constructors()


def build_meta_network(net_opt):
    """Build the network with meta weights (no memory, no initialisation); on CPU if that fails."""
    try:
        with _MetaFactories():
            return build_network(net_opt)
    except (RuntimeError, NotImplementedError):
        return build_network(net_opt)
