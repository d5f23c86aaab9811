"""Our benchmark table beside a published one, with the difference in every cell both have.

The published CSV has the columns ``table, arch, scale, dataset, config, <degradations>``
(one row per model configuration, as printed); ours is ``table.csv`` written by
``test.py`` (``dataset, scale, model, arch, metric, <degradations>``). Cells are matched on
(arch, scale, dataset, config, degradation); our model names, arch names and dataset names
are translated to the paper's through explicit mappings, since only the user knows which
checkpoint is "Original", "Dropout" or "EATS".

Without a path, the published numbers shipped in :mod:`.paper_tables` are used, and cells flagged
there as misprinted carry their flag ('known' or 'suspected') into the comparison.
"""
import csv
import os
import statistics

from ..data.eval_degradations import parse_degradation
from . import paper_tables

__all__ = ['DEFAULT_ARCHS', 'read_csv', 'compare', 'format_comparison', 'compare_files', 'compare_paths',
           'write_comparison']

# our registered arch -> the name the papers print
DEFAULT_ARCHS = {'MSRResNet': 'SRResNet', 'RRDBNetAnyScale': 'RRDBNet'}
PAPER_KEYS = ('table', 'arch', 'scale', 'dataset', 'config')
OUR_KEYS = ('dataset', 'scale', 'model', 'arch', 'metric')


def read_csv(path):
    """Rows of a CSV as dicts, and its columns; a missing file is a FileNotFoundError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file '{path}' does not exist")
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return rows, list(reader.fieldnames or [])


def _canonical(col):
    try:
        return parse_degradation(col.strip()).name
    except (ValueError, TypeError):
        return col.strip()


def _degradations(columns, keys):
    return {col: _canonical(col) for col in columns if col not in keys}


def _number(text):
    text = (text or '').strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _check_columns(columns, needed, path):
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"'{path}': missing column(s) {', '.join(missing)} (has: {', '.join(columns)})")


def _flag(flags, table, dataset, config, degradation):
    m = paper_tables.misprint(table, dataset, config, degradation) if flags else None
    return '' if m is None else f'{m.status} misprint: {m.note}'


def compare(ours, our_columns, paper, paper_columns, table=None, configs=None, archs=None, datasets=None,
            metric='psnr', flags=False):
    """Match our rows with the published ones.

    Args:
        ours, paper: rows from :func:`read_csv`; ``*_columns`` their headers.
        table: only this table of the paper CSV (e.g. 'T1'); otherwise, for a key printed in
            several tables, the first one in the file is used and the others are listed.
        configs: our model name -> paper config (default: the same name; 'Improvement' maps
            to 'Improvement').
        archs: our arch -> paper arch (on top of :data:`DEFAULT_ARCHS`).
        datasets: our dataset name -> paper dataset name.
        metric: which of our metric rows to use ('psnr'; the papers print PSNR).
        flags: look up the misprint flags of :mod:`.paper_tables` (for the shipped numbers).

    Returns:
        dict with ``cells`` (one per matched cell: table, arch, scale, dataset, config, model,
        degradation, ours, paper, diff), ``degradations`` (matched columns in our order),
        ``unmatched`` (our rows without a published row) and ``also_in`` (key -> other tables). A
        cell's ``flag`` is '' or the misprint note of its published value.
    """
    configs, datasets = dict(configs or {}), dict(datasets or {})
    arch_map = {**DEFAULT_ARCHS, **(archs or {})}
    paper_degs = _degradations(paper_columns, PAPER_KEYS)
    our_degs = _degradations(our_columns, OUR_KEYS)
    index, also_in = {}, {}
    for row in paper:
        if table is not None and row.get('table') != table:
            continue
        key = (row['arch'], int(float(row['scale'])), row['dataset'], row['config'])
        if key in index:
            if index[key].get('table') != row.get('table'):
                also_in.setdefault(key, []).append(row.get('table'))
            continue
        index[key] = row
    if table is not None and not index:
        tables = sorted({r.get('table') for r in paper})
        raise ValueError(f"no rows of table '{table}' in the paper CSV (tables: {', '.join(map(str, tables))})")
    cells, unmatched, order = [], [], []
    for row in ours:
        if row.get('metric', metric) != metric:
            continue
        key = (arch_map.get(row['arch'], row['arch']), int(float(row['scale'])),
               datasets.get(row['dataset'], row['dataset']), configs.get(row['model'], row['model']))
        pub = index.get(key)
        if pub is None:
            unmatched.append(row)
            continue
        for col, deg in our_degs.items():
            ours_v = _number(row.get(col))
            pcol = next((c for c, d in paper_degs.items() if d == deg), None)
            paper_v = _number(pub.get(pcol)) if pcol else None
            if ours_v is None or paper_v is None:
                continue
            if deg not in order:
                order.append(deg)
            cells.append({'table': pub.get('table', ''), 'arch': key[0], 'scale': key[1], 'dataset': key[2],
                          'config': key[3], 'model': row['model'], 'degradation': deg, 'ours': ours_v,
                          'paper': paper_v, 'diff': ours_v - paper_v,
                          'flag': _flag(flags, pub.get('table', ''), key[2], key[3], deg)})
    return {'cells': cells, 'degradations': order, 'unmatched': unmatched, 'also_in': also_in, 'metric': metric}


def format_comparison(result, decimals=2):
    """Markdown: per (table, arch, scale, dataset) a block of ours / paper / Δ rows per config, then a summary."""
    degs = result['degradations']
    blocks = {}
    for c in result['cells']:
        blocks.setdefault((c['table'], c['arch'], c['scale'], c['dataset']), {}).setdefault(
            (c['config'], c['model']), {})[c['degradation']] = c
    lines = [f"# Ours vs published ({result['metric'].upper()})", '']
    if not blocks:
        lines.append('No cell matched. Check the config/arch/dataset mappings and --table.')
    for (table, arch, scale, dataset), configs in blocks.items():
        lines += [f'## {table} {arch} ×{scale} {dataset}', '', '| Config | | ' + ' | '.join(degs) + ' |',
                  '|---|---|' + '---:|' * len(degs)]
        for (config, model), cells in configs.items():
            label = config if config == model else f'{config} (ours: {model})'
            for kind, fmt in (('ours', f'.{decimals}f'), ('paper', f'.{decimals}f'), ('Δ', f'+.{decimals}f')):
                key = {'Δ': 'diff'}.get(kind, kind)
                vals = [format(cells[d][key], fmt) + ('†' if kind == 'paper' and cells[d].get('flag') else '')
                        if d in cells else '–' for d in degs]
                lines.append(f"| {label if kind == 'ours' else ''} | {kind} | " + ' | '.join(vals) + ' |')
        key_any = next(iter((arch, scale, dataset, cfg) for cfg, _ in configs))
        if key_any in result['also_in']:
            lines.append(f"\n(also printed in {', '.join(result['also_in'][key_any])})")
        lines.append('')
    diffs = [c['diff'] for c in result['cells'] if c['config'] != 'Improvement']
    if diffs:
        lines.append(f'{len(result["cells"])} cells matched; model rows: mean Δ {statistics.fmean(diffs):+.3f}, '
                     f'mean |Δ| {statistics.fmean(abs(d) for d in diffs):.3f}, '
                     f'max |Δ| {max(abs(d) for d in diffs):.3f} dB')
    flagged = [c for c in result['cells'] if c.get('flag')]
    if flagged:
        lines.append('† published value flagged as misprinted:')
        for c in flagged:
            lines.append(f"- {c['table']} {c['dataset']} {c['config']} {c['degradation']} "
                         f"({c['paper']:.4f}): {c['flag']}")
    if result['unmatched']:
        names = sorted({f"{r['model']} ({r['arch']}, {r['dataset']} ×{r['scale']})" for r in result['unmatched']})
        lines.append('No published row for: ' + '; '.join(names))
    return '\n'.join(lines)


def compare_paths(ours_csv, paper_csv=None, table=None, configs=None, archs=None, datasets=None, metric='psnr'):
    """:func:`compare` on our table.csv and a published CSV (None: the shipped numbers, flags included)."""
    ours, our_cols = read_csv(ours_csv)
    paper_csv = paper_tables.PUBLISHED_CSV if paper_csv is None else paper_csv
    paper, paper_cols = read_csv(paper_csv)
    _check_columns(our_cols, ('dataset', 'scale', 'model', 'arch'), ours_csv)
    _check_columns(paper_cols, ('arch', 'scale', 'dataset', 'config'), paper_csv)
    return compare(ours, our_cols, paper, paper_cols, table, configs, archs, datasets, metric,
                   flags=paper_tables.is_packaged(paper_csv))


def compare_files(ours_csv, paper_csv=None, table=None, configs=None, archs=None, datasets=None, metric='psnr',
                  out_prefix=None, decimals=2):
    """Compare our table.csv with a published CSV (None: the shipped numbers); write ``<out_prefix>.md``
    and ``.csv`` if given; return the Markdown."""
    result = compare_paths(ours_csv, paper_csv, table, configs, archs, datasets, metric)
    text = format_comparison(result, decimals)
    if out_prefix:
        write_comparison(result, text, out_prefix)
    return text


def write_comparison(result, text, out_prefix):
    """``<out_prefix>.md`` (the Markdown) and ``<out_prefix>.csv`` (one line per matched cell)."""
    with open(f'{out_prefix}.md', 'w', encoding='utf-8') as f:
        f.write(text + '\n')
    fields = ['table', 'arch', 'scale', 'dataset', 'config', 'model', 'degradation', 'ours', 'paper', 'diff', 'flag']
    with open(f'{out_prefix}.csv', 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for c in result['cells']:
            writer.writerow({**c, **{k: f'{c[k]:.4f}' for k in ('ours', 'paper', 'diff')}})
