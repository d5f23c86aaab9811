"""Option loading and validation: every error names the key, where it is, and what is valid."""
import copy
import subprocess
import sys

import pytest
import yaml

from basicsr_ext.config import (OptionError, apply_overrides, load_options, parse_override, validate_options,
                                yaml_load)
from conftest import REPO

DEMO = REPO / 'options' / 'demo' / 'SRResNet_x4_demo.yml'


@pytest.fixture
def raw():
    return yaml_load(DEMO)


def error_of(raw, change):
    raw = copy.deepcopy(raw)
    change(raw)
    with pytest.raises(OptionError) as info:
        validate_options(raw)
    return str(info.value)


def test_demo_options_validate_and_fill_defaults(raw):
    opt = validate_options(raw)
    assert opt['train']['optim_g']['lr'] == 5e-4
    assert opt['train']['warmup_iter'] == -1
    assert opt['logger']['use_tb_logger'] is False
    assert opt['dist_params'] == {'backend': None, 'port': 29500, 'timeout': 600}
    assert opt['datasets']['train']['phase'] == 'train' and opt['datasets']['val']['phase'] == 'val'
    assert opt['datasets']['val']['scale'] == 4


def test_yaml_reads_scientific_notation_as_float():
    data = yaml_load('lr: 2e-4\nbig: 1e5\nplain: 1.5\ncount: 3\nname: 2e4x')
    assert data == {'lr': 2e-4, 'big': 1e5, 'plain': 1.5, 'count': 3, 'name': '2e4x'}
    assert isinstance(data['lr'], float) and isinstance(data['count'], int)


@pytest.mark.parametrize('change, message', [
    (lambda r: r['train'].__setitem__('ema_decy', 0.999), "train.ema_decy: unknown key; did you mean 'ema_decay'?"),
    (lambda r: r['train'].pop('total_iter'), 'train.total_iter: missing required key (number of training iterations)'),
    (lambda r: r['train'].__setitem__('total_iter', 'abc'), "train.total_iter: expected int, got str 'abc'"),
    (lambda r: r['train'].__setitem__('ema_decay', True), 'train.ema_decay: expected float, got bool True'),
    (lambda r: r.pop('name'), 'name: missing required key (experiment name; outputs go to experiments/<name>)'),
    (lambda r: r.__setitem__('scale', 5), "scale: 5 is not one of [1, 2, 3, 4]"),
    (lambda r: r['network_g'].__setitem__('num_feats', 3), "network_g.num_feats: unknown key; did you mean 'num_feat'?"),
    (lambda r: r['network_g'].__setitem__('type', 'MSRResnet'),
     "network_g.type: unknown architecture 'MSRResnet'; did you mean 'MSRResNet'?"),
    (lambda r: r['network_g'].__setitem__('upscale', 2),
     "scale: network_g (MSRResNet) upsamples ×2 but scale is 4; set the network's scale argument (upscale/scale) to 4"),
    (lambda r: r['train']['optim_g'].__setitem__('betas', 0.9), 'train.optim_g.betas: expected list or tuple, got float 0.9'),
    (lambda r: r['train']['optim_g'].__setitem__('momentun', 0.9),
     "train.optim_g.momentun: unknown key; valid keys: amsgrad, betas, capturable, decoupled_weight_decay, "
     "differentiable, eps, foreach, fused, lr, maximize, weight_decay"),
    (lambda r: r['train']['scheduler'].__setitem__('type', 'Cosine'), "train.scheduler.type: unknown scheduler 'Cosine'"),
    (lambda r: r['train']['pixel_opt'].__setitem__('type', 'L1loss'),
     "train.pixel_opt.type: unknown loss 'L1loss'; did you mean 'L1Loss'?"),
    (lambda r: r['datasets']['train'].__setitem__('gt_sise', 3),
     "datasets.train.gt_sise: unknown key; did you mean 'gt_size'?"),
    (lambda r: r['datasets']['train'].__setitem__('photos', ['astronaut', 'kitten']),
     "datasets.train.photos[1]: 'kitten' is not one of"),
    (lambda r: r['val']['metrics']['psnr'].__setitem__('crop_bordr', 4),
     "val.metrics.psnr.crop_bordr: unknown key; did you mean 'crop_border'?"),
    (lambda r: r['logger'].__setitem__('print_freq', 0), 'logger.print_freq: 0 is below the minimum 1'),
    (lambda r: r.__setitem__('datasets', {'val': r['datasets']['val']}), 'datasets.train: missing required key'),
    (lambda r: r['path'].__setitem__('pretrain_network_g', '/no/such/net.pth'),
     "path.pretrain_network_g: file '/no/such/net.pth' does not exist"),
])
def test_invalid_options_are_rejected_with_exact_messages(raw, change, message):
    assert error_of(raw, change).startswith(message)


def test_missing_dataroot_names_the_path(raw, tmp_path):
    missing = tmp_path / 'nope'
    raw['datasets']['train'] = {
        'name': 'x', 'type': 'PairedImageDataset', 'dataroot_gt': str(missing), 'dataroot_lq': str(tmp_path),
        'io_backend': {'type': 'disk'}
    }
    assert error_of(raw, lambda r: None) == f"datasets.train.dataroot_gt: path '{missing}' does not exist"


def test_force_yml_overrides_are_parsed_as_yaml_without_eval(raw):
    assert parse_override('train:ema_decay=0.99') == (['train', 'ema_decay'], 0.99)
    assert parse_override('name=__import__("os")') == (['name'], '__import__("os")')
    opt = validate_options(apply_overrides(copy.deepcopy(raw), ['train:optim_g:lr=1e-3', 'val:pbar=false']))
    assert opt['train']['optim_g']['lr'] == 1e-3 and opt['val']['pbar'] is False
    with pytest.raises(OptionError, match="train.total_iter: expected int, got str 'many'"):
        validate_options(apply_overrides(copy.deepcopy(raw), ['train:total_iter=many']))
    with pytest.raises(OptionError, match="expected 'key:subkey=value'"):
        parse_override('train:total_iter')


def test_experiment_paths_are_under_the_project_root_not_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    opt = load_options(str(DEMO))
    assert opt['path']['experiments_root'] == str(REPO / 'experiments' / 'SRResNet_x4_demo')
    assert opt['path']['models'] == str(REPO / 'experiments' / 'SRResNet_x4_demo' / 'models')
    opt = load_options(str(DEMO), overrides=[f'path:experiments_root={tmp_path / "exp"}'])
    assert opt['path']['training_states'] == str(tmp_path / 'exp' / 'training_states')


def test_typo_in_cli_exits_before_training(tmp_path):
    raw = yaml_load(DEMO)
    raw['train']['ema_decy'] = 0.999
    raw['path']['experiments_root'] = str(tmp_path / 'exp')
    opt_file = tmp_path / 'typo.yml'
    opt_file.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, str(REPO / 'train.py'), '-opt', str(opt_file)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert "Option error: train.ema_decy: unknown key; did you mean 'ema_decay'?" in proc.stderr
    assert not (tmp_path / 'exp').exists()
