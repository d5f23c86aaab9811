"""The report of a reproduced table: order agreement, a heat map of the differences, one summary page.

Written into ``<out>/tables/<table>/`` beside test.py's table files and ``paper_comparison.{md,csv}``:
``order_agreement.{md,csv}``, ``diff_heatmap.png`` and ``summary.md``.
"""
import json
import os

import numpy as np

from . import paper_tables
from .order_agreement import format_agreement, order_agreement, write_agreement_csv
from .reproduction import display

__all__ = ['agreement_inputs', 'write_heatmap', 'write_report', 'run_seconds']

CAVEATS = {
    'smoke': 'Tiny networks trained for a few iterations on a generated set: the numbers exercise the pipeline and '
             "mean nothing. The generated set is compared with the paper's Set5 cells only to exercise the report.",
    'proxy': "A proxy of the recipe: {iters} of the paper's 500,000 iterations, evaluated on {sets} only. Networks "
             'this early in training are near the start of their learning curve, where a regularizer mostly '
             "slows fitting; agreement or disagreement with the paper's order says whether an effect shows this "
             'early, not whether the paper\'s result holds at 500k iterations.',
    'gpu-proxy': "A proxy of the recipe: {iters} of the paper's 500,000 iterations. The paper's order may not have "
                 'formed yet at this point of training; treat disagreement as a question for a longer run.',
    'paper': 'The published recipe. Remaining known differences: our test noise is seeded (the authors\' was not), '
             'the training data order and initialisation differ, and the choices listed in docs/reproduce.md.',
}


def agreement_inputs(evaluation, spec):
    """``(ours, paper)`` for :func:`.order_agreement.order_agreement`: published rows only, cells
    (dataset, degradation) in the paper's names; flagged cells without a known correction left out,
    known misprints taken at their likely value."""
    opt = evaluation['opt']
    rows = [r for r in opt['paper_configs']]
    to_paper = opt['paper_datasets']
    ours = {}
    for r in evaluation['rows']:
        if r['model'] in rows and 'psnr' in r:
            ds = to_paper.get(r['dataset'], r['dataset'])
            ours.setdefault(r['model'], {}).update({(ds, d): v for d, v in r['psnr'].items()})
    info = paper_tables.table(spec.paper)
    paper = {}
    for row in rows:
        config = opt['paper_configs'][row]
        if config not in info.configs:
            continue
        cells = {}
        for ds in info.datasets:
            for deg in paper_tables.DEGRADATION_COLUMNS:
                flag = paper_tables.misprint(spec.paper, ds, config, deg)
                if flag is not None and (flag.status != 'known' or flag.likely is None):
                    continue
                cells[(ds, deg)] = paper_tables.value(spec.paper, ds, config, deg, corrected=True)
        paper[row] = cells
    return ours, paper


def write_heatmap(path, comparison, title):
    """Ours − paper per (dataset, row) × degradation, on a symmetric diverging scale; † marks flagged cells."""
    # why: optional heavy dependency (matplotlib), only needed when the report is written
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # why: as above

    degs = comparison['degradations']
    labels, index = [], {}
    for c in comparison['cells']:
        key = (c['dataset'], c['config'])
        if key not in index:
            index[key] = len(labels)
            labels.append(f"{c['dataset']} · {c['config']}")
    grid = np.full((len(labels), len(degs)), np.nan)
    flagged = np.zeros_like(grid, dtype=bool)
    for c in comparison['cells']:
        i, j = index[(c['dataset'], c['config'])], degs.index(c['degradation'])
        grid[i, j], flagged[i, j] = c['diff'], bool(c.get('flag'))
    lim = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0, 0.01)
    fig = Figure(figsize=(1.0 * len(degs) + 3.5, 0.38 * len(labels) + 1.8), layout='constrained')
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(grid, cmap='RdBu', vmin=-lim, vmax=lim, aspect='auto')
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                text = f'{grid[i, j]:+.2f}' + ('†' if flagged[i, j] else '')
                ax.text(j, i, text, ha='center', va='center', fontsize=7,
                        color='white' if abs(grid[i, j]) > 0.6 * lim else 'black')
    ax.set_xticks(range(len(degs)), degs)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label='ours − paper, PSNR (dB)')
    fig.savefig(path, dpi=110)
    return path


def run_seconds(run):
    """Seconds reproduce.py spent training a run (all its calls), or None when it never trained it."""
    path = os.path.join(run.root, 'reproduce.json')
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return sum(c['seconds'] for c in json.load(f).get('train_calls', []))


def _minutes(seconds):
    if seconds is None:
        return 'not recorded'
    return f'{seconds:.0f} s' if seconds < 60 else f'{seconds / 60:.1f} min'


def _header(plan, tp, evaluation):
    spec, budget = tp.spec, plan.budget
    lines = [f'# {spec.id} reproduced at the `{budget.name}` budget', '']
    if spec.paper:
        info, src = paper_tables.table(spec.paper), paper_tables.source(spec.paper)
        lines += [f"{info.paper_table} of *{src['title']}* ({src['where']}): {info.caption}", '']
    else:
        lines += [f'No published table: {spec.note}.', '']
    lines += [f'Budget: {budget.doc}.', '', '| row | run | iterations | status | training | evaluation |',
              '|---|---|---:|---|---:|---:|']
    for row in tp.rows:
        run = plan.runs[tp.runs[row]]
        ev = evaluation['eval'].get(row) if evaluation else None
        ev_text = '–' if ev is None else ('reused' if ev['reused'] else _minutes(ev['seconds']))
        lines.append(f'| {row} | `{display(run.options_path)}` | {run.total_iter:,d} | {run.status()} | '
                     f'{_minutes(run_seconds(run))} | {ev_text} |')
    sets = ', '.join(budget.datasets)
    lines += ['', f"Evaluation: {sets} × {', '.join(budget.degradations)}; PSNR (dB) on RGB, crop = scale, "
              'reflash protocol, test noise seed 0 (docs/evaluation.md).', '']
    return lines


def _analysis_lines(analysis, site):
    lines = [f'## Channel correlation and channel ablation at `{site}`', '',
             'On the clean LR of the validation set: mean off-diagonal cosine similarity of the channel responses '
             '(EATS Fig. 7-8; lower = more distinct channels) and the spread (std) of the PSNR drops when each '
             "channel is zeroed in turn (Adaptive Dropout's channel ablation).", '',
             '| row | mean off-diagonal cosine | ablation spread (dB) | largest drop (dB) | time |',
             '|---|---:|---:|---:|---:|']
    for row, corr, spread, top, seconds in analysis:
        when = seconds if isinstance(seconds, str) else _minutes(seconds)
        lines.append(f'| {row} | {corr:.4f} | {spread:.4f} | {top:.4f} | {when} |')
    return lines + ['', '![channel correlation](analysis/correlation.png)', '',
                    '![channel ablation](analysis/ablation.png)', '']


def write_report(plan, tp, evaluation, analysis=None, site=None):
    """Write order_agreement.{md,csv}, diff_heatmap.png and summary.md; returns the summary's text.
    ``analysis``: the rows of :func:`.reproduction_analysis.analyse_table`, at ``site``."""
    spec = tp.spec
    lines = _header(plan, tp, evaluation)
    if evaluation is None:
        lines += ['No row has finished training yet: nothing to evaluate.']
    else:
        if evaluation['missing']:
            lines += [f"Not finished, left out: {', '.join(evaluation['missing'])}.", '']
        if evaluation['comparison'] is not None:
            ours, paper = agreement_inputs(evaluation, spec)
            agreement = order_agreement(ours, paper, [r for r in tp.rows if r in ours])
            text = format_agreement(agreement)
            with open(os.path.join(tp.folder, 'order_agreement.md'), 'w', encoding='utf-8') as f:
                f.write('\n'.join([f'# Order agreement, {spec.id}', ''] + text) + '\n')
            write_agreement_csv(os.path.join(tp.folder, 'order_agreement.csv'), agreement)
            lines += ['## Order agreement', '', *text, '']
            if evaluation['comparison']['cells']:
                write_heatmap(os.path.join(tp.folder, 'diff_heatmap.png'), evaluation['comparison'],
                              f'{spec.id}, budget {plan.budget.name}: ours − paper')
                lines += ['![ours − paper](diff_heatmap.png)', '']
            body = evaluation['comparison_md'].split('\n', 1)[1].replace('\n## ', '\n### ')
            lines += ['## Ours, the paper, and the difference (Δ = ours − paper)', body, '']
        else:
            lines += ['## Our table', evaluation['md'].split('\n', 1)[1].replace('\n## ', '\n### '), '']
        if analysis:
            lines += _analysis_lines(analysis, site)
    iters = ', '.join(sorted({f'{plan.runs[r].total_iter:,d}' for r in tp.runs.values()}))
    lines += ['## What this budget can and cannot show', '',
              CAVEATS[plan.budget.name].format(iters=iters, sets=', '.join(plan.budget.datasets)), '',
              'Files: `table.md`/`.csv`/`.json` and `plot_*.png` (test.py layout), `paper_comparison.md`/`.csv`, '
              '`order_agreement.md`/`.csv`, `diff_heatmap.png`, `analysis/` (channel correlation and ablation: '
              'PNG + CSV), `test_options.yml` (the evaluation as a test.py file); the runs\' options are in '
              '`../../options/`.']
    text = '\n'.join(lines) + '\n'
    os.makedirs(tp.folder, exist_ok=True)
    with open(os.path.join(tp.folder, 'summary.md'), 'w', encoding='utf-8') as f:
        f.write(text)
    return text
