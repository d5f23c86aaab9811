"""Whole validated option files as frozen, typed objects (:func:`typed_training_options`).

The generic machinery (frozen dataclasses generated from the schemas, :class:`FrozenMapping`, :func:`typed`)
lives in :mod:`..utils.typed`, below the components, so datasets type their own options too; this module adds
what only a whole file has: the top-level schema with the keys the loader and train.py add, and the
registries that type ``datasets``, ``degradation``, ``train.regularizers`` and ``val.metrics``. For example::

    opt = typed_training_options(load_options('options/demo/SRResNet_x4_demo.yml'))
    opt.train.grad_clip, opt.val.tile_pad, opt.train.regularizers[0].p, opt.datasets['train'].gt_size

Pass options that are already validated: nothing is checked here beyond the keys (an unknown key of a closed
section or a missing required key is an :class:`~..utils.schema.OptionError`, as in validation).
"""
from basicsr.utils.registry import DATASET_REGISTRY

from ..data import DEGRADATION_TYPES
from ..regularizers import REGULARIZER_REGISTRY
from ..utils.schema import Field, Section, join
from ..utils.typed import (FrozenMapping, FrozenOptions, as_plain, freeze, options_class, typed, typed_entry,
                           typed_options)
from .training import METRIC_SCHEMA, TOP_SCHEMA

__all__ = ['FrozenMapping', 'FrozenOptions', 'TrainingOptions', 'as_plain', 'freeze', 'options_class', 'typed',
           'typed_entry', 'typed_options', 'typed_training_options']


# --------------------------------------------------------------------------- whole training files
# keys that the loader, set_paths and train.py add to a validated option dict
_RUNTIME = {
    'is_train': Field(bool, True, doc='set by validate_options'),
    'opt_path': Field(str, None, doc='absolute path of the option file (load_options)'),
    'rank': Field(int, 0, doc='process rank (train.py)'),
    'world_size': Field(int, 1, doc='number of processes (train.py)'),
    'local_rank': Field(int, 0, doc='rank on this machine (train.py)'),
    'dist': Field(bool, False, doc='launched as a distributed run (train.py)'),
}
_DERIVED_PATHS = {key: Field(str, None, doc='set by set_paths')
                  for key in ('models', 'training_states', 'log', 'visualization', 'tb_logger')}


def _top_fields(is_train):
    fields = dict(TOP_SCHEMA, **_RUNTIME)
    fields['path'] = Section({**TOP_SCHEMA['path'].fields, **_DERIVED_PATHS}, doc=TOP_SCHEMA['path'].doc)
    if not is_train:  # as validate_options: a test file may carry an unused training section along
        fields['train'] = Section(TOP_SCHEMA['train'].fields, open=True)
        fields['datasets'] = Field(dict, {})
    return fields


_TRAINING_FIELDS = _top_fields(True)
_TEST_FIELDS = _top_fields(False)


def _datasets(value, where):
    return FrozenMapping({name: typed_entry(d, DATASET_REGISTRY, join(where, name)) for name, d in value.items()})


def _metrics(value, where):
    return FrozenMapping({name: typed(m, METRIC_SCHEMA, 'MetricOptions', join(where, name))
                          for name, m in value.items()})


def _regularizers(value, where):
    return tuple(typed_entry(r, REGULARIZER_REGISTRY, f'{where}[{i}]') for i, r in enumerate(value))


def _degradation(value, where):
    return typed_entry(value, DEGRADATION_TYPES, where)


_CONVERTERS = {
    'datasets': _datasets,
    'degradation': _degradation,
    'train.regularizers': _regularizers,
    'val.metrics': _metrics,
}

TrainingOptions = options_class(_TRAINING_FIELDS, 'TrainingOptions')


def typed_training_options(opt):
    """The frozen :class:`TrainingOptions` of a validated option dict (``validate_options``/``load_options``).

    ``opt['is_train']`` false (a test-mode dict): ``train`` is a FrozenMapping of whatever the file carried.
    """
    fields = _TRAINING_FIELDS if opt['is_train'] else _TEST_FIELDS
    name = 'TrainingOptions' if opt['is_train'] else 'TestModeOptions'
    return typed(opt, fields, name, converters=_CONVERTERS)
