"""The tables ``scripts/reproduce.py`` can fill: which rows, from which option files, with which changes.

Every row is one training run from a paper option file in ``options/train/<arch>/<file>_x<scale>.yml``,
with at most a few keys changed (a regularizer's ``p``, ``layer_ratio``, ``num_filters``) and the
table's recipe (the EATS text's Adam β2). The EATS paper's Tables 1-7 have published numbers
(:mod:`.paper_tables`); their ``published`` rows are the paper's, and their other rows (Reflash,
AdaptiveDropout, ECO: rows the other option files can fill) are evaluated beside them without a
published counterpart. ``SwinIR-x4`` has no published table: all five option files, as written.

Choices where the sources disagree (docs/reproduce.md):

* **Dropout p.** The EATS text gives p = 0.5 for SRResNet and 0.7 for RRDB "according to Kong et
  al."; Kong's code (the option files) uses 0.7 and 0.5. The EATS tables' ``Dropout`` rows follow
  the EATS text, and their ``Reflash`` rows follow Kong's code.
* **Adam β2.** The EATS text gives 0.999, the option files 0.99 (Reflash's value). Every row of the
  EATS tables follows the EATS text, so that the rows of one table differ only in the regularizer.
"""
from dataclasses import dataclass, field

__all__ = ['RowSpec', 'TableSpec', 'TABLES', 'find_table', 'EATS_RECIPE']

#: train.optim_g.betas of the EATS text (the option files: [0.9, 0.99])
EATS_RECIPE = {('train', 'optim_g', 'betas'): [0.9, 0.999]}
#: Dropout p: (the EATS text, Kong et al.'s code) per architecture folder
DROPOUT_P = {'SRResNet': (0.5, 0.7), 'RRDB': (0.7, 0.5)}


@dataclass(frozen=True)
class RowSpec:
    """One row: the option file stem (baseline, dropout, adaptive_dropout, eats, eco), changes to its
    first regularizer, a suffix naming the variant's run, and whether the paper prints the row."""
    name: str
    file: str
    regularizer: dict = field(default_factory=dict)
    variant: str = ''
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
    recipe: dict = field(default_factory=dict)
    note: str = ''

    def row(self, name):
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"table {self.id} has no row '{name}'; rows: {', '.join(r.name for r in self.rows)}")

    @property
    def published_rows(self):
        return tuple(r.name for r in self.rows if r.published)


def _extras(arch_dir, with_dropout):
    rows = []
    if arch_dir in DROPOUT_P:
        rows.append(RowSpec('Reflash', 'dropout', {'p': DROPOUT_P[arch_dir][1]}, f'p{DROPOUT_P[arch_dir][1]}',
                            published=False))
    elif with_dropout:
        rows.append(RowSpec('Dropout', 'dropout', published=False))
    rows += [RowSpec('AdaptiveDropout', 'adaptive_dropout', published=False),
             RowSpec('ECO', 'eco', published=False)]
    return tuple(rows)


def _main_table(tid, arch_dir, scale):
    p = DROPOUT_P[arch_dir][0]
    rows = (RowSpec('Original', 'baseline'), RowSpec('Dropout', 'dropout', {'p': p}, f'p{p}'), RowSpec('EATS', 'eats'))
    return TableSpec(tid, arch_dir, scale, rows + _extras(arch_dir, False), paper=tid, recipe=EATS_RECIPE)


_RATIOS = (20, 40, 60, 80)
_FILTERS = (3, 5)

TABLES = {t.id: t for t in (
    _main_table('T1', 'SRResNet', 4),
    _main_table('T2', 'RRDB', 4),
    _main_table('T3', 'SRResNet', 2),
    _main_table('T4', 'RRDB', 2),
    TableSpec('T5', 'HAN_lite', 4, (RowSpec('Original', 'baseline'), RowSpec('EATS', 'eats'))
              + _extras('HAN_lite', True), paper='T5', paper_arch='HAN-lite', recipe=EATS_RECIPE),
    TableSpec('T6-layer-ratio', 'RRDB', 4,
              (RowSpec('Original', 'baseline'),)
              + tuple(RowSpec(f'EATS-{r}%', 'eats', {'layer_ratio': r / 100}, f'r{r}') for r in _RATIOS)
              + (RowSpec('EATS', 'eats'),),
              paper='T6-layer-ratio', recipe=EATS_RECIPE,
              note='EATS-r%: the shallowest r% of the participating layers (layer_ratio); EATS: all of them'),
    TableSpec('T7-filters', 'RRDB', 4,
              (RowSpec('Original', 'baseline'), RowSpec('EATS-1filter', 'eats'))
              + tuple(RowSpec(f'EATS-{k}filter', 'eats', {'num_filters': k}, f'k{k}') for k in _FILTERS),
              paper='T7-filters', improvement='EATS-1filter', recipe=EATS_RECIPE,
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
