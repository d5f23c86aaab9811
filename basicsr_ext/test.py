"""The evaluation pipeline behind ``python test.py -opt options/test/<name>.yml``.

Everything in the options file is checked first (unknown keys with suggestions, missing
folders and checkpoints, architecture arguments, scales); then the LR sets are generated or
reused, every model is run, and the tables/plots are written to ``results/<name>/``.
"""
import argparse
import os
import shutil
import sys

from basicsr.utils import get_time_str

from .archs.weights import CheckpointMismatchError
from .data.image_io import ImageReadError
from .evaluation.loop import run_benchmark
from .evaluation.options import load_test_options
from .utils.errors import ImageTooSmallError
from .utils.logging import configure_logger
from .utils.schema import OptionError

# errors a user can fix from the message alone: print it, no traceback
USER_ERRORS = (OptionError, FileNotFoundError, ImageReadError, ImageTooSmallError, ValueError, CheckpointMismatchError)


def make_parser():
    parser = argparse.ArgumentParser(description='Evaluate models on datasets × degradations × scales; '
                                     'writes results/<name>/table.{md,csv,json}, per_image.csv and plots.')
    parser.add_argument('-opt', '--opt', required=True, help='test options YAML (see docs/evaluation.md)')
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='override options, e.g. device=cpu tile_size=128 (values are YAML)')
    parser.add_argument('--no_progress', action='store_true', help='hide the progress bars')
    return parser


def _setup_logger(results_root):
    return configure_logger('basicsr_ext.test', log_file=os.path.join(results_root, f'test_{get_time_str()}.log'))


def main(argv=None):
    """Run the evaluation; returns the process exit code (0 ok, 2 bad input)."""
    args = make_parser().parse_args(argv)
    try:
        opt = load_test_options(args.opt, overrides=args.force_yml)
        if args.no_progress:
            opt['progress'] = False
        os.makedirs(opt['results_root'], exist_ok=True)
        log = _setup_logger(opt['results_root'])
        shutil.copy(opt['opt_path'], os.path.join(opt['results_root'], os.path.basename(opt['opt_path'])))
        tables = run_benchmark(opt)
    except USER_ERRORS as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(tables['md'])
    if 'paper_comparison' in tables:
        print('\n' + tables['paper_comparison'])
    log.info(f"results written to {opt['results_root']}")
    return 0
