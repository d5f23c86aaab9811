"""The published numbers, shipped with the package: the EATS paper's Tables 1-7 (PSNR, dB).

``published.csv`` holds the values as printed (columns ``table, arch, scale, dataset, config`` and the
eight degradations); ``tables.json`` says where each table comes from (source, the paper's table
number, a caption) and flags the cells known or suspected to be misprinted. Nothing is corrected in
the CSV: :func:`value` returns the printed number, or with ``corrected=True`` the likely one where a
known misprint has an evident correction.

    >>> from basicsr_ext.evaluation import paper_tables
    >>> paper_tables.value('T1', 'Set5', 'EATS', 'clean')
    25.7532
    >>> paper_tables.misprint('T2', 'Manga109', 'EATS', 'clean') is None
    True
"""
import csv
import functools
import json
import os
from dataclasses import dataclass

__all__ = ['PUBLISHED_CSV', 'DEGRADATION_COLUMNS', 'TableInfo', 'Misprint', 'rows', 'tables', 'table', 'source',
           'value', 'block', 'misprints', 'misprint', 'is_packaged']

_HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED_CSV = os.path.join(_HERE, 'published.csv')
_META = os.path.join(_HERE, 'tables.json')
KEY_COLUMNS = ('table', 'arch', 'scale', 'dataset', 'config')
DEGRADATION_COLUMNS = ('clean', 'blur', 'noise', 'jpeg', 'b+n', 'b+j', 'n+j', 'b+n+j')


@dataclass(frozen=True)
class TableInfo:
    """One published table: its id in the CSV, the paper's number, what it shows, and its rows."""
    id: str
    source: str
    paper_table: str
    caption: str
    arch: str
    scale: int
    metric: str
    configs: tuple
    datasets: tuple


@dataclass(frozen=True)
class Misprint:
    """A flagged cell. ``config`` '*' flags the whole column of a block; ``likely`` is None when unknown."""
    table: str
    dataset: str
    config: str
    degradation: str
    status: str  # 'known' or 'suspected'
    printed: float
    likely: float
    note: str

    def covers(self, table, dataset, config, degradation):
        return (self.table, self.dataset, self.degradation) == (table, dataset, degradation) and \
            self.config in ('*', config)


@functools.lru_cache(maxsize=1)
def _meta():
    with open(_META, encoding='utf-8') as f:
        return json.load(f)


@functools.lru_cache(maxsize=1)
def _rows():
    with open(PUBLISHED_CSV, newline='', encoding='utf-8') as f:
        return tuple(csv.DictReader(f))


def rows():
    """The published rows as dicts of strings (the CSV as printed), a fresh list each call."""
    return [dict(r) for r in _rows()]


def is_packaged(path):
    """True when ``path`` is None (the default) or names the shipped CSV."""
    return path is None or os.path.realpath(str(path)) == os.path.realpath(PUBLISHED_CSV)


@functools.lru_cache(maxsize=1)
def tables():
    """Table id -> :class:`TableInfo`, in the order of the CSV."""
    meta = _meta()['tables']
    out = {}
    for tid in dict.fromkeys(r['table'] for r in _rows()):
        own = [r for r in _rows() if r['table'] == tid]
        info = meta[tid]
        out[tid] = TableInfo(tid, info['source'], info['paper_table'], info['caption'], info['arch'],
                             int(info['scale']), info['metric'], tuple(dict.fromkeys(r['config'] for r in own)),
                             tuple(dict.fromkeys(r['dataset'] for r in own)))
    return out


def table(table_id):
    """The :class:`TableInfo` of ``table_id``; an unknown id is a KeyError listing the known ones."""
    known = tables()
    if table_id not in known:
        raise KeyError(f"no published table '{table_id}'; the package ships {', '.join(known)}")
    return known[table_id]


def source(table_id):
    """The source record (title, where, transcription, protocol) of a table."""
    return dict(_meta()['sources'][table(table_id).source])


@functools.lru_cache(maxsize=1)
def misprints():
    """Every flagged cell, as :class:`Misprint` records."""
    return tuple(Misprint(m['table'], m['dataset'], m['config'], m['degradation'], m['status'], m['printed'],
                          m['likely'], m['note']) for m in _meta()['misprints'])


def misprint(table_id, dataset, config, degradation):
    """The :class:`Misprint` flagging this cell, or None."""
    return next((m for m in misprints() if m.covers(table_id, dataset, config, degradation)), None)


def value(table_id, dataset, config, degradation, corrected=False):
    """The printed value of one cell (float); with ``corrected``, a known misprint's likely value instead.

    Raises KeyError naming what is missing (table, row or degradation).
    """
    table(table_id)
    for r in _rows():
        if (r['table'], r['dataset'], r['config']) == (table_id, dataset, config):
            if degradation not in DEGRADATION_COLUMNS:
                raise KeyError(f"no degradation '{degradation}'; the tables have {', '.join(DEGRADATION_COLUMNS)}")
            flag = misprint(table_id, dataset, config, degradation) if corrected else None
            if flag is not None and flag.status == 'known' and flag.likely is not None:
                return float(flag.likely)
            return float(r[degradation])
    raise KeyError(f"table '{table_id}' has no row ({dataset}, {config}); rows: "
                   f"{', '.join(table(table_id).datasets)} × {', '.join(table(table_id).configs)}")


def block(table_id, corrected=False):
    """``{config: {dataset: {degradation: value}}}`` of one table (Improvement included)."""
    info = table(table_id)
    return {c: {d: {g: value(table_id, d, c, g, corrected) for g in DEGRADATION_COLUMNS} for d in info.datasets}
            for c in info.configs}
