"""Overlay the training curves of several runs in one PNG and print their best and final validation metric.

Example:
    python scripts/plot_curves.py experiments/SRResNet_baseline experiments/SRResNet_EATS \
        --names Baseline EATS --metric psnr --val_set Set5 --smooth 20 --out curves_compare.png

Each RUN is an experiment folder (holding the history.jsonl that train.py writes) or a history.jsonl.
The PNG has the training losses (a colour per run, a line style per loss; with --smooth N a trailing
moving average over N logged points) and the validation metric on one validation set, the best point
of each run starred. Without --metric, psnr is used if a run has it, else the first metric found;
without --val_set, the first validation set that has the metric.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from basicsr_ext.utils.curve_plots import best_point, plot_comparison, val_series  # noqa: E402
from basicsr_ext.utils.history import history_path, read_history  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 2)[2])
    parser.add_argument('runs', nargs='+', metavar='RUN', help='experiment folder or history.jsonl')
    parser.add_argument('--names', nargs='+', default=None, help='legend name of each run (default: folder names)')
    parser.add_argument('--metric', default=None, help='validation metric to draw (default: psnr if present)')
    parser.add_argument('--val_set', '--val-set', default=None, help='validation set (default: the first one found)')
    parser.add_argument('--out', default='curves_compare.png', help='the PNG written (default curves_compare.png)')
    parser.add_argument('--smooth', type=int, default=1, metavar='N',
                        help='moving average of the training losses over N logged points (default 1: none)')
    parser.add_argument('--title', default=None, help='figure title (default: the run names)')
    return parser.parse_args(argv)


def _ordered_union(groups):
    return list(dict.fromkeys(x for group in groups for x in group))


def _choose(runs, metric, val_set):
    """The (metric, val_set) to draw, or ValueError naming what the runs have."""
    series = [val_series(records) for _, records in runs]
    metrics = _ordered_union(s.keys() for s in series)
    if metric is None:
        if not metrics:
            if val_set is not None:
                raise ValueError(f"no run has validation set '{val_set}' (no run has validation records)")
            return None, None
        metric = 'psnr' if 'psnr' in metrics else metrics[0]
    elif metric not in metrics:
        raise ValueError(f"no run has validation metric '{metric}' (available: {', '.join(metrics) or 'none'})")
    sets = _ordered_union(s.get(metric, {}).keys() for s in series)
    if val_set is None:
        val_set = sets[0]
    elif val_set not in sets:
        raise ValueError(f"no run has validation set '{val_set}' with metric '{metric}' "
                         f"(available: {', '.join(sets)})")
    return metric, val_set


def summary_table(runs, metric, val_set):
    """Best and final value of ``metric`` on ``val_set`` for each run, as aligned text."""
    header = ['run', 'best', 'at iter', 'final', 'at iter']
    rows, better = [], None
    for name, records in runs:
        series = val_series(records).get(metric, {}).get(val_set)
        if not series:
            rows.append([name, '-', '-', '-', '-'])
            continue
        iters, values, better = series
        best = best_point(iters, values, better)
        best_cells = [f'{best[1]:.4f}', f'{best[0]:,d}'] if best else ['-', '-']
        rows.append([name, *best_cells, f'{values[-1]:.4f}', f'{iters[-1]:,d}'])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = [f'{metric} on {val_set} ({better} is better)']
    lines += ['  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + rows]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.names is not None and len(args.names) != len(args.runs):
            raise ValueError(f'--names has {len(args.names)} name(s) for {len(args.runs)} run(s)')
        if args.smooth < 1:
            raise ValueError(f'--smooth must be at least 1, got {args.smooth}')
        paths = [history_path(run) for run in args.runs]
        names = args.names or [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in paths]
        runs = [(name, read_history(p)) for name, p in zip(names, paths)]
        metric, val_set = _choose(runs, args.metric, args.val_set)
        out = plot_comparison(runs, args.out, metric, val_set, smooth=args.smooth, title=args.title)
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if metric is None:
        print('No run has validation records: only the training losses are drawn.')
    else:
        print(summary_table(runs, metric, val_set))
    print(f'Wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
