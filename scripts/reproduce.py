"""From the paper option files to a reproduced table in one command: train every row, evaluate, compare.

Examples:
    python scripts/reproduce.py --table T1 --budget proxy --dry_run       # print every command
    python scripts/reproduce.py --table T1 --budget proxy --train_gt ../shared/datasets/BSD200/HR
    python scripts/reproduce.py --table T2 T6 T7 --budget gpu-proxy --gpus 0,1,2,3
    python scripts/reproduce.py --table T1 --rows all --budget paper --launcher slurm --sbatch_args='--partition=gpu'
    python scripts/reproduce.py --list

Each row is one training run of a paper option file (options/train/) under a budget (paper, gpu-proxy,
proxy, smoke); the runs' options are written to <out>/options/ so each can be rerun by hand. Rerunning
the command skips finished rows, resumes interrupted ones (train.py --auto_resume) and reuses finished
evaluations; ECO rows wait for the baseline that is their teacher. The report of each table goes to
<out>/tables/<table>/summary.md (docs/reproduce.md).
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr_ext.evaluation import reproduction_launch as launch  # noqa: E402
from basicsr_ext.evaluation.reproduction import display, make_plan, python_name, shell, write_options  # noqa: E402
from basicsr_ext.evaluation.reproduction_analysis import DEFAULT_SITE, analyse_table  # noqa: E402
from basicsr_ext.evaluation.reproduction_budgets import BUDGETS  # noqa: E402
from basicsr_ext.evaluation.reproduction_eval import evaluate_table  # noqa: E402
from basicsr_ext.evaluation.reproduction_report import write_report  # noqa: E402
from basicsr_ext.evaluation.reproduction_tables import TABLES  # noqa: E402
from basicsr_ext.utils.schema import OptionError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 2)[2])
    parser.add_argument('--table', nargs='+', default=[], help='tables: T1 ... T7 (T6, T7: the ablations), SwinIR-x4')
    parser.add_argument('--rows', default=None,
                        help="comma-separated rows (default: the published rows; 'all': every row the option files fill)")
    parser.add_argument('--budget', default='proxy', choices=list(BUDGETS), help='training schedule (default proxy)')
    parser.add_argument('--out', default=None, help='reproduction folder (default experiments/reproduce/<budget>)')
    parser.add_argument('--train_gt', default=None, help="training HR folder instead of the files' DIV2K sub-images")
    parser.add_argument('--benchmark_root', default=None,
                        help='folder holding Set5/HR ... Manga109/HR (default datasets/, else ../shared/datasets)')
    parser.add_argument('--gpus', default=None, help='GPU ids, e.g. 0,1,2,3: rows run in parallel, one per GPU group')
    parser.add_argument('--gpus_per_row', type=int, default=1,
                        help='GPUs per row (torchrun, or srun tasks under SLURM); the batch per GPU is divided')
    parser.add_argument('--launcher', default='none', choices=('none', 'slurm'),
                        help='none: train here; slurm: sbatch jobs, ECO after its teacher, evaluation after all')
    parser.add_argument('--sbatch_args', default='',
                        help="extra sbatch options as one string, e.g. --sbatch_args='--partition=gpu --time=48:00:00'")
    parser.add_argument('--force_yml', nargs='+', default=[], help="override every row's options, e.g. train:ema_decay=0")
    parser.add_argument('--device', default='auto', help='evaluation device (auto, cpu, cuda, cuda:N)')
    parser.add_argument('--eval_threads', type=int, default=None, help='CPU threads of the evaluation')
    parser.add_argument('--skip_eval', action='store_true', help='train only')
    parser.add_argument('--analysis_site', default=DEFAULT_SITE,
                        help=f'site of the channel correlation and ablation figures (default {DEFAULT_SITE})')
    parser.add_argument('--no_analysis', action='store_true', help='leave the channel correlation and ablation out')
    parser.add_argument('--dry_run', action='store_true', help='write the options, print every command, run nothing')
    parser.add_argument('--no_progress', action='store_true', help='hide the evaluation progress bars')
    parser.add_argument('--list', action='store_true', help='list the tables, their rows and the budgets')
    return parser.parse_args(argv)


def list_tables():
    lines = ['Tables (published rows first; --rows all adds the others):']
    for spec in TABLES.values():
        rows = ', '.join(r.name + ('' if r.published else '*') for r in spec.rows)
        paper = f'published as {spec.paper}' if spec.paper else 'no published numbers'
        lines.append(f'  {spec.id:<15} {spec.arch_dir} ×{spec.scale}, {paper}: {rows}')
    lines.append('  (* not in the paper: evaluated beside it, without a published counterpart)')
    lines.append('Budgets:')
    lines += [f'  {b.name:<10} {b.doc}' for b in BUDGETS.values()]
    return '\n'.join(lines)


def _groups(args):
    if not args.gpus:
        return [None]
    gpus = [g.strip() for g in args.gpus.split(',') if g.strip()]
    n = args.gpus_per_row
    if len(gpus) < n:
        raise ValueError(f'--gpus {args.gpus}: {len(gpus)} GPU(s) cannot hold a row of --gpus_per_row {n}')
    return [gpus[i:i + n] for i in range(0, len(gpus) - n + 1, n)]


def _eval_argv(argv):
    """This command as the SLURM evaluation job runs it: trains nothing (all rows are done), evaluates."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ('--launcher', '--sbatch_args'):
            skip = True
            continue
        if a.startswith(('--launcher=', '--sbatch_args=')) or a == '--dry_run':
            continue
        out.append(a)
    return [python_name(), 'scripts/reproduce.py', *out, '--launcher', 'none']


def _print_plan(plan):
    tables = ', '.join(t.spec.id for t in plan.tables)
    print(f'Reproduction of {tables} at the {plan.budget.name} budget in {display(plan.out)}')
    print(f'  {plan.budget.doc}')
    for run in plan.runs.values():
        rows = ', '.join(f'{t}/{r}' for t, r in run.rows) or 'teacher of ' + ', '.join(
            o.id for o in plan.runs.values() if run.id in o.needs)
        wait = f', after {", ".join(run.needs)}' if run.needs else ''
        print(f'  {run.id}: {run.status()}, {run.total_iter:,d} iterations ({rows}{wait})')


def _dry_run(plan, args, argv, groups):
    if args.launcher == 'slurm':
        jobs = launch.slurm_jobs(plan, _eval_argv(argv))
        lines = launch.slurm_lines(jobs, shlex.split(args.sbatch_args))
        submit = launch.write_slurm(plan, jobs, lines)
        print(f'SLURM jobs (scripts written to {display(os.path.dirname(submit))}; '
              f'bash {display(submit)} submits them):')
        print('\n'.join(lines))
        return 0
    parallel = ' (concurrently, one row per GPU group; a row starts only after the runs it needs)' \
        if len(groups) > 1 else ' (one after another)'
    print(f'Training commands, from the project root{parallel}:')
    for run, argv_, env in launch.local_commands(plan, groups):
        print(shell(argv_, env))
    print('Evaluation (in this process, each finished run once), the same as:')
    for tp in plan.tables:
        print(f"python test.py -opt {display(os.path.join(tp.folder, 'test_options.yml'))}"
              '   # written when rows have finished')
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.list:
        print(list_tables())
        return 0
    if not args.table:
        print('error: --table is required (e.g. --table T1; --list shows the tables)', file=sys.stderr)
        return 2
    rows = None if args.rows is None else [r.strip() for r in args.rows.split(',') if r.strip()]
    try:
        groups = _groups(args)
        plan = make_plan(args.table, rows, args.budget, args.out, args.train_gt, args.benchmark_root,
                         args.gpus_per_row, args.force_yml)
        write_options(plan)
        _print_plan(plan)
        if args.dry_run:
            return _dry_run(plan, args, argv, groups)
        if plan.budget.tiny:
            launch.make_smoke_data(plan)
        launch.check_benchmarks(plan)
        if args.launcher == 'slurm':
            return _submit(plan, args, argv)
        launch.prepare_validation(plan)
    except (OptionError, KeyError, ValueError, FileNotFoundError) as err:
        print(f'error: {err.args[0] if isinstance(err, KeyError) else err}', file=sys.stderr)
        return 2
    failed = launch.train_runs(plan, groups)
    if not args.skip_eval:
        for tp in plan.tables:
            evaluation = evaluate_table(plan, tp, args.device, args.eval_threads, not args.no_progress)
            analysis = None
            if evaluation and not args.no_analysis:
                analysis = analyse_table(plan, tp, evaluation, args.analysis_site, evaluation['opt']['device'])
            write_report(plan, tp, evaluation, analysis, args.analysis_site)
            print(f"{tp.spec.id}: {display(os.path.join(tp.folder, 'summary.md'))}")
    for rid, reason in failed.items():
        print(f'error: {rid} not finished: {reason}', file=sys.stderr)
    return 1 if failed else 0


def _submit(plan, args, argv):
    if shutil.which('sbatch') is None:
        print('error: sbatch not found: --launcher slurm needs SLURM (--dry_run prints the jobs)', file=sys.stderr)
        return 2
    jobs = launch.slurm_jobs(plan, _eval_argv(argv))
    submit = launch.write_slurm(plan, jobs, launch.slurm_lines(jobs, shlex.split(args.sbatch_args)))
    return subprocess.run(['bash', submit]).returncode


if __name__ == '__main__':
    sys.exit(main())
