"""Generalization regularizers, registered by name and attached through architecture sites."""
import importlib
import os
from os import path as osp

from .base import REGULARIZER_REGISTRY, Regularizer, StepContext, combination_error

_folder = osp.dirname(osp.abspath(__file__))
_modules = [
    importlib.import_module(f'basicsr_ext.regularizers.{osp.splitext(f)[0]}') for f in sorted(os.listdir(_folder))
    if f.endswith('.py') and f not in ('__init__.py', 'base.py')
]


def build_regularizers(reg_opts, sites, total_iter, network_opt=None):
    """Instantiate ``train.regularizers`` entries (already validated) in order."""
    regs = []
    for opt in reg_opts or []:
        opt = dict(opt)
        cls = REGULARIZER_REGISTRY.get(opt.pop('type'))
        regs.append(cls(opt, sites, total_iter, network_opt=network_opt))
    return regs


__all__ = ['REGULARIZER_REGISTRY', 'Regularizer', 'StepContext', 'build_regularizers', 'combination_error']
