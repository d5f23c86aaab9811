"""The published numbers shipped in the package: spot-checked cells, internal consistency, misprint flags."""
import csv
import shutil
import subprocess
import sys
import zipfile

import pytest

from basicsr_ext.evaluation import paper_tables
from basicsr_ext.evaluation.paper_compare import compare_files
from conftest import REPO, load_script

DEGS = paper_tables.DEGRADATION_COLUMNS


@pytest.mark.parametrize('table, dataset, config, deg, printed', [
    ('T1', 'Set5', 'EATS', 'clean', 25.7532),
    ('T1', 'Manga109', 'Original', 'b+n+j', 18.6365),
    ('T2', 'Urban100', 'Dropout', 'jpeg', 21.1218),
    ('T3', 'BSD100', 'Improvement', 'noise', 0.1312),
    ('T4', 'Manga109', 'Improvement', 'b+n+j', 0.0784),
    ('T5', 'Set14', 'EATS', 'b+j', 22.2772),
    ('T6-layer-ratio', 'BSD100', 'EATS-60%', 'noise', 21.4363),
    ('T7-filters', 'Urban100', 'EATS-5filter', 'n+j', 20.9068),
])
def test_spot_checked_cells(table, dataset, config, deg, printed):
    assert paper_tables.value(table, dataset, config, deg) == printed


def test_tables_have_source_caption_and_the_papers_layout():
    tables = paper_tables.tables()
    assert list(tables) == ['T1', 'T2', 'T3', 'T4', 'T5', 'T6-layer-ratio', 'T7-filters']
    t1 = tables['T1']
    assert (t1.arch, t1.scale, t1.paper_table) == ('SRResNet', 4, 'Table 1')
    assert t1.configs == ('Original', 'Dropout', 'EATS', 'Improvement')
    assert t1.datasets == ('Set5', 'Set14', 'BSD100', 'Urban100', 'Manga109')
    assert tables['T6-layer-ratio'].configs == ('Original', 'EATS-20%', 'EATS-40%', 'EATS-60%', 'EATS-80%', 'EATS')
    assert (tables['T4'].arch, tables['T4'].scale) == ('RRDBNet', 2)
    for t in tables.values():
        assert t.caption and t.metric == 'PSNR (dB)'
        src = paper_tables.source(t.id)
        assert 'my0RqY48xz' in src['where'] and src['title'].startswith('Awakening Collective Wisdom')
    with pytest.raises(KeyError, match="no published table 'T9'; the package ships T1, T2"):
        paper_tables.table('T9')
    with pytest.raises(KeyError, match=r"table 'T5' has no row \(Set5, Dropout\)"):
        paper_tables.value('T5', 'Set5', 'Dropout', 'clean')


def test_the_shipped_csv_is_the_reference_transcription(shared_datasets):
    reference = shared_datasets.parent / 'docs' / 'paper_tables.csv'
    if not reference.is_file():
        pytest.skip(f'{reference} not found')
    assert reference.read_bytes() == open(paper_tables.PUBLISHED_CSV, 'rb').read()


def test_every_improvement_row_is_eats_minus_original():
    """An independent check of the transcription: the printed Improvement equals the printed difference."""
    for t in paper_tables.tables().values():
        if 'Improvement' not in t.configs:
            continue
        for d in t.datasets:
            for g in DEGS:
                diff = paper_tables.value(t.id, d, 'EATS', g) - paper_tables.value(t.id, d, 'Original', g)
                assert paper_tables.value(t.id, d, 'Improvement', g) == pytest.approx(diff, abs=6e-5), (t.id, d, g)


def test_known_misprints_are_flagged_with_the_likely_value():
    for table, config in (('T6-layer-ratio', 'EATS'), ('T7-filters', 'EATS-1filter')):
        flag = paper_tables.misprint(table, 'Manga109', config, 'clean')
        assert flag.status == 'known' and flag.printed == 19.922 and flag.likely == 18.922
        assert paper_tables.value(table, 'Manga109', config, 'clean') == 19.922  # printed, never altered
        assert paper_tables.value(table, 'Manga109', config, 'clean', corrected=True) == \
            paper_tables.value('T2', 'Manga109', 'EATS', 'clean') == 18.922
        assert paper_tables.misprint(table, 'Manga109', config, 'blur') is None
    for config in paper_tables.table('T3').configs:
        row = [paper_tables.value('T3', 'Set5', config, g) for g in ('clean', 'blur')]
        assert row[0] == row[1]
        for g in ('clean', 'blur'):
            flag = paper_tables.misprint('T3', 'Set5', config, g)
            assert flag.status == 'known' and flag.likely is None and 'identical clean and blur' in flag.note
            assert paper_tables.value('T3', 'Set5', config, g, corrected=True) == row[0]  # no evident correction
    assert paper_tables.misprint('T3', 'Set14', 'EATS', 'blur') is None
    assert paper_tables.misprint('T2', 'Manga109', 'EATS', 'clean') is None


def test_every_duplicated_column_and_every_cross_table_disagreement_is_flagged():
    """Scan the data independently: rows shared between T2, T6 and T7 must agree unless flagged, and a
    block whose clean and blur columns coincide in every row must be flagged."""
    same_model = {('T6-layer-ratio', 'Original'): 'Original', ('T6-layer-ratio', 'EATS'): 'EATS',
                  ('T7-filters', 'Original'): 'Original', ('T7-filters', 'EATS-1filter'): 'EATS'}
    found = set()
    for (table, config), t2_config in same_model.items():
        for d in paper_tables.table(table).datasets:
            for g in DEGS:
                if paper_tables.value(table, d, config, g) != paper_tables.value('T2', d, t2_config, g):
                    found.add((table, d, config, g))
    assert found == {('T6-layer-ratio', 'Manga109', 'EATS', 'clean'), ('T7-filters', 'Manga109', 'EATS-1filter', 'clean')}
    for t in paper_tables.tables().values():
        for d in t.datasets:
            if all(paper_tables.value(t.id, d, c, 'clean') == paper_tables.value(t.id, d, c, 'blur') for c in t.configs):
                found.add((t.id, d, '*', 'clean'))
    assert ('T3', 'Set5', '*', 'clean') in found
    for key in found:
        assert paper_tables.misprint(*key) is not None, key
    assert sum(m.status == 'known' for m in paper_tables.misprints()) == 4
    for m in paper_tables.misprints():
        if m.printed is not None and m.config != '*':
            assert paper_tables.value(m.table, m.dataset, m.config, m.degradation) == m.printed


def _ours(tmp_path):
    ours = tmp_path / 'table.csv'
    ours.write_text('dataset,scale,model,arch,metric,clean,blur\n'
                    'Manga109,4,base,RRDBNetAnyScale,psnr,18.7000,18.9000\n'
                    'Manga109,4,mine,RRDBNetAnyScale,psnr,19.0000,19.1000\n')
    return ours


def test_compare_uses_the_shipped_numbers_by_default_and_marks_misprints(tmp_path, capsys):
    text = compare_files(str(_ours(tmp_path)), table='T6-layer-ratio', configs={'base': 'Original', 'mine': 'EATS'},
                         out_prefix=str(tmp_path / 'cmp'))
    cells = {(r['config'], r['degradation']): r for r in csv.DictReader(open(tmp_path / 'cmp.csv'))}
    assert float(cells[('Original', 'clean')]['paper']) == 18.6101
    assert float(cells[('EATS', 'clean')]['diff']) == pytest.approx(19.0 - 19.922)
    assert cells[('EATS', 'clean')]['flag'].startswith('known misprint: T2 prints 18.9220')
    assert cells[('EATS', 'blur')]['flag'] == ''
    assert '| | paper | 19.92† | 19.01 |' in text.replace('|  |', '| |')
    assert '- T6-layer-ratio Manga109 EATS clean (19.9220): known misprint' in text
    # a CSV given by path overrides the shipped one, and is not flagged
    other = tmp_path / 'paper.csv'
    other.write_text('table,arch,scale,dataset,config,clean\nT6-layer-ratio,RRDBNet,4,Manga109,EATS,20.0\n')
    text = compare_files(str(_ours(tmp_path)), str(other), configs={'mine': 'EATS'})
    assert '| EATS (ours: mine) | ours | 19.00 |' in text and '†' not in text
    script = load_script('compare_to_paper')
    assert script.main(['--ours', str(_ours(tmp_path)), '--table', 'T7-filters',
                        '--config-map', 'mine=EATS-1filter']) == 0
    assert '19.92†' in capsys.readouterr().out
    assert script.main(['--list']) == 0
    out = capsys.readouterr().out
    assert out.startswith('T1: Table 1 of the EATS paper (OpenReview, forum id my0RqY48xz), SRResNet ×4')
    assert 'T3 Set5 * blur (known)' in out
    assert script.main([]) == 2
    assert 'error: --ours is required' in capsys.readouterr().err


def test_a_built_wheel_ships_the_numbers(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    shutil.copy(REPO / 'setup.py', src)
    shutil.copytree(REPO / 'basicsr_ext', src / 'basicsr_ext', ignore=shutil.ignore_patterns('__pycache__'))
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                           str(src), '-w', str(tmp_path / 'wheel')], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = zipfile.ZipFile(next((tmp_path / 'wheel').glob('*.whl'))).namelist()
    for f in ('published.csv', 'tables.json', '__init__.py'):
        assert f'basicsr_ext/evaluation/paper_tables/{f}' in names
