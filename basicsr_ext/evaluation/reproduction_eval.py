"""Evaluating a reproduction with test.py's machinery.

Each finished run is evaluated once per setting (its checkpoint, the sets, degradations, scale and
protocol) into ``<out>/eval/<run>-<fingerprint>.json`` and reused while that checkpoint is unchanged,
so adding a row, rerunning or filling a second table sharing the run evaluates nothing twice. Then a
table's rows are laid out by :mod:`.report` (table.md/csv/json, per_image.csv, plots) and compared
with the published numbers (:mod:`.paper_compare`). ``<table>/test_options.yml`` is the same
evaluation as a test.py file: ``python test.py -opt <it>`` redoes it without the cache.
"""
import copy
import hashlib
import json
import os
import time

import yaml

from . import paper_compare, report
from .loop import evaluate
from .options import validate_test_options
from .reproduction import SMOKE_SET, display

__all__ = ['table_test_options', 'evaluate_run', 'evaluate_table']

_PAPER_KEYS = ('paper_table', 'paper_configs', 'paper_archs', 'paper_datasets')


def _paper_mappings(plan, tp, rows):
    spec = tp.spec
    if not spec.paper:
        return {}
    out = {'paper_table': spec.paper, 'paper_configs': {r: r for r in rows if spec.row(r).published}}
    if spec.paper_arch:
        out['paper_archs'] = {plan.runs[tp.runs[rows[0]]].options['network_g']['type']: spec.paper_arch}
    if plan.budget.tiny:  # the generated set stands in for Set5, to exercise the comparison
        out['paper_datasets'] = {SMOKE_SET: 'Set5'}
    return out


def table_test_options(plan, tp, rows, device='auto', num_threads=None, progress=True):
    """The raw test.py options of a table with these rows (their checkpoints must exist to validate)."""
    spec, budget = tp.spec, plan.budget
    models = [{'name': r, 'network_g': copy.deepcopy(plan.runs[tp.runs[r]].options['network_g']),
               'path': display(plan.runs[tp.runs[r]].checkpoint), 'param_key': 'params'} for r in rows]
    raw = {'name': f'reproduce_{budget.name}_{spec.id}', 'models': models,
           'datasets': [{'name': d, 'dataroot_hr': display(os.path.join(plan.benchmark_root, d, 'HR'))}
                        for d in budget.datasets],
           'degradations': list(budget.degradations), 'scales': [spec.scale], 'protocol': 'reflash', 'seed': 0,
           'cache_dir': display(plan.cache_dir), 'results_root': display(tp.folder),
           'metrics': {'psnr': True, 'ssim': False}, 'test_y_channel': False, 'device': device,
           'progress': progress}
    if num_threads:
        raw['num_threads'] = num_threads
    if spec.baseline in rows and spec.improvement in rows:
        raw.update(baseline=spec.baseline, improvement=spec.improvement)
    raw.update(_paper_mappings(plan, tp, rows))
    return raw


def _fingerprint(raw, checkpoint):
    st = os.stat(checkpoint)
    key = {'checkpoint': os.path.abspath(checkpoint), 'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
           **{k: raw.get(k) for k in ('datasets', 'degradations', 'scales', 'protocol', 'seed', 'metrics',
                                      'test_y_channel', 'crop_border')},
           'network_g': raw['models'][0]['network_g'], 'param_key': raw['models'][0]['param_key']}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def evaluate_run(plan, tp, row, raw_table, log=print):
    """The per-image records of one row, evaluated now or read back; returns (records, info)."""
    run = plan.runs[tp.runs[row]]
    raw = {k: copy.deepcopy(v) for k, v in raw_table.items() if k not in _PAPER_KEYS + ('baseline', 'improvement')}
    raw.update(name=f'eval_{run.id}', models=[m for m in raw['models'] if m['name'] == row], plot=False)
    path = os.path.join(plan.out, 'eval', f'{run.id}-{_fingerprint(raw, run.checkpoint)}.json')
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            saved = json.load(f)
        log(f'{tp.spec.id} {row}: evaluation of {run.id} reused ({display(path)})')
        records = [{**r, 'model': row} for r in saved['records']]
        return records, {'seconds': saved['seconds'], 'reused': True, 'file': path, 'timing': saved['timing']}
    log(f"{tp.spec.id} {row}: evaluating {run.id} on {', '.join(plan.budget.datasets)} × "
        f"{', '.join(plan.budget.degradations)}")
    opt = validate_test_options(raw)
    t0 = time.perf_counter()
    records, timing = evaluate(opt)
    seconds = time.perf_counter() - t0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump({'run': run.id, 'checkpoint': run.checkpoint, 'seconds': seconds, 'timing': timing,
                   'records': records}, f)
    os.replace(tmp, path)
    return records, {'seconds': seconds, 'reused': False, 'file': path, 'timing': timing}


def _write_test_options(path, raw, plan, missing):
    lines = [f'# The evaluation of this table by scripts/reproduce.py (budget {plan.budget.name}), as a test.py file:',
             f'#   python test.py -opt {display(path)}',
             '# (reproduce.py evaluates each run once and reuses it; test.py redoes the whole table.)']
    if missing:
        lines.append(f"# Rows not finished when this was written, left out: {', '.join(missing)}")
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n' + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


def evaluate_table(plan, tp, device='auto', num_threads=None, progress=True, log=print):
    """Evaluate the finished rows of a table and write its report files; None when no row is finished.

    Returns:
        dict: ``opt`` (validated test options), ``rows`` and ``improvement`` (:func:`.report.aggregate`
        layout), ``comparison`` (:func:`.paper_compare.compare` result or None) and its Markdown
        ``comparison_md``, ``missing`` rows, ``eval`` (row -> seconds, reused, file).
    """
    finished = [r for r in tp.rows if plan.runs[tp.runs[r]].status() == 'finished']
    missing = [r for r in tp.rows if r not in finished]
    if not finished:
        return None
    os.makedirs(tp.folder, exist_ok=True)
    raw = table_test_options(plan, tp, finished, device, num_threads, progress)
    opt_path = os.path.join(tp.folder, 'test_options.yml')
    _write_test_options(opt_path, raw, plan, missing)
    records, info = [], {}
    for row in finished:
        recs, info[row] = evaluate_run(plan, tp, row, raw, log)
        records += recs
    opt = validate_test_options(raw)
    opt['opt_path'] = opt_path
    timing = {'models': {r: i['timing'] for r, i in info.items()}, 'reused': {r: i['reused'] for r, i in info.items()}}
    tables = report.write_all(opt, records, timing)
    result, text = None, None
    if tp.spec.paper:
        result = paper_compare.compare_paths(os.path.join(tp.folder, 'table.csv'), None, opt['paper_table'],
                                             opt['paper_configs'], opt['paper_archs'], opt['paper_datasets'])
        text = paper_compare.format_comparison(result)
        paper_compare.write_comparison(result, text, os.path.join(tp.folder, 'paper_comparison'))
    return {'opt': opt, 'rows': tables['rows'], 'improvement': tables['improvement'], 'md': tables['md'],
            'comparison': result, 'comparison_md': text, 'missing': missing, 'eval': info}
