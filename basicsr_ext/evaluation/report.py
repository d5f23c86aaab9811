"""Benchmark tables in the papers' layout: md, csv, json, per-image csv, one plot per dataset.

Layout of a block (one per dataset and scale): one row per model, one column per
degradation (clean, blur, noise, jpeg, b+n, b+j, n+j, b+n+j as in the EATS tables), and an
Improvement row = chosen model − baseline, cell by cell, computed from unrounded means.
"""
import csv
import datetime
import json
import os
import platform
import re

import basicsr
import numpy as np
import torch

__all__ = ['METRICS', 'aggregate', 'improvement_rows', 'format_markdown', 'write_csv', 'write_all', 'plot_block']

METRICS = ('psnr', 'ssim')
_LABEL = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM'}
_DECIMALS_MD = {'psnr': 2, 'ssim': 4}
CSV_DECIMALS = 4
IMPROVEMENT = 'Improvement'


def _metrics_of(opt):
    return [m for m in METRICS if opt['metrics'][m]]


def aggregate(records, opt):
    """Mean of each metric per (dataset, scale, model, degradation), in option order.

    Returns:
        list of dicts ``{dataset, scale, model, arch, n_images, <metric>: {degradation: mean}}``.
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
                       'n_images': len({r['image'] for r in recs})}
                for metric in _metrics_of(opt):
                    row[metric] = {
                        deg: float(np.mean([r[metric] for r in recs if r['degradation'] == deg]))
                        for deg in opt['degradations'] if any(r['degradation'] == deg for r in recs)
                    }
                rows.append(row)
    return rows


def improvement_rows(rows, opt):
    """``improvement`` − ``baseline`` for every block holding both."""
    if not opt.get('baseline') or not opt.get('improvement'):
        return []
    index = {(r['dataset'], r['scale'], r['model']): r for r in rows}
    out = []
    for key in dict.fromkeys((r['dataset'], r['scale']) for r in rows):
        base, new = index.get((*key, opt['baseline'])), index.get((*key, opt['improvement']))
        if base is None or new is None:
            continue
        row = {'dataset': key[0], 'scale': key[1], 'model': IMPROVEMENT, 'arch': new['arch'],
               'of': opt['improvement'], 'baseline': opt['baseline']}
        for metric in _metrics_of(opt):
            row[metric] = {d: new[metric][d] - base[metric][d] for d in new[metric] if d in base[metric]}
        out.append(row)
    return out


def _blocks(rows, improvements):
    blocks = {}
    for r in rows + improvements:
        blocks.setdefault((r['dataset'], r['scale']), []).append(r)
    return blocks


def _protocol_line(opt):
    what = {'reflash': 'reflash (PIL bicubic LR + test degradations, as Reflash Dropout / AD / EATS)',
            'matlab': 'matlab (MATLAB-style imresize LR, as ECO / classical SR)'}[opt['protocol']]
    crop = 'scale' if opt['crop_border'] is None else opt['crop_border']
    channel = 'Y channel' if opt['test_y_channel'] else 'RGB'
    return (f"protocol: {what}; metrics on {channel}, crop_border = {crop}, uint8-rounded outputs "
            f"(basicsr calculate_psnr / calculate_ssim); noise seed {opt['seed']}")


def format_markdown(rows, improvements, opt):
    """The whole report as Markdown: per dataset and scale, one table per metric."""
    degs = opt['degradations']
    lines = [f"# {opt['name']}", '', _protocol_line(opt), '']
    for (dataset, scale), block in _blocks(rows, improvements).items():
        n = max(r.get('n_images', 0) for r in block)
        lines += [f'## {dataset} ×{scale} ({n} images)', '']
        for metric in _metrics_of(opt):
            dec = _DECIMALS_MD[metric]
            models = [r for r in block if r['model'] != IMPROVEMENT]
            best = {d: max((r[metric].get(d, -np.inf) for r in models), default=None) for d in degs}
            lines += [f'{_LABEL[metric]}', '', '| Model | ' + ' | '.join(degs) + ' |',
                      '|---|' + '---:|' * len(degs)]
            for r in block:
                cells = []
                for d in degs:
                    v = r[metric].get(d)
                    if v is None:
                        cells.append('–')
                    elif r['model'] == IMPROVEMENT:
                        cells.append(f'{v:+.{dec}f}')
                    else:
                        text = f'{v:.{dec}f}'
                        cells.append(f'**{text}**' if len(models) > 1 and v == best[d] else text)
                label = (f"**{IMPROVEMENT}** ({r['of']} − {r['baseline']})" if r['model'] == IMPROVEMENT else
                         f"{r['model']} ({r['arch']})" if r['arch'] not in (r['model'], 'Bicubic') else r['model'])
                lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
            lines.append('')
    return '\n'.join(lines)


def table_rows(rows, improvements, opt):
    """Flat rows ``dataset, scale, model, arch, metric, <degradations>`` (the table.csv layout)."""
    out = []
    for (dataset, scale), block in _blocks(rows, improvements).items():
        for metric in _metrics_of(opt):
            for r in block:
                row = {'dataset': dataset, 'scale': scale, 'model': r['model'], 'arch': r['arch'], 'metric': metric}
                for d in opt['degradations']:
                    v = r[metric].get(d)
                    row[d] = '' if v is None else f'{v:.{CSV_DECIMALS}f}'
                out.append(row)
    return out


def write_csv(path, rows, fields):
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _versions():
    return {'python': platform.python_version(), 'torch': torch.__version__, 'basicsr': basicsr.__version__,
            'numpy': np.__version__, 'machine': platform.machine(), 'processor': platform.processor() or ''}


def _json_report(opt, rows, improvements, timing):
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
        'scales': opt['scales'],
        'metrics': _metrics_of(opt),
        'models': models,
        'datasets': [{'name': d['name'], 'dataroot_hr': d['dataroot_hr']} for d in opt['datasets']],
        'results': rows,
        'improvement': improvements,
        'timing': timing,
        'versions': _versions(),
    }


def plot_block(path, dataset, scale, block, opt):
    """PSNR by degradation, one line per model; below it, the Improvement row as bars if there is one."""
    # why: optional heavy dependency (matplotlib), only needed when plots are written
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # why: as above

    metric = 'psnr' if opt['metrics']['psnr'] else 'ssim'
    degs = opt['degradations']
    models = [r for r in block if r['model'] != IMPROVEMENT]
    imp = next((r for r in block if r['model'] == IMPROVEMENT), None)
    fig = Figure(figsize=(max(6.0, 0.9 * len(degs) + 2), 6.5 if imp else 4.2), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1]) if imp else [fig.subplots()]
    x = np.arange(len(degs))
    ax = axes[0]
    markers = 'osD^v<>ph*'
    for k, r in enumerate(models):
        y = [r[metric].get(d, np.nan) for d in degs]
        ax.plot(x, y, marker=markers[k % len(markers)], linewidth=1.2, markersize=6, label=r['model'])
    ax.set_ylabel(_LABEL[metric] + (' on Y' if opt['test_y_channel'] else ', RGB'))
    ax.set_title(f'{dataset} ×{scale}: {_LABEL[metric].split(" ")[0]} by degradation ({opt["protocol"]} protocol)')
    ax.grid(True, axis='y', alpha=0.3)
    ax.legend(loc='best', fontsize=9, frameon=True, title='Model')
    if imp:
        ax2 = axes[1]
        vals = [imp[metric].get(d, np.nan) for d in degs]
        colors = ['tab:green' if (v or 0) >= 0 else 'tab:red' for v in vals]
        bars = ax2.bar(x, vals, color=colors, width=0.6)
        ax2.bar_label(bars, labels=[f'{v:+.2f}' if metric == 'psnr' else f'{v:+.4f}' for v in vals], fontsize=8)
        ax2.axhline(0, color='black', linewidth=0.8)
        unit = ' (dB)' if metric == 'psnr' else ''
        ax2.set_ylabel(f'{IMPROVEMENT}{unit}\n{imp["of"]} − {imp["baseline"]}')
        ax2.margins(y=0.25)
        ax2.grid(True, axis='y', alpha=0.3)
    axes[-1].set_xticks(x, degs)
    axes[-1].set_xlabel('Degradation')
    fig.savefig(path, dpi=120)


def write_all(opt, records, timing):
    """Write table.md/.csv/.json, per_image.csv and the plots to ``opt['results_root']``."""
    out_dir = opt['results_root']
    os.makedirs(out_dir, exist_ok=True)
    rows = aggregate(records, opt)
    improvements = improvement_rows(rows, opt)
    md = format_markdown(rows, improvements, opt)
    with open(os.path.join(out_dir, 'table.md'), 'w', encoding='utf-8') as f:
        f.write(md + '\n')
    write_csv(os.path.join(out_dir, 'table.csv'), table_rows(rows, improvements, opt),
              ['dataset', 'scale', 'model', 'arch', 'metric'] + list(opt['degradations']))
    with open(os.path.join(out_dir, 'table.json'), 'w', encoding='utf-8') as f:
        json.dump(_json_report(opt, rows, improvements, timing), f, indent=1)
    fields = ['model', 'arch', 'dataset', 'scale', 'degradation', 'image'] + _metrics_of(opt)
    write_csv(os.path.join(out_dir, 'per_image.csv'), records, fields)
    plots = []
    if opt['plot'] and _metrics_of(opt):
        for (dataset, scale), block in _blocks(rows, improvements).items():
            safe = re.sub(r'[^\w.+-]', '_', str(dataset))
            path = os.path.join(out_dir, f'plot_{safe}_x{scale}.png')
            plot_block(path, dataset, scale, block, opt)
            plots.append(path)
    return {'md': md, 'rows': rows, 'improvement': improvements, 'plots': plots}
