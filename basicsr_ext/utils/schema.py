"""Declarative option schemas: typed fields, defaults, unknown-key errors with suggestions.

A schema is a dict ``{key: Field | Section}``. Components registered by name (datasets,
regularizers, degradations) declare theirs as a class attribute ``OPTIONS``; the option
loader looks it up from the ``type`` key. Every error is an :class:`OptionError` whose
message starts with the dotted location of the offending key, e.g.
``train.ema_decy: unknown key; did you mean 'ema_decay'?``.
"""
import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

from .misc import did_you_mean

REQUIRED = object()


class OptionError(ValueError):
    """An invalid option; the message names the key, where it is, and what would be valid."""


def _type_name(t):
    if isinstance(t, tuple):
        return ' or '.join(_type_name(x) for x in t)
    return {int: 'int', float: 'float', bool: 'bool', str: 'str', list: 'list', dict: 'dict', type(None): 'null'}.get(
        t, getattr(t, '__name__', str(t)))


def join(where, key):
    return f'{where}.{key}' if where else str(key)


@dataclass
class Field:
    """One option.

    ``type`` is a Python type or tuple of types; ``float`` also accepts ints and numeric
    strings such as ``'2e-4'`` (PyYAML 1.1 reads those as strings). ``kind`` adds a
    check: 'dir' / 'file' / 'path' must exist on disk. ``item`` validates list items.
    """
    type: Any = object
    default: Any = REQUIRED
    doc: str = ''
    choices: Optional[Sequence] = None
    kind: Optional[str] = None
    item: Any = None
    min: Optional[float] = None
    max: Optional[float] = None
    check: Optional[Callable[[Any, str], None]] = None

    @property
    def required(self):
        return self.default is REQUIRED

    def validate(self, value, where):
        if value is None and self.default is None:
            return None
        value = coerce(value, self.type, where)
        if self.choices is not None and value not in self.choices:
            hint = did_you_mean(value, self.choices)
            raise OptionError(f'{where}: {value!r} is not one of {list(self.choices)}{hint}')
        if self.min is not None and value < self.min:
            raise OptionError(f'{where}: {value!r} is below the minimum {self.min}')
        if self.max is not None and value > self.max:
            raise OptionError(f'{where}: {value!r} is above the maximum {self.max}')
        if self.item is not None and isinstance(value, (list, tuple)):
            value = [
                self.item.validate(v, f'{where}[{i}]') if isinstance(self.item, Field) else coerce(
                    v, self.item, f'{where}[{i}]') for i, v in enumerate(value)
            ]
        if self.kind in ('dir', 'file', 'path') and value is not None:
            check_path(value, where, self.kind)
        if self.check is not None:
            self.check(value, where)
        return value


@dataclass
class Section:
    """A nested dict of fields. ``open=True`` accepts unknown keys unchanged (free-form kwargs)."""
    fields: Dict[str, Any] = field(default_factory=dict)
    required: bool = False
    doc: str = ''
    open: bool = False

    def validate(self, value, where):
        return validate(value, self.fields, where, allow_unknown=self.open)


def check_path(value, where, kind='path'):
    exists = {'dir': os.path.isdir, 'file': os.path.isfile, 'path': os.path.exists}[kind]
    paths = value if isinstance(value, (list, tuple)) else [value]
    for p in paths:
        if not exists(os.path.expanduser(str(p))):
            what = {'dir': 'folder', 'file': 'file', 'path': 'path'}[kind]
            raise OptionError(f"{where}: {what} '{p}' does not exist")


def coerce(value, typ, where):
    """Check ``value`` against ``typ``; convert numeric strings for float/int fields."""
    if typ is object or typ is Any:
        return value
    types = typ if isinstance(typ, tuple) else (typ, )
    if isinstance(value, bool):  # bool is an int subclass; never let True pass as a number
        if bool in types:
            return value
        raise OptionError(f'{where}: expected {_type_name(typ)}, got bool {value!r}')
    if isinstance(value, types):
        return value
    if float in types and isinstance(value, int):
        return float(value)
    if isinstance(value, str) and float in types:
        try:
            return float(value)
        except ValueError:
            pass
    if list in types and isinstance(value, tuple):
        return list(value)
    if tuple in types and isinstance(value, list):
        return tuple(value)
    raise OptionError(f'{where}: expected {_type_name(typ)}, got {type(value).__name__} {value!r}')


def unknown_key_error(key, valid, where):
    hint = did_you_mean(key, valid) or f"; valid keys: {', '.join(sorted(valid))}"
    return OptionError(f'{join(where, key)}: unknown key{hint}')


def validate(value, schema, where='', allow_unknown=False):
    """Validate a dict against a schema and return a new dict with defaults filled in."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise OptionError(f'{where or "options"}: expected a mapping, got {type(value).__name__} {value!r}')
    out = {}
    for key, val in value.items():
        spec = schema.get(key)
        if spec is None:
            if allow_unknown:
                out[key] = val
                continue
            raise unknown_key_error(key, schema.keys(), where)
        out[key] = spec.validate(val, join(where, key))
    for key, spec in schema.items():
        if key in out:
            continue
        if isinstance(spec, Section):
            if spec.required:
                raise OptionError(f'{join(where, key)}: missing required section')
            try:  # an absent optional section gets its defaults, if it has no required keys
                out[key] = spec.validate({}, join(where, key))
            except OptionError:
                pass
            continue
        if spec.required:
            doc = f' ({spec.doc})' if spec.doc else ''
            raise OptionError(f'{join(where, key)}: missing required key{doc}')
        out[key] = copy.deepcopy(spec.default)
    return out


def describe(schema, prefix=''):
    """Rows (key, type, default, doc) for documentation, recursing into sections."""
    rows = []
    for key, spec in schema.items():
        name = join(prefix, key)
        if isinstance(spec, Section):
            rows.append((name, 'section', 'required' if spec.required else 'optional', spec.doc))
            rows.extend(describe(spec.fields, name))
        else:
            default = 'required' if spec.required else repr(spec.default)
            typ = _type_name(spec.type)
            if spec.choices is not None:
                typ += ' in ' + '/'.join(map(str, spec.choices))
            rows.append((name, typ, default, spec.doc))
    return rows
