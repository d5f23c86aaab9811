"""scripts/reproduce.py: planning rows and budgets, the smoke budget end to end (resume, reuse), order
agreement on a hand-worked table, the SLURM submission with ECO after its teacher."""
import csv
import json

import pytest
import yaml

from basicsr_ext.config import yaml_load
from basicsr_ext.evaluation import paper_tables
from basicsr_ext.evaluation import reproduction_launch as launch
from basicsr_ext.evaluation.order_agreement import format_agreement, order_agreement
from basicsr_ext.evaluation.reproduction import make_plan, write_options
from basicsr_ext.evaluation.reproduction_budgets import apply_budget, get_budget
from basicsr_ext.evaluation.reproduction_tables import find_table
from basicsr_ext.train import train_pipeline
from basicsr_ext.utils.schema import OptionError
from conftest import REPO, load_script

SMOKE = ['--table', 'T1', '--rows', 'Original,EATS', '--budget', 'smoke', '--no_progress']


def _csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- order agreement, counted by hand
def test_order_agreement_on_a_hand_worked_table():
    paper = {'A': {1: 10, 2: 10, 3: 10, 4: 10, 5: 11}, 'B': {1: 9, 2: 11, 3: 9, 4: 10, 5: 10},
             'C': {1: 8, 2: 8, 3: 12, 4: 8}}
    ours = {'A': {1: 5, 2: 5, 3: 5, 4: 5, 5: 5}, 'B': {1: 4, 2: 4, 3: 6, 4: 3, 5: 5},
            'C': {1: 6, 2: 3, 3: 2, 4: 1}}
    result = order_agreement(ours, paper, rows=['B', 'A', 'C'])
    pairs = {(p['a'], p['b']): p for p in result['pairs']}
    # A−B in the paper: +1 -1 +1 0 +1 -> A above in 3 cells, so the pair reads A > B; cell 4 is a paper tie.
    # ours: +1 +1 -1 (0) 0 -> agrees in cell 1 only; our tie in cell 5 disagrees with the paper's +1.
    assert pairs[('A', 'B')] == {'a': 'A', 'b': 'B', 'n': 4, 'ours': 2, 'paper': 3, 'agree': 1, 'paper_ties': 1}
    # A−C: paper +2 +2 -2 +2, ours -1 +2 +3 +4 -> agree in cells 2 and 4
    assert pairs[('A', 'C')] == {'a': 'A', 'b': 'C', 'n': 4, 'ours': 3, 'paper': 3, 'agree': 2, 'paper_ties': 0}
    # B−C: paper +1 +3 -3 +2, ours -2 +1 +4 +2 -> agree in cells 2 and 4
    assert pairs[('B', 'C')] == {'a': 'B', 'b': 'C', 'n': 4, 'ours': 3, 'paper': 3, 'agree': 2, 'paper_ties': 0}
    assert (result['agree'], result['n']) == (5, 12) and result['fraction'] == pytest.approx(5 / 12)
    lines = format_agreement(result)
    assert lines[0] == "Our differences have the paper's sign in **5/12** cell pairs (42 %)."
    assert '- A > B in 2/4 cells (paper 3/4); same sign in 1/4; 1 cell(s) tied in the paper, left out' in lines
    assert '- A > C in 3/4 cells (paper 3/4); same sign in 2/4' in lines
    assert order_agreement(ours, {}, None)['fraction'] is None


def test_the_documented_t1_proxy_agreement_follows_from_the_committed_table():
    """docs/reproduce.md quotes the measured T1 proxy run. Its order agreement, recounted here from the
    committed table.csv and the shipped paper numbers, is what the page and the copied report say."""
    folder = REPO / 'docs' / 'reproduce' / 'T1_proxy'
    rows = ['Original', 'Dropout', 'EATS']
    degs = paper_tables.DEGRADATION_COLUMNS
    ours = {}
    for r in _csv(folder / 'table.csv'):
        if r['model'] in rows and r['metric'] == 'psnr':
            ours.setdefault(r['model'], {}).update({(r['dataset'], d): float(r[d]) for d in degs})
    paper = {m: {(ds, d): paper_tables.value('T1', ds, m, d) for ds in ('Set5', 'Set14') for d in degs}
             for m in rows}
    lines = format_agreement(order_agreement(ours, paper, rows=rows))
    assert lines[0] == "Our differences have the paper's sign in **37/48** cell pairs (77 %)."
    assert lines[2:] == ['- Dropout > Original in 16/16 cells (paper 16/16); same sign in 16/16',
                         '- EATS > Original in 11/16 cells (paper 16/16); same sign in 11/16',
                         '- EATS > Dropout in 10/16 cells (paper 16/16); same sign in 10/16']
    summary = (folder / 'summary.md').read_text(encoding='utf-8')
    assert all(line in summary for line in lines if line)
    page = (REPO / 'docs' / 'reproduce.md').read_text(encoding='utf-8')
    for claim in ('**37 of 48**', '**Dropout > Original in 16/16 cells (paper 16/16).**',
                  '**EATS > Original in 11/16 cells (paper 16/16).**',
                  '**EATS > Dropout in 10/16 cells (paper 16/16).**'):
        assert claim in page
    # the cells where EATS loses to Original, as the page lists them
    lost = sorted(c for c in ours['EATS'] if ours['EATS'][c] < ours['Original'][c])
    assert lost == [('Set14', 'b+n'), ('Set14', 'b+n+j'), ('Set14', 'n+j'), ('Set5', 'b+n'), ('Set5', 'b+n+j')]


# ---------------------------------------------------------------- planning
def test_rows_budgets_and_the_written_options(tmp_path):
    plan = make_plan(['T1'], ['all'], 'proxy', tmp_path / 'p')
    write_options(plan)
    runs = plan.runs
    assert list(runs) == ['SRResNet_x4_baseline', 'SRResNet_x4_dropout', 'SRResNet_x4_eats',
                          'SRResNet_x4_reflash_dropout', 'SRResNet_x4_adaptive_dropout', 'SRResNet_x4_eco']
    assert [r.rows for r in runs.values()][:4] == [[('T1', 'Original')], [('T1', 'Dropout')], [('T1', 'EATS')],
                                                   [('T1', 'Reflash')]]
    opt = yaml.safe_load(open(runs['SRResNet_x4_eats'].options_path))
    t = opt['train']
    assert (t['total_iter'], t['scheduler']['periods'], t['optim_g']['betas']) == (300, [300], [0.9, 0.999])
    assert opt['logger']['save_checkpoint_freq'] == 100 and opt['val']['val_freq'] == 300
    assert opt['datasets']['train']['batch_size_per_gpu'] == 16 and opt['degradation']['gt_size'] == 128
    # every key but the budget's and the paths is the option file's
    source = yaml_load(runs['SRResNet_x4_eats'].source)  # reads 2e-4 as a float, as train.py does
    for key in ('network_g', 'degradation', 'manual_seed', 'scale'):
        assert opt[key] == source[key]
    assert t['regularizers'] == source['train']['regularizers'] and t['optim_g'] == source['train']['optim_g']
    p = {rid: yaml.safe_load(open(r.options_path))['train']['regularizers'][0]['p']
         for rid, r in runs.items() if 'dropout' in rid and 'adaptive' not in rid}
    assert p == {'SRResNet_x4_dropout': 0.5, 'SRResNet_x4_reflash_dropout': 0.7}  # EATS text, Kong's code
    eco = runs['SRResNet_x4_eco']
    assert eco.needs == ('SRResNet_x4_baseline',)
    assert yaml.safe_load(open(eco.options_path))['train']['regularizers'][0]['teacher_path'].endswith(
        'runs/SRResNet_x4_baseline/models/net_g_300.pth')
    header = open(runs['SRResNet_x4_eats'].options_path).read().split('name:')[0]
    assert '#   train.total_iter: 500000 -> 300' in header and 'python train.py -opt' in header
    # rows shared between tables are one run
    shared = make_plan(['T2', 'T7'], None, 'paper', tmp_path / 'q')
    assert shared.runs['RRDB_x4_eats'].rows == [('T2', 'EATS'), ('T7-filters', 'EATS-1filter')]
    assert shared.runs['RRDB_x4_eats_filters3'].options['train']['regularizers'][0]['num_filters'] == 3
    assert make_plan(['T6'], None, 'paper', tmp_path / 'q').runs['RRDB_x4_eats_ratio40'].options['train'][
        'regularizers'][0]['layer_ratio'] == 0.4
    assert make_plan(['T1'], ['ECO'], 'paper', tmp_path / 'r').runs.keys() == {'SRResNet_x4_baseline',
                                                                               'SRResNet_x4_eco'}
    with pytest.raises(KeyError, match="no table 'T9'; tables: T1, T2"):
        find_table('T9')
    with pytest.raises(KeyError, match="table T1 has no row 'Dropuot'"):
        make_plan(['T1'], ['Dropuot'], 'proxy', tmp_path / 's')
    with pytest.raises(OptionError, match='the batch of 16 does not divide among 3 GPUs'):
        make_plan(['T1'], None, 'proxy', tmp_path / 't', gpus_per_row=3)


def test_a_budget_scales_every_schedule_in_iterations():
    raw = {'train': {'total_iter': 500000, 'warmup_iter': 5000,
                     'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [250000, 250000]},
                     'regularizers': [{'type': 'AdaptiveDropout', 'interval': 20000},
                                      {'type': 'ECO', 'schedule_iters': 400000}]},
           'datasets': {'train': {'batch_size_per_gpu': 16}, 'val': {}}}
    opt = apply_budget(raw, get_budget('proxy'), 'SRResNet', train_gt='hr', val=('v/HR', 'v/clean'))
    t = opt['train']
    assert (t['total_iter'], t['warmup_iter'], t['scheduler']['periods']) == (300, 3, [150, 150])
    assert [r.get('interval', r.get('schedule_iters')) for r in t['regularizers']] == [12, 240]
    assert opt['datasets']['train'] == {'batch_size_per_gpu': 16, 'num_worker_per_gpu': 1, 'dataroot_gt': 'hr',
                                        'meta_info': None, 'io_backend': {'type': 'disk'}}
    assert opt['datasets']['val'] == {'dataroot_gt': 'v/HR', 'dataroot_lq': 'v/clean'}
    assert raw['train']['total_iter'] == 500000  # the input is not changed
    multistep = {'train': {'total_iter': 1000, 'scheduler': {'type': 'MultiStepLR', 'milestones': [500, 750]}}}
    assert apply_budget(multistep, get_budget('smoke'), 'SRResNet')['train']['scheduler']['milestones'] == [2, 3]
    assert apply_budget(raw, get_budget('gpu-proxy'), 'RRDB')['train']['total_iter'] == 20000
    assert apply_budget(raw, get_budget('paper'), 'RRDB', gpus_per_row=2)['datasets']['train'][
        'batch_size_per_gpu'] == 8


def test_a_started_run_refuses_other_options(tmp_path):
    plan = make_plan(['T1'], ['Original'], 'smoke', tmp_path)
    write_options(plan)
    run = plan.runs['SRResNet_x4_baseline']
    (tmp_path / 'runs' / run.id / 'training_states').mkdir(parents=True)
    (tmp_path / 'runs' / run.id / 'training_states' / '2.state').write_bytes(b'')
    assert run.status() == 'interrupted'
    changed = make_plan(['T1'], ['Original'], 'smoke', tmp_path, overrides=['train:ema_decay=0.5'])
    with pytest.raises(OptionError, match=r"run SRResNet_x4_baseline was started with other options "
                                          r"\(train.ema_decay: 0.999 -> 0.5\)"):
        write_options(changed)


def test_proxy_dry_run_prints_the_exact_commands(tmp_path, capsys):
    script = load_script('reproduce')
    assert script.main(['--table', 'T1', '--budget', 'proxy', '--out', str(tmp_path), '--dry_run']) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if 'train.py' in line]
    assert [c.split(' train.py ', 1)[1] for c in commands] == [
        f'-opt {tmp_path}/options/SRResNet_x4_{r}.yml --auto_resume' for r in ('baseline', 'dropout', 'eats')]
    assert '300 iterations (T1/Original)' in out and not (tmp_path / 'runs').exists()


def test_slurm_dry_run_makes_eco_wait_for_its_teacher(tmp_path, capsys):
    script = load_script('reproduce')
    args = ['--table', 'T1', '--rows', 'Original,ECO', '--budget', 'smoke', '--out', str(tmp_path),
            '--launcher', 'slurm', '--sbatch_args=--partition=gpu --time=2:00:00', '--dry_run']
    assert script.main(args) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if 'sbatch' in x]
    assert lines[0].startswith('JOB_SRResNet_x4_baseline=$(sbatch --parsable --partition=gpu --time=2:00:00 ')
    assert lines[1].startswith('JOB_SRResNet_x4_eco=$(sbatch --parsable --partition=gpu --time=2:00:00 '
                               '--dependency=afterok:$JOB_SRResNet_x4_baseline ')
    assert '--dependency=afterok:$JOB_SRResNet_x4_baseline:$JOB_SRResNet_x4_eco ' in lines[2]
    sbatch = (tmp_path / 'slurm' / 'SRResNet_x4_eco.sbatch').read_text()
    assert 'srun --kill-on-bad-exit=1 ' in sbatch and f'{tmp_path}/options/SRResNet_x4_eco.yml --launcher slurm ' \
        '--auto_resume' in sbatch
    evaluate = (tmp_path / 'slurm' / 'evaluate_T1.sbatch').read_text()
    assert 'scripts/reproduce.py --table T1 --rows Original,ECO --budget smoke' in evaluate
    assert '--launcher none' in evaluate and '--dry_run' not in evaluate and 'partition' not in evaluate
    assert (tmp_path / 'slurm' / 'submit.sh').read_text().count('sbatch --parsable') == 3
    # once the teacher has finished, ECO's job waits for nothing
    models, states = tmp_path / 'runs' / 'SRResNet_x4_baseline' / 'models', tmp_path / 'runs' / \
        'SRResNet_x4_baseline' / 'training_states'
    models.mkdir(parents=True)
    states.mkdir()
    (models / 'net_g_4.pth').write_bytes(b'')
    (states / '4.state').write_bytes(b'')
    assert script.main(args) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if 'sbatch' in x]
    assert len(lines) == 2 and lines[0].startswith('JOB_SRResNet_x4_eco=$(sbatch --parsable --partition=gpu '
                                                   '--time=2:00:00 /')


# ---------------------------------------------------------------- the smoke budget, end to end
def test_smoke_budget_end_to_end_resumes_an_interrupted_row_and_reuses_everything(tmp_path, capsys):
    script = load_script('reproduce')
    out = tmp_path / 'rep'
    args = SMOKE + ['--out', str(out)]
    assert script.main(args + ['--dry_run']) == 0
    plan = make_plan(['T1'], ['Original', 'EATS'], 'smoke', out)
    launch.make_smoke_data(plan)
    launch.prepare_validation(plan)
    base = plan.runs['SRResNet_x4_baseline']
    # a row stopped after its checkpoint at iteration 2 of 4, as a kill after that checkpoint leaves it
    assert train_pipeline(['-opt', base.options_path, '--force_yml', 'train:total_iter=2']) == 0
    assert base.status() == 'interrupted'
    capsys.readouterr()

    assert script.main(args) == 0
    printed = capsys.readouterr().out
    assert '[SRResNet_x4_baseline] resuming: ' in printed and '[SRResNet_x4_eats] training: ' in printed
    assert all(r.status() == 'finished' for r in plan.runs.values())
    log = '\n'.join(p.read_text() for p in (out / 'runs' / base.id).glob('train_*.log'))
    assert 'Resumed from' in log and '(iteration 2, epoch' in log
    calls = json.loads((out / 'runs' / base.id / 'reproduce.json').read_text())['train_calls']
    assert [(c['status_before'], c['status_after'], c['returncode']) for c in calls] == \
        [('interrupted', 'finished', 0)]
    folder = out / 'tables' / 'T1'
    for name in ('summary.md', 'table.md', 'table.csv', 'table.json', 'paper_comparison.md', 'paper_comparison.csv',
                 'order_agreement.md', 'order_agreement.csv', 'diff_heatmap.png', 'test_options.yml',
                 'plot_skimage_x4.png'):
        assert (folder / name).stat().st_size > 0, name
    # the report against an independent reading of table.csv and the published numbers
    ours = {r['model']: r for r in _csv(folder / 'table.csv')}
    diffs = {d: float(ours['EATS'][d]) - float(ours['Original'][d]) for d in ('clean', 'noise')}
    assert float(ours['Improvement']['clean']) == pytest.approx(diffs['clean'], abs=2e-4)
    paper = {'clean': 25.7532 - 24.9697, 'noise': 22.0025 - 21.9275}  # T1 Set5, EATS − Original
    agreement = {r['degradation']: r for r in _csv(folder / 'order_agreement.csv')}
    for d in ('clean', 'noise'):
        assert (agreement[d]['a'], agreement[d]['b']) == ('EATS', 'Original')
        assert float(agreement[d]['paper_diff']) == pytest.approx(paper[d], abs=1e-4)
        assert float(agreement[d]['ours_diff']) == pytest.approx(diffs[d], abs=2e-4)
        assert agreement[d]['agree'] == str(int(float(agreement[d]['ours_diff']) > 0))
    n_agree = sum(int(r['agree']) for r in agreement.values())
    summary = (folder / 'summary.md').read_text()
    assert f'- EATS > Original in {n_agree}/2 cells (paper 2/2); same sign in {n_agree}/2' in summary
    assert 'Table 1 of *Awakening Collective Wisdom' in summary and '![ours − paper](diff_heatmap.png)' in summary
    cmp = {(r['config'], r['degradation']): r for r in _csv(folder / 'paper_comparison.csv')}
    assert float(cmp[('Improvement', 'noise')]['paper']) == 0.075
    # the analysis figures of the rows, summed up in the summary
    for name in ('correlation.png', 'correlation_summary.csv', 'ablation.png', 'ablation_summary.csv'):
        assert (folder / 'analysis' / name).stat().st_size > 0, name
    corr = {r['model']: float(r['mean_off_diagonal']) for r in _csv(folder / 'analysis' / 'correlation_summary.csv')}
    spread = {r['model']: float(r['spread_std']) for r in _csv(folder / 'analysis' / 'ablation_summary.csv')}
    assert set(corr) == set(spread) == {'Original', 'EATS'}
    assert f"| EATS | {corr['EATS']:.4f} | {spread['EATS']:.4f} |" in summary

    # a second run trains nothing and evaluates nothing
    logs = sorted((out / 'runs').glob('*/train_*.log'))
    assert script.main(args) == 0
    printed = capsys.readouterr().out
    assert 'training: ' not in printed and 'resuming: ' not in printed and printed.count('reused') == 2
    assert 'channel correlation and ablation at' not in printed  # reused as well
    assert sorted((out / 'runs').glob('*/train_*.log')) == logs
    assert len(json.loads((out / 'runs' / base.id / 'reproduce.json').read_text())['train_calls']) == 1
