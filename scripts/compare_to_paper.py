"""Print our benchmark table beside a published one, with the difference in every shared cell.

Example:
    python scripts/compare_to_paper.py --ours results/benchmark_reflash_x4/table.csv --table T1 \
        --config-map SRResNet_baseline=Original SRResNet_dropout=Dropout SRResNet_EATS=EATS

The published numbers shipped with the package (the EATS paper's Tables 1-7,
basicsr_ext/evaluation/paper_tables) are used unless --paper names another CSV; cells flagged there
as misprinted are marked with a dagger and explained. --list prints the shipped tables.

Our model names, archs and dataset names are translated with the --*-map options (MSRResNet ->
SRResNet and RRDBNetAnyScale -> RRDBNet are built in). With --out PREFIX, PREFIX.md and
PREFIX.csv (one line per matched cell) are written too.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr_ext.evaluation import paper_tables  # noqa: E402
from basicsr_ext.evaluation.paper_compare import compare_files  # noqa: E402


def _mapping(items, flag):
    out = {}
    for item in items or []:
        if '=' not in item:
            raise SystemExit(f"error: {flag} expects OURS=PAPER pairs, got '{item}'")
        ours, paper = item.split('=', 1)
        out[ours] = paper
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 2)[2])
    parser.add_argument('--ours', help='our table.csv (written by test.py)')
    parser.add_argument('--paper', default=None,
                        help='published table CSV: table,arch,scale,dataset,config,<degs> (default: the shipped one)')
    parser.add_argument('--list', action='store_true', help='list the shipped tables and flagged cells, then exit')
    parser.add_argument('--table', default=None, help="compare with this table only (e.g. 'T1')")
    parser.add_argument('--config-map', nargs='+', default=[], metavar='OURS=PAPER',
                        help='our model name -> the paper config, e.g. SRResNet_EATS=EATS')
    parser.add_argument('--arch-map', nargs='+', default=[], metavar='OURS=PAPER', help='e.g. HAN=HAN-lite')
    parser.add_argument('--dataset-map', nargs='+', default=[], metavar='OURS=PAPER', help='e.g. B100=BSD100')
    parser.add_argument('--metric', default='psnr', choices=('psnr', 'ssim'), help='which of our rows (default psnr)')
    parser.add_argument('--decimals', type=int, default=2, help='decimals printed (default 2)')
    parser.add_argument('--out', default=None, help='also write OUT.md and OUT.csv')
    return parser.parse_args(argv)


def list_tables():
    lines = []
    for t in paper_tables.tables().values():
        src = paper_tables.source(t.id)
        lines.append(f"{t.id}: {t.paper_table} of the {src['short']} paper ({src['where']}), {t.arch} ×{t.scale}, "
                     f"{t.metric}; rows {', '.join(t.configs)}\n    {t.caption}")
    lines.append('Flagged cells:')
    for m in paper_tables.misprints():
        lines.append(f'  {m.table} {m.dataset} {m.config} {m.degradation} ({m.status}): {m.note}')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        print(list_tables())
        return 0
    if not args.ours:
        print('error: --ours is required (our table.csv, written by test.py)', file=sys.stderr)
        return 2
    try:
        text = compare_files(args.ours, args.paper, table=args.table, configs=_mapping(args.config_map, '--config-map'),
                             archs=_mapping(args.arch_map, '--arch-map'),
                             datasets=_mapping(args.dataset_map, '--dataset-map'), metric=args.metric,
                             out_prefix=args.out, decimals=args.decimals)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
