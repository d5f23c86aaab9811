"""Sections that are keyword arguments of a named callable: ``{type: <name>, **kwargs}``.

The kwargs are checked against the callable's signature (or its ``OPTIONS`` schema when it declares
one): unknown argument -> error with suggestion, missing required argument -> error, types from the
defaults. Optimizers and learning-rate schedulers are looked up here by name.
"""
import inspect

import torch
from basicsr.models import lr_scheduler

from ..utils.misc import did_you_mean
from ..utils.schema import Field, OptionError, coerce, join, unknown_key_error, validate

__all__ = ['OPTIMIZERS', 'scheduler_classes', 'validate_kwargs', 'registered', 'typed_section', 'dict_registry']

OPTIMIZERS = {name: getattr(torch.optim, name) for name in ('Adam', 'AdamW', 'SGD', 'RMSprop', 'Adamax', 'NAdam', 'RAdam')}


def scheduler_classes():
    """The learning-rate schedulers ``train.scheduler.type`` may name."""
    return {
        'MultiStepLR': lr_scheduler.MultiStepRestartLR,
        'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
        'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR,
    }


def field_from_default(default):
    """The Field an argument's default implies: its type, and required when there is none."""
    if default is inspect.Parameter.empty:
        return Field(object)
    if default is None:
        return Field(object, default=None)
    if isinstance(default, bool):
        return Field(bool, default)
    if isinstance(default, float):
        return Field(float, default)
    if isinstance(default, int):
        return Field((int, float), default)
    if isinstance(default, (list, tuple)):
        return Field((list, tuple), default)
    return Field(object, default)


def validate_kwargs(opt, fn, where, skip=(), type_key='type'):
    """Validate ``opt`` as keyword arguments of ``fn`` (a class or function)."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    sig = inspect.signature(target)
    params, var_kw = {}, False
    for name, p in sig.parameters.items():
        if name in ('self', ) + tuple(skip):
            continue
        if p.kind == inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            params[name] = p
    out = {}
    for key, value in opt.items():
        if key == type_key:
            out[key] = value
            continue
        if key not in params:
            if var_kw:
                out[key] = value
                continue
            raise unknown_key_error(key, params.keys(), where)
        field = field_from_default(params[key].default)
        out[key] = value if value is None else coerce(value, field.type, join(where, key))
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in out:
            raise OptionError(f'{join(where, name)}: missing required key (argument of {fn.__name__})')
    return out


def registered(registry, name, where, kind):
    """``registry.get(name)``, or an OptionError naming the closest registered name."""
    if name not in registry:
        raise OptionError(f"{where}: unknown {kind} '{name}'{did_you_mean(name, list(registry.keys()))}")
    return registry.get(name)


class _DictRegistry(dict):
    """A plain ``{name: callable}`` dict with basicsr's ``Registry.get`` (KeyError when missing)."""

    def get(self, k):
        return self[k]


def dict_registry(d):
    return _DictRegistry(d)


def typed_section(value, where, registry, kind, skip=()):
    """A ``{type: Name, **kwargs}`` section whose kwargs are checked against the registered callable."""
    if not isinstance(value, dict):
        raise OptionError(f'{where}: expected a mapping with a type key, got {value!r}')
    if 'type' not in value:
        raise OptionError(f'{where}.type: missing required key')
    target = registered(registry, value['type'], f'{where}.type', kind)
    schema = getattr(target, 'OPTIONS', None)
    if schema is not None:
        rest = {k: v for k, v in value.items() if k != 'type'}
        return {'type': value['type'], **validate(rest, schema, where)}
    return validate_kwargs(value, target, where, skip=skip)
