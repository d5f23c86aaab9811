"""Benchmark tables in the papers' layout: md, csv, json, per-image csv, one plot per dataset.

Layout of a block (one per dataset and scale): one sub-table per metric, marked ↑ (higher is better)
or ↓ (lower is better); in each, one row per model, one column per degradation (clean, blur, noise,
jpeg, b+n, b+j, n+j, b+n+j as in the EATS tables; a single ``real`` column for real captures), the
best model of each column in bold (in the metric's direction), and an Improvement row = chosen model
− baseline for ↑ metrics and baseline − chosen model for ↓ metrics, so that positive always means
better; computed from unrounded means. NaN values (NIQE where it cannot be computed) are left out of
the means and listed under the block, with the images ``on_bad_image: skip`` left out.
"""
import csv
import datetime
import json
import os
import platform
import re
import warnings

import basicsr
import numpy as np
import torch

from ..metrics import METRIC_INFO
from .scoring import metric_ids

__all__ = ['METRICS', 'IMPROVEMENT', 'REAL_COLUMN', 'aggregate', 'improvement_rows', 'format_markdown', 'write_csv',
           'write_all', 'plot_block', 'columns', 'arrow']

METRICS = tuple(METRIC_INFO)  # every metric test.py can report, in table order
CSV_DECIMALS = 4
IMPROVEMENT = 'Improvement'
REAL_COLUMN = 'real'  # the column of a paired real or LR-only set
_KIND = {'paired': 'paired real captures', 'lr_only': 'LR only: no-reference metrics'}


def _metrics_of(opt):
    return metric_ids(opt['metrics'])


def arrow(metric):
    return '↑' if METRIC_INFO[metric].better == 'higher' else '↓'


def columns(opt):
    """The table columns: the degradations if a synthetic set is evaluated, then ``real`` if a real one is."""
    kinds = {d.get('type', 'synthetic') for d in opt['datasets']}
    return (list(opt['degradations']) if 'synthetic' in kinds else []) + ([REAL_COLUMN] if kinds - {'synthetic'}
                                                                          else [])


def _mean(values):
    with warnings.catch_warnings():  # all-NaN: the mean is NaN, said in the notes
        warnings.simplefilter('ignore', RuntimeWarning)
        return float(np.nanmean(values))


def aggregate(records, opt):
    """Mean of each metric per (dataset, scale, model, column), NaN values left out, in option order.

    Returns:
        list of dicts ``{dataset, scale, model, arch, n_images, kind, <metric>: {column: mean}}`` (an empty
        mapping for a metric the block does not have, e.g. PSNR of an LR-only set).
    """
    groups = {}
    for r in records:
        groups.setdefault((r['dataset'], r['scale'], r['model']), []).append(r)
    rows = []
    model_order = list(dict.fromkeys(m['name'] for m in opt['models']))
    for d in opt['datasets']:
        for scale in opt['scales']:
            for name in model_order:
                recs = groups.get((d['name'], scale, name))
                if not recs:
                    continue
                row = {'dataset': d['name'], 'scale': scale, 'model': name, 'arch': recs[0]['arch'],
                       'n_images': len({r['image'] for r in recs}), 'kind': d.get('type', 'synthetic')}
                for metric in _metrics_of(opt):
                    row[metric] = {}
                    for col in columns(opt):
                        values = [r[metric] for r in recs if r['degradation'] == col and metric in r]
                        if values:
                            row[metric][col] = _mean(values)
                rows.append(row)
    return rows


def improvement_rows(rows, opt):
    """Per block holding both models: ``improvement`` − ``baseline`` (↑ metrics) or the reverse (↓ metrics)."""
    if not opt.get('baseline') or not opt.get('improvement'):
        return []
    index = {(r['dataset'], r['scale'], r['model']): r for r in rows}
    out = []
    for key in dict.fromkeys((r['dataset'], r['scale']) for r in rows):
        base, new = index.get((*key, opt['baseline'])), index.get((*key, opt['improvement']))
        if base is None or new is None:
            continue
        row = {'dataset': key[0], 'scale': key[1], 'model': IMPROVEMENT, 'arch': new['arch'],
               'of': opt['improvement'], 'baseline': opt['baseline'], 'kind': new['kind']}
        for metric in _metrics_of(opt):
            sign = 1 if METRIC_INFO[metric].better == 'higher' else -1
            row[metric] = {d: sign * (new[metric][d] - base[metric][d]) + 0.0  # + 0.0: no -0.00 cells
                           for d in new[metric] if d in base[metric]}
        out.append(row)
    return out


def _blocks(rows, improvements):
    blocks = {}
    for r in rows + improvements:
        blocks.setdefault((r['dataset'], r['scale']), []).append(r)
    return blocks


def best_values(models, metric, cols):
    """The best mean of each column among ``models``, in the metric's direction (NaN never wins)."""
    pick = max if METRIC_INFO[metric].better == 'higher' else min
    best = {}
    for col in cols:
        values = [r[metric][col] for r in models if col in r[metric] and np.isfinite(r[metric][col])]
        best[col] = pick(values) if values else None
    return best


def improvement_label(row, metric):
    """``EATS − Original`` for ↑ metrics, ``Original − EATS`` for ↓ ones: positive means better either way."""
    new, base = row['of'], row['baseline']
    return f'{new} − {base}' if METRIC_INFO[metric].better == 'higher' else f'{base} − {new}'


def _protocol_line(opt):
    what = {'reflash': 'reflash (PIL bicubic LR + test degradations, as Reflash Dropout / AD / EATS)',
            'matlab': 'matlab (MATLAB-style imresize LR, as ECO / classical SR)'}[opt['protocol']]
    crop = 'scale' if opt['crop_border'] is None else opt['crop_border']
    channel = 'Y channel' if opt['test_y_channel'] else 'RGB'
    return (f"protocol: {what}; PSNR/SSIM on {channel}, crop_border = {crop}, uint8-rounded outputs "
            f"(basicsr calculate_psnr / calculate_ssim); noise seed {opt['seed']}. ↑ higher is better, ↓ lower is "
            'better; bold: the best model of each column; Improvement: positive = better')


def block_notes(records, skipped, dataset, scale):
    """Lines under a block: outputs whose metric is NaN (and why), images skipped as unreadable."""
    notes = []
    nan = [r for r in records if r['dataset'] == dataset and r['scale'] == scale and r.get('note')]
    if nan:
        notes.append(f'{len(nan)} output(s) with a NaN metric, left out of the means:')
        notes += [f"- {r['model']} / {r['degradation']} / {r['image']}: {r['note']}" for r in nan]
    skip = [s for s in skipped or () if s['dataset'] == dataset]
    if skip:
        notes.append(f'{len(skip)} unreadable image(s) skipped (on_bad_image: skip):')
        notes += [f"- {s['file']}: {s['error']}" for s in skip]
    return notes


def format_markdown(rows, improvements, opt, records=(), skipped=()):
    """The whole report as Markdown: per dataset and scale, one table per metric, then the notes."""
    lines = [f"# {opt['name']}", '', _protocol_line(opt), '']
    for (dataset, scale), block in _blocks(rows, improvements).items():
        n = max(r.get('n_images', 0) for r in block)
        kind = _KIND.get(block[0]['kind'])
        lines += [f'## {dataset} ×{scale} ({n} images' + (f', {kind})' if kind else ')'), '']
        for metric in _metrics_of(opt):
            models = [r for r in block if r['model'] != IMPROVEMENT]
            cols = [c for c in columns(opt) if any(c in r[metric] for r in models)]
            if not cols:
                continue
            dec = METRIC_INFO[metric].decimals
            best = best_values(models, metric, cols)
            lines += [f'{METRIC_INFO[metric].label} {arrow(metric)}', '', '| Model | ' + ' | '.join(cols) + ' |',
                      '|---|' + '---:|' * len(cols)]
            for r in block:
                cells = []
                for d in cols:
                    v = r[metric].get(d)
                    if v is None:
                        cells.append('–')
                    elif r['model'] == IMPROVEMENT:
                        cells.append(f'{v:+.{dec}f}')
                    else:
                        text = f'{v:.{dec}f}'
                        cells.append(f'**{text}**' if len(models) > 1 and v == best[d] else text)
                label = (f"**{IMPROVEMENT}** ({improvement_label(r, metric)})" if r['model'] == IMPROVEMENT else
                         f"{r['model']} ({r['arch']})" if r['arch'] not in (r['model'], 'Bicubic') else r['model'])
                lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
            lines.append('')
        notes = block_notes(records, skipped, dataset, scale)
        lines += notes + ([''] if notes else [])
    return '\n'.join(lines)


def table_rows(rows, improvements, opt):
    """Flat rows ``dataset, scale, model, arch, metric, <columns>`` (the table.csv layout)."""
    out = []
    for (dataset, scale), block in _blocks(rows, improvements).items():
        for metric in _metrics_of(opt):
            if not any(r[metric] for r in block):
                continue
            for r in block:
                row = {'dataset': dataset, 'scale': scale, 'model': r['model'], 'arch': r['arch'], 'metric': metric}
                for d in columns(opt):
                    v = r[metric].get(d)
                    row[d] = '' if v is None else f'{v:.{CSV_DECIMALS}f}'
                out.append(row)
    return out


def write_csv(path, rows, fields):
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval='')
        writer.writeheader()
        writer.writerows(rows)


def _versions():
    return {'python': platform.python_version(), 'torch': torch.__version__, 'basicsr': basicsr.__version__,
            'numpy': np.__version__, 'machine': platform.machine(), 'processor': platform.processor() or ''}


def _json_report(opt, rows, improvements, timing, records, skipped):
    models = []
    for m in opt['models']:
        models.append({k: m.get(k) for k in ('name', 'type', 'arch', 'scale', 'path', 'param_key', 'network_g')})
    return {
        'name': opt['name'],
        'created': datetime.datetime.now().isoformat(timespec='seconds'),
        'protocol': opt['protocol'],
        'test_y_channel': opt['test_y_channel'],
        'crop_border': opt['crop_border'],
        'seed': opt['seed'],
        'degradations': opt['degradations'],
        'columns': columns(opt),
        'scales': opt['scales'],
        'metrics': _metrics_of(opt),
        'better': {m: METRIC_INFO[m].better for m in _metrics_of(opt)},
        'models': models,
        'datasets': [{k: d.get(k) for k in ('name', 'type', 'dataroot_hr', 'dataroot_lr')} for d in opt['datasets']],
        'results': rows,
        'improvement': improvements,
        'notes': [{k: r[k] for k in ('dataset', 'scale', 'model', 'degradation', 'image', 'note')}
                  for r in records if r.get('note')],
        'skipped': list(skipped or ()),
        'timing': timing,
        'versions': _versions(),
    }


def plot_block(path, dataset, scale, block, opt):
    """One panel per metric by column, one line per model, best marked; Improvement bars below each."""
    # why: the plot module imports matplotlib, only needed when plots are written
    from .report_plots import plot_block as plot
    plot(path, dataset, scale, block, opt)


def write_all(opt, records, timing, skipped=None):
    """Write table.md/.csv/.json, per_image.csv and the plots to ``opt['results_root']``."""
    out_dir = opt['results_root']
    os.makedirs(out_dir, exist_ok=True)
    rows = aggregate(records, opt)
    improvements = improvement_rows(rows, opt)
    md = format_markdown(rows, improvements, opt, records, skipped)
    with open(os.path.join(out_dir, 'table.md'), 'w', encoding='utf-8') as f:
        f.write(md + '\n')
    write_csv(os.path.join(out_dir, 'table.csv'), table_rows(rows, improvements, opt),
              ['dataset', 'scale', 'model', 'arch', 'metric'] + columns(opt))
    with open(os.path.join(out_dir, 'table.json'), 'w', encoding='utf-8') as f:
        json.dump(_json_report(opt, rows, improvements, timing, records, skipped), f, indent=1)
    fields = ['model', 'arch', 'dataset', 'scale', 'degradation', 'image'] + _metrics_of(opt)
    fields += [k for k in ('shift_y', 'shift_x', 'note') if any(k in r for r in records)]
    write_csv(os.path.join(out_dir, 'per_image.csv'), records, fields)
    plots = []
    if opt['plot'] and _metrics_of(opt):
        for (dataset, scale), block in _blocks(rows, improvements).items():
            safe = re.sub(r'[^\w.+-]', '_', str(dataset))
            path = os.path.join(out_dir, f'plot_{safe}_x{scale}.png')
            plot_block(path, dataset, scale, block, opt)
            plots.append(path)
    return {'md': md, 'rows': rows, 'improvement': improvements, 'plots': plots, 'skipped': list(skipped or ())}
