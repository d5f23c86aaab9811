"""Option files: loading and overrides, validation of whole training files, typed frozen options, JSON Schemas.

Layer 4: imports utils, archs, data, losses, metrics and regularizers; models, evaluation and the entry
points import it.
"""
from ..archs.meta import build_meta_network
from ..utils.paths import PROJECT_ROOT
from ..utils.schema import OptionError
from .files import apply_overrides, make_parser, parse_override, read_option_file, yaml_load
from .kwargs import OPTIMIZERS, validate_kwargs
from .training import METRIC_SCHEMA, TOP_SCHEMA, load_options, resolve_num_gpu, set_paths, validate_options
from .typed import FrozenMapping, TrainingOptions, typed, typed_entry, typed_training_options

__all__ = [
    'FrozenMapping', 'METRIC_SCHEMA', 'OPTIMIZERS', 'OptionError', 'PROJECT_ROOT', 'TOP_SCHEMA', 'TrainingOptions',
    'apply_overrides', 'build_meta_network', 'load_options', 'make_parser', 'parse_override', 'read_option_file',
    'resolve_num_gpu', 'set_paths', 'typed', 'typed_entry', 'typed_training_options', 'validate_kwargs',
    'validate_options', 'yaml_load'
]
