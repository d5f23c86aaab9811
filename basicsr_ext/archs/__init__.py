"""Architectures. Importing this package registers every ``*_arch.py`` module's archs and site specs."""
import importlib
from copy import deepcopy
from os import path as osp

from basicsr.utils.registry import ARCH_REGISTRY

from .sites import ArchSites, Site, get_sites, has_sites, register_sites

_folder = osp.dirname(osp.abspath(__file__))
_modules = [
    importlib.import_module(f'basicsr_ext.archs.{osp.splitext(f)[0]}') for f in sorted(__import__('os').listdir(_folder))
    if f.endswith('_arch.py')
]


def build_network(opt):
    """Build a network from its option dict ``{type: <registered name>, **kwargs}``."""
    opt = deepcopy(opt)
    arch_type = opt.pop('type')
    if arch_type not in ARCH_REGISTRY:
        import difflib
        close = difflib.get_close_matches(arch_type, list(ARCH_REGISTRY.keys()), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ''
        raise KeyError(f"network_g.type: unknown architecture '{arch_type}'{hint}")
    return ARCH_REGISTRY.get(arch_type)(**opt)


__all__ = ['ArchSites', 'Site', 'build_network', 'get_sites', 'has_sites', 'register_sites']
