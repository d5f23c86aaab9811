"""Frozen, typed option objects generated from declarative schemas: attributes with the defaults filled in.

A component states each key's default once, in its ``OPTIONS`` schema (:mod:`.schema`); this module turns a
validated option mapping into an object of that schema, so the code reads ``opt.gt_size`` rather than
``opt.get('gt_size', 128)``:

* a closed Section becomes a frozen dataclass instance, one attribute per key (absent keys get their default);
* a list becomes a tuple, a free-form mapping (an open section such as ``io_backend``) a read-only
  :class:`FrozenMapping` (``as_dict()`` gives a plain dict back);
* a ``{type: <name>, ...}`` entry of a registry is typed by the named class's ``OPTIONS`` (:func:`typed_entry`).

Assigning an attribute raises :class:`dataclasses.FrozenInstanceError`. :func:`typed_options` validates and
types in one call (for a component handed a raw or partial dict); :func:`typed` takes options already validated.
A class generated with ``module=__name__`` and bound to that module's attribute of the same name pickles by
reference, so its objects cross into spawned loader workers.
"""
import copy
import dataclasses
import keyword
import sys
from collections.abc import Mapping
from typing import Any, Optional, Tuple, Union

from .schema import REQUIRED, Field, OptionError, Section, join, unknown_key_error, validate

__all__ = ['FrozenMapping', 'FrozenOptions', 'as_plain', 'freeze', 'options_class', 'typed', 'typed_entry',
           'typed_options']


class FrozenMapping(Mapping):
    """A read-only, hashable mapping (values frozen too); ``as_dict()`` gives a plain nested dict."""
    __slots__ = ('_data', )

    def __init__(self, data=()):
        object.__setattr__(self, '_data', dict(data))

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __setattr__(self, name, value):
        raise AttributeError(f'{type(self).__name__} is read-only')

    def __hash__(self):
        return hash(frozenset(self._data.items()))

    def __repr__(self):
        return f'{type(self).__name__}({self._data!r})'

    def __reduce__(self):  # copy, deepcopy and pickle
        return type(self), (self._data, )

    def as_dict(self):
        return {k: as_plain(v) for k, v in self._data.items()}


class FrozenOptions:
    """Base of the generated option classes (frozen dataclasses)."""
    __slots__ = ()

    def as_dict(self):
        """The plain nested dict of these options (tuples as lists)."""
        return {f.name: as_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def freeze(value):
    """``value`` with every dict made a FrozenMapping and every list a tuple (typed objects stay as they are)."""
    if isinstance(value, (FrozenOptions, FrozenMapping)):
        return value
    if isinstance(value, Mapping):
        return FrozenMapping({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def as_plain(value):
    """The inverse of :func:`freeze` (and of :func:`typed`): dicts and lists."""
    if isinstance(value, (FrozenOptions, FrozenMapping)):
        return value.as_dict()
    if isinstance(value, tuple):
        return [as_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- generated classes
_SIMPLE = {int: int, float: float, bool: bool, str: str, list: Tuple[Any, ...], tuple: Tuple[Any, ...],
           dict: Mapping[str, Any]}
_CLASSES = {}  # (id(fields), name) -> (fields, class); the fields are kept so that their id stays theirs


def _class_name(key):
    return ''.join(part[:1].upper() + part[1:] for part in str(key).split('_')) + 'Options'


def _annotation(key, spec, module):
    if isinstance(spec, Section):
        return Mapping[str, Any] if spec.open else options_class(spec.fields, _class_name(key), module)
    types = spec.type if isinstance(spec.type, tuple) else (spec.type, )
    if any(t not in _SIMPLE for t in types):
        return Any
    ann = _SIMPLE[types[0]] if len(types) == 1 else Union[tuple(_SIMPLE[t] for t in types)]
    return Optional[ann] if spec.default is None else ann


def options_class(fields, name, module=__name__):
    """The frozen dataclass of a ``{key: Field | Section}`` schema (one class per schema and name).

    ``module``: the module the class (and the classes of its nested sections) claims. Other than this one, the
    classes are bound there by name, so that pickle finds them in any process that imports that module.
    """
    hit = _CLASSES.get((id(fields), name))
    if hit is not None:
        return hit[1]
    for key in fields:
        if not str(key).isidentifier() or keyword.iskeyword(key):
            raise TypeError(f'{name}: option key {key!r} cannot be an attribute name')
    cls = dataclasses.make_dataclass(name, [(key, _annotation(key, spec, module)) for key, spec in fields.items()],
                                     bases=(FrozenOptions, ), frozen=True,
                                     namespace={'__module__': module, '__doc__': f'{name}: typed, frozen options.'})
    _CLASSES[(id(fields), name)] = (fields, cls)
    if module != __name__ and not hasattr(sys.modules[module], name):
        setattr(sys.modules[module], name, cls)
    return cls


def typed(value, schema, name='Options', where='', converters=None):
    """``value`` (a validated option mapping) as a frozen object of ``schema``.

    ``schema``: a ``{key: Field | Section}`` dict or a Section (an open one gives a FrozenMapping).
    ``converters``: ``{dotted key: fn(value, where)}`` for keys whose values need more than their Field,
    such as registry entries (see :func:`typed_entry`).
    """
    converters = converters or {}
    if isinstance(schema, Section):
        if schema.open:
            return freeze(_with_defaults(value, schema.fields, where, allow_unknown=True))
        schema = schema.fields
    value = _with_defaults(value, schema, where)
    out = {}
    for key, spec in schema.items():
        w = join(where, key)
        v = value.get(key)
        if w in converters:
            out[key] = converters[w](v, w)
        elif isinstance(spec, Section):
            out[key] = None if v is None else typed(v, spec, _class_name(key), w, converters)
        else:
            out[key] = freeze(v)
    return options_class(schema, name)(**out)


def _with_defaults(value, fields, where, allow_unknown=False):
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise OptionError(f'{where or "options"}: expected a mapping, got {type(value).__name__} {value!r}')
    if not allow_unknown:
        for key in value:
            if key not in fields:
                raise unknown_key_error(key, fields.keys(), where)
    out = dict(value)
    for key, spec in fields.items():
        if key in out:
            continue
        if isinstance(spec, Section):
            if spec.required:
                raise OptionError(f'{join(where, key)}: missing required section')
            out[key] = _absent_section(spec)
        elif spec.default is REQUIRED:
            raise OptionError(f'{join(where, key)}: missing required key')
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def _absent_section(spec):
    """An optional section left out: its defaults, or None when it has required keys (as validation leaves it)."""
    required = any(s.required for s in spec.fields.values())
    return None if required else {}


_ENTRY_FIELDS = {}  # registered class -> {'type': Field, **OPTIONS}


def typed_entry(entry, registry, where=''):
    """A ``{type: <name>, ...}`` entry typed by the ``OPTIONS`` of ``registry[type]`` (a FrozenMapping without)."""
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or 'type' not in entry:
        raise OptionError(f'{where}.type: missing required key')
    if entry['type'] not in registry:
        raise OptionError(f"{where}.type: '{entry['type']}' is not registered")
    cls = registry.get(entry['type'])
    options = getattr(cls, 'OPTIONS', None)
    if options is None:
        return freeze(entry)
    if cls not in _ENTRY_FIELDS:
        _ENTRY_FIELDS[cls] = {'type': Field(str, doc='registered name'), **options}
    return typed(entry, _ENTRY_FIELDS[cls], _class_name(entry['type']), where)


def typed_options(value, schema, name, where=''):
    """``value`` (a mapping or typed options, possibly partial) validated against ``schema`` and typed.

    Defaults are filled and bad keys raise :class:`OptionError` exactly as in :func:`~.schema.validate`, so a
    component built directly from a dict checks it as an option file would.
    """
    plain = as_plain(value) if value is not None else {}
    if isinstance(plain, Mapping):
        plain = dict(plain)
    return typed(validate(plain, schema, where), schema, name, where)
