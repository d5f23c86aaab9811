"""Training history (history.jsonl), curves.png, and the scripts/plot_curves.py overlay."""
import json
import logging
import re
import subprocess
import sys
from types import SimpleNamespace

import cv2
import pytest

from basicsr_ext.data import dataset_name
from basicsr_ext.models.sr_model import BlindSRModel
from basicsr_ext.utils import curves
from basicsr_ext.utils.curve_plots import best_point, plot_history
from basicsr_ext.utils.curves import TrainingCurves
from basicsr_ext.utils.history import History, read_history, truncate_history
from conftest import REPO
from test_training import run, tiny_options

sys.path.insert(0, str(REPO / 'scripts'))
try:
    import plot_curves
finally:
    sys.path.pop(0)


def _key(record):
    return record['kind'], record['iter'], record.get('val_set')


def _png_size(path):
    image = cv2.imread(str(path))
    assert image is not None, f'{path} does not decode'
    return image.shape[1], image.shape[0]


@pytest.fixture
def captured(monkeypatch):
    """The losses and validation results straight from the model, per iteration."""
    seen = {'losses': {}, 'val': {}}
    optimize, validation = BlindSRModel.optimize_parameters, BlindSRModel.validation

    def optimize_and_keep(self, current_iter, *micro):
        optimize(self, current_iter, *micro)
        seen['losses'][current_iter] = dict(self.log_dict)

    def validation_and_keep(self, dataloader, current_iter, tb_logger, save_img=False):
        out = validation(self, dataloader, current_iter, tb_logger, save_img)
        seen['val'][(current_iter, dataset_name(dataloader.dataset))] = dict(out)
        return out

    monkeypatch.setattr(BlindSRModel, 'optimize_parameters', optimize_and_keep)
    monkeypatch.setattr(BlindSRModel, 'validation', validation_and_keep)
    return seen


def test_training_writes_history_equal_to_the_log_and_the_model(tmp_path, captured):
    exp = tmp_path / 'exp'
    run(tmp_path, tiny_options(exp, total_iter=6))
    records = read_history(exp / 'history.jsonl')
    train = [r for r in records if r['kind'] == 'train']
    val = [r for r in records if r['kind'] == 'val']
    assert [r['iter'] for r in train] == [1, 2, 3, 4, 5, 6]  # print_freq 1
    assert [(r['iter'], r['val_set']) for r in val] == [(3, 'heldout'), (6, 'heldout')]  # val_freq 3

    # exactly what the model computed
    for r in train:
        assert r['losses'] == captured['losses'][r['iter']]
    for r in val:
        assert r['metrics'] == captured['val'][(r['iter'], r['val_set'])]
        assert r['better'] == {'psnr': 'higher'}

    # and what the log lines say, at their printed precision
    log = next(exp.glob('train_tiny_*.log')).read_text()
    lines = re.findall(r'epoch:\s*(\d+), iter:\s*(\d+)/6, lr:\(([^)]+)\)\] \[([\d.]+) it/s.*l_pix: (\S+)', log)
    assert len(lines) == 6
    for (epoch, it, lr, its, l_pix), r in zip(lines, train):
        assert (int(epoch), int(it)) == (r['epoch'], r['iter'])
        assert lr == f"{r['lr'][0]:.3e}" and its == f"{r['it_per_s']:.2f}" and l_pix == f"{r['losses']['l_pix']:.4e}"
    assert [r['lr'][0] for r in train] == [1e-3] * 4 + [5e-4] * 2  # MultiStepLR: halved at 4
    logged = re.findall(r'# psnr: ([\d.]+)\tBest: ([\d.]+) @ (\d+) iter', log)
    assert [psnr for psnr, _, _ in logged] == [f"{r['metrics']['psnr']:.4f}" for r in val]
    # the best so far, as the model tracks it, is what the curves star
    for n, (_, best, best_iter) in enumerate(logged, 1):
        it, value = best_point([r['iter'] for r in val[:n]], [r['metrics']['psnr'] for r in val[:n]], 'higher')
        assert (best, int(best_iter)) == (f'{value:.4f}', it)

    width, height = _png_size(exp / 'curves.png')
    assert width >= 800 and height >= 500
    assert not list(exp.glob('.*.tmp'))


def test_killed_and_resumed_run_has_the_history_of_an_uninterrupted_one(tmp_path):
    straight = tmp_path / 'straight'
    run(tmp_path, tiny_options(straight, total_iter=6), name='a.yml')
    expected = read_history(straight / 'history.jsonl')

    resumed = tmp_path / 'resumed'
    opt = tiny_options(resumed, total_iter=6)
    run(tmp_path, opt, name='b.yml')
    # as if killed after logging iteration 6 but before its checkpoint: the newest checkpoint is 3
    (resumed / 'training_states' / '6.state').unlink()
    (resumed / 'models' / 'net_g_6.pth').unlink()
    with open(resumed / 'history.jsonl', 'a') as f:
        f.write('{"kind": "train", "iter": 7, "epo')  # and a write cut short by the kill
    run(tmp_path, opt, '--auto_resume', name='b.yml')
    got = read_history(resumed / 'history.jsonl')
    assert [_key(r) for r in got] == [_key(r) for r in expected]
    # the redone iterations are recorded once, with the same numbers (the resume is bit-exact)
    assert [r.get('losses') or r['metrics'] for r in got] == [r.get('losses') or r['metrics'] for r in expected]

    # resuming a finished run validates its last iteration again; that is not recorded twice
    run(tmp_path, opt, '--auto_resume', name='b.yml')
    assert [_key(r) for r in read_history(resumed / 'history.jsonl')] == [_key(r) for r in expected]


def _write_train(history, iters):
    for it in iters:
        history.log_train(it, 0, [1e-3], {'l_pix': 1.0 / it}, 5.0)


def test_resume_drops_the_records_after_the_checkpoint_then_appends(tmp_path):
    path = tmp_path / 'history.jsonl'
    h = History(path)
    _write_train(h, range(1, 11))
    h.log_validation(5, 'Set5', {'psnr': 30.0})
    h.log_validation(10, 'Set5', {'psnr': 31.0})
    h.close()
    assert len(read_history(path)) == 12

    h = History(path, resume_iter=6)
    assert [_key(r) for r in h.records] == [('train', i, None) for i in range(1, 7)] + [('val', 5, 'Set5')]
    assert [_key(r) for r in read_history(path)] == [_key(r) for r in h.records]
    _write_train(h, [7])
    assert h.log_validation(5, 'Set5', {'psnr': 30.0}) is False  # already there
    h.close()
    records = read_history(path)
    assert [r['iter'] for r in records if r['kind'] == 'train'] == [1, 2, 3, 4, 5, 6, 7]
    assert records[-1]['losses'] == {'l_pix': 1 / 7}
    assert not [p for p in tmp_path.iterdir() if p.name != 'history.jsonl']  # no temporary file left

    # a run that does not resume starts afresh
    History(path).close()
    assert path.read_text() == ''


def test_truncation_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / 'history.jsonl'
    h = History(path)
    _write_train(h, range(1, 5))
    h.close()
    before = path.read_bytes()

    def killed(src, dst):
        raise KeyboardInterrupt  # what a SIGINT between writing the copy and renaming it looks like

    monkeypatch.setattr(curves.os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        truncate_history(path, 2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['history.jsonl']


def test_reader_drops_a_cut_last_line_and_names_file_and_line_of_a_bad_one(tmp_path):
    path = tmp_path / 'history.jsonl'
    good = [json.dumps({'kind': 'train', 'iter': i, 'epoch': 0, 'lr': [1e-3], 'losses': {'l_pix': 0.5}})
            for i in (1, 2)]
    path.write_text('\n'.join(good) + '\n{"kind": "train", "iter": 3, "epo')
    assert [r['iter'] for r in read_history(path)] == [1, 2]
    assert [r['iter'] for r in read_history(tmp_path)] == [1, 2]  # the experiment folder works too

    path.write_text(good[0] + '\ngarbage\n' + good[1] + '\n')
    with pytest.raises(ValueError) as err:
        read_history(path)
    assert str(err.value) == f'{path}, line 2: not valid JSON (Expecting value at column 1)'

    # a complete last line (it has its newline) is not a kill's leftover: it is an error too
    path.write_text(good[0] + '\n{"kind": "train", "iter"\n')
    with pytest.raises(ValueError, match=r"line 2: not valid JSON \(Expecting ':' delimiter at column 25\)$"):
        read_history(path)

    path.write_text(good[0] + '\n[1, 2]\n' + good[1] + '\n')
    with pytest.raises(ValueError) as err:
        read_history(path)
    assert str(err.value) == f'{path}, line 2: expected a JSON object, got list'
    path.write_text(good[0] + '\n{"kind": "val", "iter": "5", "metrics": {}}\n')
    with pytest.raises(ValueError) as err:
        read_history(path)
    assert str(err.value) == f"{path}, line 2: 'iter' must be an integer, got '5'"


def test_plot_history_draws_available_panels_and_nothing_without_data(tmp_path):
    out = tmp_path / 'curves.png'
    assert plot_history([], out) is None and not out.exists()

    h = History(tmp_path / 'history.jsonl')
    _write_train(h, range(1, 20))
    h.close()
    assert plot_history(tmp_path, out) == str(out)
    train_only = _png_size(out)

    h = History(tmp_path / 'history.jsonl', resume_iter=19)
    for it, (a, b) in zip((5, 10, 15), ((30.0, 28.0), (30.5, 28.2), (30.2, 28.9))):
        h.log_validation(it, 'Set5', {'psnr': a, 'ssim': a / 40})
        h.log_validation(it, 'Set14', {'psnr': b, 'ssim': b / 40})
    h.close()
    plot_history(tmp_path / 'history.jsonl', out)
    with_val = _png_size(out)
    assert train_only[1] < with_val[1]  # losses + lr in one row; psnr + ssim add a second

    # a negative loss (some GAN and regularizer terms) gets a linear axis instead of a failing log one
    assert plot_history([{'kind': 'train', 'iter': 1, 'lr': [1e-3], 'losses': {'l_g': -0.2}}], out) == str(out)


def test_plot_curves_false_writes_history_but_no_png(tmp_path):
    exp = tmp_path / 'exp'
    opt = tiny_options(exp, total_iter=3)
    opt['logger']['plot_curves'] = False
    run(tmp_path, opt)
    assert not (exp / 'curves.png').exists()
    assert [r['iter'] for r in read_history(exp) if r['kind'] == 'train'] == [1, 2, 3]


def test_plotting_failure_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    # as if matplotlib were not installed
    monkeypatch.setitem(sys.modules, 'matplotlib.backends.backend_agg', None)
    exp = tmp_path / 'exp'
    run(tmp_path, tiny_options(exp, total_iter=6))
    log = next(exp.glob('train_tiny_*.log')).read_text()
    assert log.count('Could not draw') == 1 and 'Training finished' in log
    assert 'Further plotting errors are not reported' in log
    assert not (exp / 'curves.png').exists()
    assert [r['iter'] for r in read_history(exp) if r['kind'] == 'val'] == [3, 6]


def _curves_opt(root, rank=0, plot=True):
    """What TrainingCurves reads of the typed training options."""
    return SimpleNamespace(name='run', rank=rank, path=SimpleNamespace(experiments_root=str(root)),
                           logger=SimpleNamespace(plot_curves=plot),
                           val=SimpleNamespace(metrics={'lpips': SimpleNamespace(better='lower')}))


def test_training_curves_rank0_only_and_redraws_within_the_time_share(tmp_path, monkeypatch):
    other = TrainingCurves(_curves_opt(tmp_path / 'r1', rank=1), None, logging.getLogger('test'))
    other.log_train(1, 0, [1e-3], {'l_pix': 0.1}, 1.0)
    other.plot(final=True)
    assert not (tmp_path / 'r1').exists()

    drawn = []
    monkeypatch.setattr(curves, 'plot_history', lambda records, png, title: drawn.append(len(records)))
    (tmp_path / 'r0').mkdir()
    tc = TrainingCurves(_curves_opt(tmp_path / 'r0'), None, logging.getLogger('test'))
    tc.plot()
    assert drawn == []  # nothing recorded yet
    tc.log_train(1, 0, [1e-3], {'l_pix': 0.1}, 1.0)
    tc.plot()
    tc.log_validation(1, {'Set5': {'lpips': 0.3}})
    monkeypatch.setattr(tc, '_next_plot', curves.time.monotonic() + 60)  # as if the last drawing took 3 s
    tc.plot()
    assert drawn == [1]  # too soon: left for later
    tc.plot(final=True)
    assert drawn == [1, 2]
    tc.plot(final=True)
    assert drawn == [1, 2]  # nothing new
    tc.close()
    assert read_history(tmp_path / 'r0')[-1]['better'] == {'lpips': 'lower'}


def test_a_damaged_history_is_moved_aside_and_does_not_block_a_resume(tmp_path, caplog):
    path = tmp_path / 'history.jsonl'
    path.write_text('garbage\n{"kind": "train"}\n')
    with caplog.at_level(logging.WARNING, logger='test'):
        tc = TrainingCurves(_curves_opt(tmp_path), 6, logging.getLogger('test'))
    tc.log_train(7, 0, [1e-3], {'l_pix': 0.1}, 1.0)
    tc.close()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith('history.jsonl.damaged_')]
    assert len(aside) == 1 and aside[0].read_text() == 'garbage\n{"kind": "train"}\n'
    assert [r['iter'] for r in read_history(path)] == [7]
    assert caplog.messages == [f'{path}, line 1: not valid JSON (Expecting value at column 1); the history was moved '
                               f'to {aside[0]} and a new one starts at iteration 6.']


def _synthetic_run(folder, psnr, lpips, losses):
    folder.mkdir()
    h = History(folder / 'history.jsonl')
    for it, loss in zip(range(50, 50 * len(losses) + 1, 50), losses):
        h.log_train(it, 0, [2e-4], {'l_pix': loss, 'l_reg': loss / 10}, 4.0)
    for it, p, lp in zip((100, 200, 300), psnr, lpips):
        h.log_validation(it, 'Set5', {'psnr': p, 'lpips': lp}, {'psnr': 'higher', 'lpips': 'lower'})
        h.log_validation(it, 'heldout', {'psnr': p - 1}, {'psnr': 'higher'})
    h.close()
    return folder


@pytest.fixture
def two_runs(tmp_path):
    a = _synthetic_run(tmp_path / 'base', [28.0, 28.5, 28.2], [0.30, 0.25, 0.27], [0.05, 0.04, 0.035, 0.03, 0.03])
    b = _synthetic_run(tmp_path / 'eats', [27.9, 28.1, 28.6], [0.31, 0.29, 0.24], [0.06, 0.045, 0.04, 0.03, 0.029])
    return a, b


def test_plot_curves_overlays_runs_and_prints_best_and_final(tmp_path, two_runs, capsys):
    out = tmp_path / 'compare.png'
    a, b = two_runs
    assert plot_curves.main([str(a), str(b / 'history.jsonl'), '--names', 'Baseline', 'EATS', '--smooth', '3',
                             '--out', str(out)]) == 0
    assert capsys.readouterr().out == (
        'psnr on Set5 (higher is better)\n'
        'run       best     at iter  final    at iter\n'
        'Baseline  28.5000  200      28.2000  300\n'
        'EATS      28.6000  300      28.6000  300\n'
        f'Wrote {out}\n')
    width, height = _png_size(out)
    assert width >= 1000 and height >= 300

    assert plot_curves.main([str(a), str(b), '--metric', 'lpips', '--out', str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[:4] == [
        'lpips on Set5 (lower is better)',
        'run   best    at iter  final   at iter',
        'base  0.2500  200      0.2700  300',
        'eats  0.2400  300      0.2400  300']

    assert plot_curves.main([str(a), str(b), '--val_set', 'heldout', '--out', str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[2] == 'base  27.5000  200      27.2000  300'


def test_plot_curves_errors(tmp_path, two_runs, capsys):
    a, b = two_runs
    empty = tmp_path / 'empty'
    empty.mkdir()
    cases = [
        ([str(a), str(empty)], f'error: {empty}: no history.jsonl in this folder'),
        ([str(a), str(tmp_path / 'nope')], f'error: {tmp_path / "nope"}: no such experiment folder or history file'),
        ([str(a), str(b), '--metric', 'ssim'], "error: no run has validation metric 'ssim' (available: psnr, lpips)"),
        ([str(a), str(b), '--val_set', 'Set14'],
         "error: no run has validation set 'Set14' with metric 'psnr' (available: Set5, heldout)"),
        ([str(a), str(b), '--metric', 'lpips', '--val_set', 'heldout'],
         "error: no run has validation set 'heldout' with metric 'lpips' (available: Set5)"),
        ([str(a), str(b), '--names', 'Baseline'], 'error: --names has 1 name(s) for 2 run(s)'),
    ]
    for argv, message in cases:
        assert plot_curves.main(argv + ['--out', str(tmp_path / 'x.png')]) == 2, argv
        captured = capsys.readouterr()
        assert captured.err == message + '\n' and captured.out == ''
    assert not (tmp_path / 'x.png').exists()


def test_plot_curves_command_line(tmp_path, two_runs, capsys, monkeypatch):
    a, b = two_runs
    proc = subprocess.run([sys.executable, str(REPO / 'scripts' / 'plot_curves.py'), str(a), str(b), '--names', 'A'],
                          capture_output=True, text=True, cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, '', 'error: --names has 1 name(s) for 2 run(s)\n')
    monkeypatch.chdir(tmp_path)
    assert plot_curves.main([str(a), str(b)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == 'Wrote curves_compare.png'
    assert _png_size(tmp_path / 'curves_compare.png')[0] >= 1000


def test_plot_curves_without_validation_draws_the_losses(tmp_path, capsys):
    (tmp_path / 'a').mkdir()
    h = History(tmp_path / 'a' / 'history.jsonl')
    _write_train(h, range(1, 30))
    h.close()
    out = tmp_path / 'a.png'
    assert plot_curves.main([str(tmp_path / 'a'), '--out', str(out)]) == 0
    assert capsys.readouterr().out == ('No run has validation records: only the training losses are drawn.\n'
                                       f'Wrote {out}\n')
    assert _png_size(out)[0] >= 600
    assert plot_curves.main([str(tmp_path / 'a'), '--metric', 'psnr', '--out', str(out)]) == 2
    assert capsys.readouterr().err == "error: no run has validation metric 'psnr' (available: none)\n"
