"""Build the synthetic degraded test sets (clean, blur, noise, jpeg and their combinations).

Example:
    python scripts/generate_degraded_testsets.py --hr datasets/Set5/HR --out datasets/Set5_degraded --scale 4

writes ``<out>/x4/HR/<name>.png`` (mod-cropped HR) and ``<out>/x4/<set>/<name>.png`` for each set.
See docs/data.md.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr_ext.data.image_io import ImageReadError  # noqa: E402
from basicsr_ext.data.eval_degradations import DEGRADATIONS, PROTOCOLS, SPEC_SYNTAX, generate_testsets  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f'Degradation specs: {SPEC_SYNTAX}.')
    parser.add_argument('--hr', required=True, help='folder of HR images')
    parser.add_argument('--out', required=True, help='output root; sets go to <out>/x<scale>/<set>/')
    parser.add_argument('--scale', type=int, nargs='+', default=[4], help='one or more scales (default 4)')
    parser.add_argument('--seed', type=int, default=0, help='run seed; noise is seeded per image and set (default 0)')
    parser.add_argument('--degradations', default='all',
                        help=f"comma-separated specs, or 'all' = {','.join(DEGRADATIONS)} (default all)")
    parser.add_argument('--protocol', choices=PROTOCOLS, default='reflash',
                        help="downsampler: 'reflash' = PIL bicubic as in the reference (default), "
                        "'matlab' = basicsr MATLAB-style imresize (sets are written to <set>_matlab/)")
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                        help='parallel processes (default min(4, CPUs)); the output does not depend on it')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        for scale in args.scale:
            written = generate_testsets(args.hr, args.out, scale=scale, degradations=args.degradations,
                                        seed=args.seed, protocol=args.protocol, workers=args.workers,
                                        progress=not args.no_progress)
            root = Path(args.out) / f'x{scale}'
            summary = ', '.join(f'{name} ({len(paths)})' for name, paths in written.items())
            print(f'{root}: {summary}')
    except (FileNotFoundError, ImageReadError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
