"""Option files: YAML reading (``2e-4`` is a float), ``--force_yml`` overrides, the command line."""
import argparse
import os
import re
from pathlib import Path

import yaml

from ..utils.schema import OptionError

__all__ = ['apply_overrides', 'make_parser', 'parse_override', 'read_option_file', 'yaml_load']


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``2e-4`` and ``1e5`` as floats (YAML 1.2), not strings (YAML 1.1)."""


_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$''', re.X), list('-+0123456789.'))


def yaml_load(text_or_path):
    """Load YAML from a path or a string, with scientific-notation floats."""
    if isinstance(text_or_path, (str, Path)) and os.path.isfile(str(text_or_path)):
        with open(text_or_path, encoding='utf-8') as f:
            return yaml.load(f, Loader=_Loader)
    return yaml.load(str(text_or_path), Loader=_Loader)


def parse_override(item):
    """``'train:ema_decay=0.99'`` -> (['train', 'ema_decay'], 0.99). The value is parsed as YAML, never eval'd."""
    if '=' not in item:
        raise OptionError(f"--force_yml {item!r}: expected 'key:subkey=value'")
    keys, value = item.split('=', 1)
    path = [k for k in keys.split(':')]
    if not all(path):
        raise OptionError(f"--force_yml {item!r}: empty key in '{keys}'")
    try:
        parsed = yaml.load(value, Loader=_Loader)
    except yaml.YAMLError as err:
        raise OptionError(f'--force_yml {item!r}: value is not valid YAML ({err})') from err
    return path, parsed


def apply_overrides(opt, items):
    for item in items or []:
        path, value = parse_override(item)
        node = opt
        for depth, key in enumerate(path[:-1]):
            if not isinstance(node.get(key), dict):
                if key in node:
                    raise OptionError(f"--force_yml {item!r}: '{':'.join(path[:depth + 1])}' is not a section")
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return opt


def read_option_file(opt_path, overrides=None):
    """The raw mapping of an option file with ``--force_yml`` overrides applied (not yet validated)."""
    if not os.path.isfile(opt_path):
        raise OptionError(f"-opt: option file '{opt_path}' does not exist")
    try:
        raw = yaml_load(opt_path)
    except yaml.YAMLError as err:
        raise OptionError(f'{opt_path}: invalid YAML: {err}') from err
    if raw is None:  # no content, or only comments
        raise OptionError(f'{opt_path}: the option file is empty')
    return apply_overrides(raw, overrides)


def make_parser(is_train=True):
    parser = argparse.ArgumentParser(description='basicsr_ext ' + ('training' if is_train else 'testing'))
    parser.add_argument('-opt', '--opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='none: one process; pytorch: torchrun; slurm: srun')
    parser.add_argument('--auto_resume', action='store_true', help='resume from the newest complete checkpoint')
    parser.add_argument('--debug', action='store_true', help='debug mode: log and validate every few iterations')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help="override options, e.g. train:ema_decay=0.999 (values are YAML)")
    return parser
