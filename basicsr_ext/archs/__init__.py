"""Architectures. Importing this package registers every ``*_arch.py`` module's archs and site specs."""
import importlib
import os
from copy import deepcopy
from os import path as osp

from basicsr.utils.registry import ARCH_REGISTRY

from ..utils.misc import did_you_mean
from .sites import ArchSites, Site, get_sites, has_sites
from .spec import ArchSpec, arch_spec, register_arch_spec, spec_of_type

_folder = osp.dirname(osp.abspath(__file__))
_modules = [
    importlib.import_module(f'basicsr_ext.archs.{osp.splitext(f)[0]}') for f in sorted(os.listdir(_folder))
    if f.endswith('_arch.py')
]


def build_network(opt):
    """Build a network from its option dict ``{type: <registered name>, **kwargs}``."""
    opt = deepcopy(opt)
    arch_type = opt.pop('type')
    if arch_type not in ARCH_REGISTRY:
        hint = did_you_mean(arch_type, list(ARCH_REGISTRY.keys()))
        raise KeyError(f"network_g.type: unknown architecture '{arch_type}'{hint}")
    return ARCH_REGISTRY.get(arch_type)(**opt)


__all__ = ['ArchSites', 'ArchSpec', 'Site', 'arch_spec', 'build_network', 'get_sites', 'has_sites', 'register_arch_spec',
           'spec_of_type']
