"""The tables ``scripts/reproduce.py`` can fill: which rows, from which option files.

Every row is one training run of a paper option file, ``options/train/<arch>/<file>_x<scale>.yml``,
as written (docs/regularizers.md says which source each file follows). The EATS paper's Tables 1-7
have published numbers (:mod:`.paper_tables`); their ``published`` rows are the paper's, and their
other rows (Reflash, AdaptiveDropout, ECO: rows the other option files can fill) are evaluated beside
them without a published counterpart. ``SwinIR-x4`` has no published table: all five SwinIR files.

Where the sources disagree, the files decide (docs/regularizers.md): the EATS tables' ``Dropout``
rows (``dropout_x*``) take the EATS text's p (SRResNet 0.5, RRDB 0.7) and Adam β2 0.999 like the
other EATS-table files, while ``Reflash`` (``reflash_dropout_x*``) and ``AdaptiveDropout`` follow
their authors' code (Kong's p 0.7 / 0.5, β2 0.99). T6 and T7 rows are the ablation files
``eats_ratio<r>_x4`` (``layer_ratio``) and ``eats_filters<k>_x4`` (``num_filters``, k filters
erased in one pass).
"""
from dataclasses import dataclass

__all__ = ['RowSpec', 'TableSpec', 'TABLES', 'find_table']


@dataclass(frozen=True)
class RowSpec:
    """One row: the option file stem (baseline, dropout, eats, eats_ratio20, ...) and whether the
    paper prints the row."""
    name: str
    file: str
    published: bool = True


@dataclass(frozen=True)
class TableSpec:
    id: str
    arch_dir: str
    scale: int
    rows: tuple
    paper: str = None          # the id in paper_tables, or None
    paper_arch: str = None     # the paper's arch name for our registered arch, where not built in
    baseline: str = 'Original'
    improvement: str = 'EATS'
    note: str = ''

    def row(self, name):
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"table {self.id} has no row '{name}'; rows: {', '.join(r.name for r in self.rows)}")

    @property
    def published_rows(self):
        return tuple(r.name for r in self.rows if r.published)


def _extras(arch_dir):
    first = RowSpec('Reflash', 'reflash_dropout', published=False) if arch_dir in ('SRResNet', 'RRDB') else \
        RowSpec('Dropout', 'dropout', published=False)
    return (first, RowSpec('AdaptiveDropout', 'adaptive_dropout', published=False),
            RowSpec('ECO', 'eco', published=False))


def _main_table(tid, arch_dir, scale):
    rows = (RowSpec('Original', 'baseline'), RowSpec('Dropout', 'dropout'), RowSpec('EATS', 'eats'))
    return TableSpec(tid, arch_dir, scale, rows + _extras(arch_dir), paper=tid)


_RATIOS = (20, 40, 60, 80)
_FILTERS = (3, 5)

TABLES = {t.id: t for t in (
    _main_table('T1', 'SRResNet', 4),
    _main_table('T2', 'RRDB', 4),
    _main_table('T3', 'SRResNet', 2),
    _main_table('T4', 'RRDB', 2),
    TableSpec('T5', 'HAN_lite', 4, (RowSpec('Original', 'baseline'), RowSpec('EATS', 'eats')) + _extras('HAN_lite'),
              paper='T5', paper_arch='HAN-lite'),
    TableSpec('T6-layer-ratio', 'RRDB', 4,
              (RowSpec('Original', 'baseline'),) + tuple(RowSpec(f'EATS-{r}%', f'eats_ratio{r}') for r in _RATIOS)
              + (RowSpec('EATS', 'eats'),), paper='T6-layer-ratio',
              note='EATS-r%: the shallowest r% of the participating layers (layer_ratio); EATS: all of them'),
    TableSpec('T7-filters', 'RRDB', 4,
              (RowSpec('Original', 'baseline'), RowSpec('EATS-1filter', 'eats'))
              + tuple(RowSpec(f'EATS-{k}filter', f'eats_filters{k}') for k in _FILTERS),
              paper='T7-filters', improvement='EATS-1filter',
              note='EATS-kfilter: k filters erased together in the one disrupted pass (num_filters: k)'),
    TableSpec('SwinIR-x4', 'SwinIR', 4,
              tuple(RowSpec(n, f) for n, f in (('Original', 'baseline'), ('Dropout', 'dropout'),
                                               ('AdaptiveDropout', 'adaptive_dropout'), ('EATS', 'eats'),
                                               ('ECO', 'eco'))),
              note='no published table: every SwinIR option file as written'),
)}

_ALIASES = {'T6': 'T6-layer-ratio', 'T7': 'T7-filters', 'SWINIR': 'SwinIR-x4'}


def find_table(name):
    """The :class:`TableSpec` of ``name`` (case-insensitive; T6 and T7 are short for the ablations)."""
    key = _ALIASES.get(str(name).upper(), str(name))
    for tid, spec in TABLES.items():
        if tid.lower() == key.lower():
            return spec
    raise KeyError(f"no table '{name}'; tables: {', '.join(TABLES)} (T6, T7 for short)")
