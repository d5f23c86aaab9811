"""Architecture specs: what the rest of the framework needs to know about each architecture.

Every supported architecture registers one :class:`ArchSpec` beside its code (``*_arch.py``).
Callers read the spec instead of testing class names or attributes:

* ``sites(net)``: the named regularizer attachment sites (:mod:`.sites`);
* ``input_multiple(net)``: input H and W must be multiples of this (window attention, unshuffle),
  and ``min_input(net)`` is the smallest input side that is not mostly padding;
* ``scale_arg``: the constructor argument that sets the upsampling factor;
* ``derived_buffers``: state_dict key suffixes computed from the options (e.g. SwinIR's
  attention masks, sized by ``img_size``), not learned, so a checkpoint's may be replaced;
* ``in_channels(net)``: channels of the input image.

A spec is found through the class's MRO, so subclasses (``RRDBNetAnyScale``) inherit their
parent's. Architectures without a registered spec (any other basicsr arch used for inference)
get :func:`generic_spec`, which reads what it can from the constructor signature and modules.
"""
import inspect
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from ..utils.misc import unwrap

SCALE_ARGS = ('upscale', 'scale')


def window_multiple(net: nn.Module) -> int:
    """The lcm of every integer ``window_size`` among the modules (1 if none).

    Windowed blocks keep their size only in the blocks, and a block whose ``img_size`` is not
    larger than its window shrinks its window to it, so the blocks are the source of truth.
    """
    multiple = 1
    for m in unwrap(net).modules():
        ws = getattr(m, 'window_size', None)
        if isinstance(ws, int) and ws > 0:
            multiple = math.lcm(multiple, ws)
    return multiple


def first_conv_channels(net: nn.Module) -> int:
    for m in unwrap(net).modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


@dataclass(frozen=True)
class ArchSpec:
    name: str
    sites: Optional[Callable[[nn.Module], object]] = None
    scale_arg: Optional[str] = 'upscale'
    input_multiple: Callable[[nn.Module], int] = window_multiple
    derived_buffers: Tuple[str, ...] = ()
    in_channels: Callable[[nn.Module], int] = first_conv_channels

    def min_input(self, net: nn.Module) -> int:
        """The smallest input side: one window / unshuffle block (padding would otherwise be most of it)."""
        return self.input_multiple(unwrap(net))

    def is_derived(self, key: str) -> bool:
        return bool(self.derived_buffers) and key.endswith(self.derived_buffers)


_SPECS: Dict[type, ArchSpec] = {}


def register_arch_spec(*arch_classes, **fields):
    """Register the spec of ``arch_classes``; usable as a decorator of the sites function.

    ``@register_arch_spec(MSRResNet, scale_arg='upscale')`` over ``def sites(net): ...``
    registers a spec whose ``sites`` is the decorated function.
    """

    def deco(sites_fn):
        spec = ArchSpec(name=arch_classes[0].__name__, sites=sites_fn, **fields)
        for cls in arch_classes:
            _SPECS[cls] = spec
        return sites_fn

    return deco


def registered_spec(cls: type) -> Optional[ArchSpec]:
    for base in cls.__mro__:
        if base in _SPECS:
            return _SPECS[base]
    return None


def generic_spec(cls: type) -> ArchSpec:
    """What can be read from an unregistered architecture: its scale argument and window sizes."""
    params = inspect.signature(cls.__init__).parameters
    scale_arg = next((k for k in SCALE_ARGS if k in params), None)
    return ArchSpec(name=cls.__name__, scale_arg=scale_arg)


def spec_of_class(cls: type) -> ArchSpec:
    return registered_spec(cls) or generic_spec(cls)


def arch_spec(net: nn.Module) -> ArchSpec:
    """The spec of a network instance (DataParallel/DDP unwrapped)."""
    return spec_of_class(type(unwrap(net)))


def spec_of_type(type_name: str) -> ArchSpec:
    """The spec of a registered architecture name (``network_g.type``)."""
    return spec_of_class(ARCH_REGISTRY.get(type_name))


def configured_scale(net_opt: dict):
    """``(scale argument name, its value in net_opt or the constructor default)``; (None, None) if it has none."""
    cls = ARCH_REGISTRY.get(net_opt['type'])
    key = spec_of_class(cls).scale_arg
    if key is None:
        return None, None
    default = inspect.signature(cls.__init__).parameters[key].default
    return key, net_opt.get(key, default)


def supported_archs():
    return sorted({spec.name for spec in _SPECS.values() if spec.sites is not None})
