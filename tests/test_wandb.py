"""logger.wandb: offline runs write their files, a resumed training run continues the same wandb run."""
import dataclasses
import importlib.util
import json
import time

import pytest
import yaml

from basicsr_ext.config import OptionError, typed_training_options, validate_options
from basicsr_ext.train import train_pipeline
from basicsr_ext.utils.checkpoint import load_checkpoint
from basicsr_ext.utils.wandb_run import WandbRun

wandb = pytest.importorskip('wandb', reason='wandb is in the test extra: pip install -e ".[test]"')


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """wandb writes to tmp_path/wandb_dir only: no network, no console capture."""
    folder = tmp_path / 'wandb_dir'
    folder.mkdir()
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_DIR', str(folder))
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setenv('WANDB_CONSOLE', 'off')
    return folder / 'wandb'


def _options(exp, total_iter, **wandb_opt):
    return {
        'name': 'tiny_wandb', 'scale': 2, 'num_gpu': 0, 'manual_seed': 5,
        'datasets': {
            'train': {'name': 'photos', 'type': 'SkimagePhotosDataset', 'photos': ['astronaut'], 'gt_size': 16,
                      'patches_per_image': 4, 'batch_size_per_gpu': 2},
            'val': {'name': 'heldout', 'type': 'SkimagePhotosDataset', 'photos': ['chelsea'], 'max_size': 32},
        },
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 2},
        'path': {'experiments_root': str(exp)},
        'train': {'total_iter': total_iter, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100]}, 'pixel_opt': {'type': 'L1Loss'}},
        'val': {'val_freq': 2, 'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'wandb': {'project': 'basicsr-ext-test', **wandb_opt}},
    }


def _train(tmp_path, opt, *extra):
    path = tmp_path / 'opt.yml'
    path.write_text(yaml.safe_dump(opt))
    return train_pipeline(['-opt', str(path), *extra])


def _history(exp):
    return [json.loads(line) for line in (exp / 'history.jsonl').read_text().splitlines()]


def _run_files(wandb_dir, run_id):
    """The .wandb files of the offline runs with this id (one folder per process that logged to it), oldest first."""
    return [next(d.glob(f'run-{run_id}.wandb')) for d in sorted(wandb_dir.glob(f'offline-run-*-{run_id}'))]


def _contents(run_file, *expected, timeout=20.0):
    """The bytes of a .wandb file once they hold every ``expected`` byte string (wandb's service process
    may still be writing the file when ``finish`` returns), or as they are after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        data = run_file.read_bytes()
        if all(e in data for e in expected) or time.monotonic() > end:
            return data
        time.sleep(0.2)


def _json(value):
    # the .wandb file stores each logged value as its JSON text, which is also how history.jsonl writes it
    return json.dumps(value).encode()


def test_offline_run_writes_its_files_and_a_resumed_run_continues_it(tmp_path, offline):
    exp = tmp_path / 'exp'
    assert _train(tmp_path, _options(exp, 2, name='first try', tags=['tiny', 'offline'])) == 0
    assert wandb.run is None  # finished
    run_id = load_checkpoint(exp / 'training_states' / '2.state')['wandb_run_id']
    first, = _run_files(offline, run_id)
    history = _history(exp)
    psnr_2 = next(r['metrics']['psnr'] for r in history if r['kind'] == 'val' and r['iter'] == 2)
    expected = (b'basicsr-ext-test', b'first try', b'"tiny"', b'"offline"', b'losses/l_pix', b'train/lr',
                b'train/it_per_s', b'metrics/heldout/psnr', _json(psnr_2), _json(history[0]['losses']['l_pix']))
    data = _contents(first, *expected)
    for text in expected:
        assert text in data, text
    log = next(exp.glob('train_tiny_wandb_*.log')).read_text()
    assert f'wandb run {run_id}: ' in log

    # resumed: the same wandb run id, written by the second process into a folder of its own
    assert _train(tmp_path, _options(exp, 4, name='first try'), '--auto_resume', '--force_yml',
                  'train:total_iter=4') == 0
    assert load_checkpoint(exp / 'training_states' / '4.state')['wandb_run_id'] == run_id
    first_again, second = _run_files(offline, run_id)
    assert first_again == first
    psnr_4 = next(r['metrics']['psnr'] for r in _history(exp) if r['kind'] == 'val' and r['iter'] == 4)
    assert _json(psnr_4) in _contents(second, _json(psnr_4)) and _json(psnr_4) not in first.read_bytes()
    log = sorted(exp.glob('train_tiny_wandb_*.log'))[-1].read_text()
    assert f'wandb run {run_id} (resumed): ' in log


def test_a_failed_run_still_finishes_its_wandb_run_and_resume_id_names_the_run(tmp_path, offline, monkeypatch):
    import basicsr_ext.train as train_module

    def broken(*args, **kwargs):
        raise RuntimeError('disk on fire')

    monkeypatch.setattr(train_module, 'save_checkpoint', broken)
    exp = tmp_path / 'exp'
    assert _train(tmp_path, _options(exp, 4, resume_id='chosenid')) == 1
    assert wandb.run is None  # finished by the failure's cleanup
    run_file, = _run_files(offline, 'chosenid')
    loss_1 = _json(_history(exp)[0]['losses']['l_pix'])  # iteration 1 was logged before the failure
    assert loss_1 in _contents(run_file, loss_1)


def _typed(exp, rank=0, **wandb_opt):
    """The typed options train.py hands WandbRun, for rank ``rank``."""
    return dataclasses.replace(typed_training_options(validate_options(_options(exp, 2, **wandb_opt))), rank=rank)


def test_without_a_project_nothing_is_logged(tmp_path, offline):
    run = WandbRun(_typed(tmp_path, project=None))
    run.log_train(1, 0, [1e-3], {'l_pix': 0.1}, 1.0)
    run.log_validation(1, {'val': {'psnr': 20.0}})
    run.finish()
    assert not run.active and run.id is None and not offline.exists()
    # nor on ranks other than 0
    assert not WandbRun(_typed(tmp_path, rank=1, project='p')).active


def test_options(monkeypatch):
    from conftest import REPO
    opt = yaml.safe_load((REPO / 'options' / 'demo' / 'SRResNet_x4_demo.yml').read_text())
    opt['logger']['wandb'] = {'project': 'p', 'tag': ['a']}
    with pytest.raises(OptionError, match=r"^logger\.wandb\.tag: unknown key; did you mean 'tags'\?"):
        validate_options(opt)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'wandb' else real(name, *a))
    opt['logger']['wandb'] = {'project': 'p'}
    with pytest.raises(OptionError, match=r"^logger\.wandb\.project: 'p' asks for wandb logging, but the wandb "
                       r'package is not installed: pip install wandb \(or set it to null\)'):
        validate_options(opt)


def test_a_run_that_cannot_start_says_how_to_log_in_or_go_offline(tmp_path, monkeypatch):
    def refuse(**kwargs):
        raise wandb.errors.UsageError('api_key not configured (no-tty)')

    monkeypatch.setattr(wandb, 'init', refuse)
    opt = _typed(tmp_path, project='p')
    with pytest.raises(RuntimeError, match=r"^logger\.wandb: wandb could not start run abc in project 'p' \(UsageError: "
                       r'api_key not configured \(no-tty\)\)\. Log in with `wandb login` \(or set WANDB_API_KEY\), or '
                       r'set WANDB_MODE=offline to write the run to disk and `wandb sync` it later\.$'):
        WandbRun(opt, stored_id='abc')
