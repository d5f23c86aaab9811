"""Order agreement: does our table rank its rows as the paper's does, cell by cell?

For every pair of rows (A, B) and every cell (dataset, degradation) that both tables have, the sign
of A − B in our table is compared with its sign in the paper's. A pair is oriented the way the paper
ranks it in most cells, and reported as "A > B in 37/40 cells (paper 40/40)": our count of cells
with A above B, and the paper's. Agreement counts the cells where the two signs are the same; a
cell where the paper prints A = B has no order to agree with and is left out (``paper_ties``), while
our own tie against a paper order counts as a disagreement.
"""
import csv
import itertools

__all__ = ['order_agreement', 'format_agreement', 'write_agreement_csv']


def _sign(x):
    return (x > 0) - (x < 0)


def order_agreement(ours, paper, rows=None):
    """Compare the order of every pair of rows.

    Args:
        ours, paper: ``{row: {cell: value}}``; a cell is any hashable key, e.g. (dataset, degradation).
        rows: the rows to pair, in table order (default: the rows both tables have, in ``ours`` order).

    Returns:
        dict with ``pairs`` (one dict per pair: ``a``, ``b``, ``n`` cells compared, ``ours`` and
        ``paper`` = cells with a > b, ``agree``, ``paper_ties``), ``cells`` (one dict per compared cell
        and pair: a, b, cell, ours_diff, paper_diff, agree), ``agree`` and ``n`` over all pairs and
        ``fraction`` (None when nothing could be compared).
    """
    rows = [r for r in (rows or ours) if r in ours and r in paper]
    pairs, cells = [], []
    for x, y in itertools.combinations(rows, 2):
        shared = [c for c in ours[x] if c in ours[y] and c in paper[x] and c in paper[y]]
        above = sum(paper[x][c] > paper[y][c] for c in shared)
        below = sum(paper[x][c] < paper[y][c] for c in shared)
        a, b = (x, y) if above >= below else (y, x)
        pair = {'a': a, 'b': b, 'n': 0, 'ours': 0, 'paper': 0, 'agree': 0, 'paper_ties': 0}
        for c in shared:
            p_diff, o_diff = paper[a][c] - paper[b][c], ours[a][c] - ours[b][c]
            if p_diff == 0:
                pair['paper_ties'] += 1
                continue
            agree = _sign(o_diff) == _sign(p_diff)
            pair['n'] += 1
            pair['ours'] += o_diff > 0
            pair['paper'] += p_diff > 0
            pair['agree'] += agree
            cells.append({'a': a, 'b': b, 'cell': c, 'ours_diff': o_diff, 'paper_diff': p_diff, 'agree': agree})
        pairs.append(pair)
    n = sum(p['n'] for p in pairs)
    agree = sum(p['agree'] for p in pairs)
    return {'pairs': pairs, 'cells': cells, 'n': n, 'agree': agree, 'fraction': agree / n if n else None}


def format_agreement(result):
    """Markdown lines: the fraction over all pairs and cells, then one line per pair."""
    if not result['n']:
        return ['No cell could be compared with the paper (no published row, or no shared cell).']
    lines = [f"Our differences have the paper's sign in **{result['agree']}/{result['n']}** cell pairs "
             f"({100 * result['fraction']:.0f} %).", '']
    for p in result['pairs']:
        if not p['n']:
            continue
        ties = f"; {p['paper_ties']} cell(s) tied in the paper, left out" if p['paper_ties'] else ''
        lines.append(f"- {p['a']} > {p['b']} in {p['ours']}/{p['n']} cells (paper {p['paper']}/{p['n']}); "
                     f"same sign in {p['agree']}/{p['n']}{ties}")
    return lines


def write_agreement_csv(path, result, cell_names=('dataset', 'degradation')):
    """One line per compared cell and pair; tuple cells are split into ``cell_names`` columns."""
    fields = ['a', 'b', *cell_names, 'ours_diff', 'paper_diff', 'agree']
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for c in result['cells']:
            key = c['cell'] if isinstance(c['cell'], tuple) else (c['cell'],)
            writer.writerow({'a': c['a'], 'b': c['b'], **dict(zip(cell_names, key)),
                             'ours_diff': f"{c['ours_diff']:+.4f}", 'paper_diff': f"{c['paper_diff']:+.4f}",
                             'agree': int(c['agree'])})
