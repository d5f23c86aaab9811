"""Planning a reproduction: the training runs behind a table's rows, their option files, status, commands.

A row of a table is one training run: a paper option file (``options/train/<arch>/<file>_x<scale>.yml``,
:mod:`.reproduction_tables`) under a budget (:mod:`.reproduction_budgets`). Rows of several tables that train the same thing share one run (T2's
EATS is T6's EATS and T7's EATS-1filter). Everything lives under one folder::

    <out>/options/<run>.yml     the run's options: rerun by hand with python train.py -opt <it> --auto_resume
    <out>/runs/<run>/           its experiment (models/, training_states/, log, history, curves)
    <out>/eval/                 evaluations of finished runs, reused while the checkpoint is unchanged
    <out>/tables/<table>/       the table, the comparison with the paper, order agreement, heat map, summary
    <out>/slurm/                sbatch scripts and submit.sh (--launcher slurm)

A run is *finished* when its final weights and training state exist, *interrupted* when some
checkpoint exists (``train.py --auto_resume`` continues it), *new* otherwise. An ECO row needs its
teacher, the same table's Original run, finished first.
"""
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field

import yaml

from ..config import apply_overrides, read_option_file, yaml_load
from ..data.eval_degradations import set_dirname
from ..utils.paths import PROJECT_ROOT
from ..utils.schema import OptionError
from .reproduction_budgets import apply_budget, get_budget
from .reproduction_tables import RowSpec, find_table

__all__ = ['Run', 'TablePlan', 'Plan', 'make_plan', 'write_options', 'train_argv', 'display', 'flat_changes', 'shell',
           'python_name']

ROOT = str(PROJECT_ROOT)
OPTIONS_ROOT = os.path.join(ROOT, 'options', 'train')
PROJECT_TESTSETS = os.path.join(ROOT, 'datasets', 'testsets')
SMOKE_SET = 'skimage'


@dataclass
class Run:
    """One training run; ``rows`` lists the (table, row) it fills, ``needs`` the runs it waits for."""
    id: str
    arch_dir: str
    scale: int
    source: str
    options: dict
    options_path: str
    root: str
    total_iter: int
    needs: tuple = ()
    rows: list = field(default_factory=list)

    @property
    def checkpoint(self):
        return os.path.join(self.root, 'models', f'net_g_{self.total_iter}.pth')

    @property
    def final_state(self):
        return os.path.join(self.root, 'training_states', f'{self.total_iter}.state')

    def status(self):
        if os.path.isfile(self.checkpoint) and os.path.isfile(self.final_state):
            return 'finished'
        states = os.path.join(self.root, 'training_states')
        if os.path.isdir(states) and any(f.endswith('.state') for f in os.listdir(states)):
            return 'interrupted'
        return 'new'


@dataclass
class TablePlan:
    spec: object
    rows: list
    runs: dict      # row name -> run id
    folder: str


@dataclass
class Plan:
    budget: object
    out: str
    runs: dict      # run id -> Run, every run after the runs it needs
    tables: list
    cache_dir: str
    benchmark_root: str
    val_set: str
    gpus_per_row: int = 1


def _default_benchmark_root():
    for root in (os.path.join(ROOT, 'datasets'), os.path.join(os.path.dirname(ROOT), 'shared', 'datasets')):
        if os.path.isdir(os.path.join(root, 'Set5', 'HR')):
            return root
    return os.path.join(ROOT, 'datasets')


def _run_id(spec, row):
    return f'{spec.arch_dir}_x{spec.scale}_{row.file}'


def _selected_rows(spec, rows):
    if rows is None:
        return list(spec.published_rows)
    if rows == ['all']:
        return [r.name for r in spec.rows]
    for name in rows:
        spec.row(name)
    return [r.name for r in spec.rows if r.name in rows]


def flat_changes(before, after, prefix=''):
    """``key.path: old -> new`` for every leaf that differs between two option mappings."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in dict.fromkeys([*before, *after]):
            out += flat_changes(before.get(k), after.get(k), f'{prefix}{k}.')
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after) and \
            all(isinstance(x, dict) for x in before + after):
        return [c for i, (b, a) in enumerate(zip(before, after)) for c in flat_changes(b, a, f'{prefix}{i}.')]
    return [f'{prefix[:-1]}: {before!r} -> {after!r}'] if before != after else []


class _Planner:
    def __init__(self, budget, out, train_gt, gpus_per_row, overrides, val_paths):
        self.budget, self.out, self.train_gt = budget, out, train_gt
        self.gpus_per_row, self.overrides, self.val_paths = gpus_per_row, list(overrides or []), val_paths
        self.runs = {}

    def run_for(self, spec, row):
        rid = _run_id(spec, row)
        source = os.path.join(OPTIONS_ROOT, spec.arch_dir, f'{row.file}_x{spec.scale}.yml')
        raw = read_option_file(source)
        regs = raw.get('train', {}).get('regularizers') or []
        needs = ()
        if any(r.get('type') == 'ECO' for r in regs):
            teacher = self.run_for(spec, RowSpec('Original', 'baseline'))
            for r in regs:
                if r.get('type') == 'ECO':
                    r['teacher_path'] = display(teacher.checkpoint)
            needs = (teacher.id,)
        raw['name'] = rid
        root = os.path.join(self.out, 'runs', rid)
        raw.setdefault('path', {})['experiments_root'] = display(root)
        opt = apply_budget(raw, self.budget, spec.arch_dir, self.train_gt, self.val_paths(spec.scale),
                           self.gpus_per_row)
        opt = apply_overrides(opt, self.overrides)
        run = Run(rid, spec.arch_dir, spec.scale, source, opt, os.path.join(self.out, 'options', f'{rid}.yml'), root,
                  int(opt['train']['total_iter']), needs)
        if rid in self.runs:
            if self.runs[rid].options != opt:
                raise ValueError(f'run {rid} is planned twice with different options')
            return self.runs[rid]
        self.runs[rid] = run
        return run


def make_plan(tables, rows=None, budget='proxy', out=None, train_gt=None, benchmark_root=None, gpus_per_row=1,
              overrides=None):
    """The runs and tables of a reproduction (nothing is written or run).

    Args:
        tables: table names (T1 ... T7, T6-layer-ratio, SwinIR-x4; see :data:`.reproduction_tables.TABLES`).
        rows: row names to keep (None: the published rows; ['all']: every row the option files fill).
        budget: 'paper', 'gpu-proxy', 'proxy' or 'smoke'.
        out: the reproduction folder (default experiments/reproduce/<budget>).
        train_gt: a training HR folder replacing the option files' DIV2K sub-images.
        benchmark_root: the folder holding <Set>/HR of the benchmark sets (default: datasets/, else
            ../shared/datasets beside the project); the smoke budget generates its own.
        gpus_per_row: processes per row (torchrun or srun); the batch per GPU is divided by it.
        overrides: ``key:sub=value`` strings applied to every row's options last.
    """
    budget = get_budget(budget)
    out = os.path.abspath(out or os.path.join(ROOT, 'experiments', 'reproduce', budget.name))
    if budget.tiny:
        cache, bench, val_set = os.path.join(out, 'testsets'), os.path.join(out, 'data'), SMOKE_SET
        train_gt = train_gt or os.path.join(bench, 'smoke_train')  # made by reproduction_launch.make_smoke_data
    else:
        cache, bench, val_set = PROJECT_TESTSETS, os.path.abspath(benchmark_root or _default_benchmark_root()), 'Set5'

    def val_paths(scale):
        folder = os.path.join(cache, val_set, f'x{scale}')
        return display(os.path.join(folder, 'HR')), display(os.path.join(folder, set_dirname('clean')))

    planner = _Planner(budget, out, train_gt and display(train_gt), gpus_per_row, overrides, val_paths)
    table_plans = []
    for name in tables:
        spec = find_table(name)
        names = _selected_rows(spec, rows)
        by_row = {}
        for row_name in names:
            run = planner.run_for(spec, spec.row(row_name))
            run.rows.append((spec.id, row_name))
            by_row[row_name] = run.id
        table_plans.append(TablePlan(spec, names, by_row, os.path.join(out, 'tables', spec.id)))
    return Plan(budget, out, planner.runs, table_plans, cache, bench, val_set, gpus_per_row)


def _header(run, plan):
    before = read_option_file(run.source)
    changes = flat_changes(before, run.options)
    lines = [f'# Run {run.id} of scripts/reproduce.py, budget {plan.budget.name}: {display(run.source)}',
             '# with these changes:'] + [f'#   {c}' for c in changes] + \
        [f'# Rerun by hand, from the project root: python train.py -opt {display(run.options_path)} --auto_resume', '']
    return '\n'.join(lines)


def write_options(plan):
    """Write every run's option file. A started run whose options would change is an error: it
    would resume under other options (use another --out, or delete the run's folder)."""
    written = []
    for run in plan.runs.values():
        os.makedirs(os.path.dirname(run.options_path), exist_ok=True)
        if os.path.isfile(run.options_path):
            old = yaml_load(run.options_path)
            if old != run.options and run.status() != 'new':
                diff = '; '.join(flat_changes(old, run.options)[:5])
                raise OptionError(f'{run.options_path}: run {run.id} was started with other options ({diff}); '
                                  f'continue it with the options it has, use another --out, or delete {run.root}')
        text = _header(run, plan) + yaml.safe_dump(run.options, sort_keys=False, allow_unicode=True)
        with open(run.options_path, 'w', encoding='utf-8') as f:
            f.write(text)
        written.append(run.options_path)
    return written


def display(path):
    """A path as the commands print it: relative to the project root when inside it."""
    path = os.path.abspath(str(path))
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith('..') else rel


def python_name():
    """'python' when that is this interpreter on PATH, else its full path (printed commands are exact)."""
    found = shutil.which('python')
    return 'python' if found and os.path.realpath(found) == os.path.realpath(sys.executable) else sys.executable


def train_argv(run, launcher='none', nproc=1, python=None):
    """The command that trains (or resumes) ``run`` from the project root."""
    python = python or python_name()
    opt = display(run.options_path)
    if launcher == 'slurm':
        return [python, '-u', 'train.py', '-opt', opt, '--launcher', 'slurm', '--auto_resume']
    if nproc > 1:
        return [python, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', 'train.py',
                '-opt', opt, '--launcher', 'pytorch', '--auto_resume']
    return [python, 'train.py', '-opt', opt, '--auto_resume']


def shell(argv, env=None):
    """One printable command line (``env``: variables set in front of it)."""
    prefix = ''.join(f'{k}={shlex.quote(str(v))} ' for k, v in (env or {}).items())
    return prefix + ' '.join(shlex.quote(str(a)) for a in argv)
