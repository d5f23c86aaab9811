"""Every regularizer (and the compositions that make sense) trains through BlindSRModel on every arch with sites.

Each case validates an options dict, builds the model, trains a few iterations on one fixed
batch of photo patches, and checks that the loss went down. The provided option files are
validated too, with their dataroots and teacher checkpoint pointed at stand-ins.
"""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import glob
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from basicsr_ext.archs import build_network
from basicsr_ext.data.skimage_photos_dataset import load_photo
from basicsr_ext.models import build_model
from basicsr_ext.regularizers.eco import matlab_bicubic_resize
from basicsr_ext.config import validate_options, yaml_load
from conftest import step_context
from test_regularizers import one_thread  # noqa: F401  (autouse: one torch thread on a shared machine)

pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')

ROOT = Path(__file__).resolve().parents[1]
ITERS = 6

ARCHS = {
    'SRResNet': dict(type='MSRResNet', num_feat=16, num_block=2, upscale=4),
    'RRDB': dict(type='RRDBNetAnyScale', num_feat=16, num_block=2, num_grow_ch=8, scale=4),
    'SwinIR': dict(type='SwinIR', upscale=4, img_size=8, window_size=4, embed_dim=12, depths=[2, 2],
                   num_heads=[2, 2], mlp_ratio=2., upsampler='pixelshuffledirect', drop_path_rate=0.),
    'HAN': dict(type='HAN', num_feat=16, num_group=2, num_block=2, squeeze_factor=4, upscale=4),
}


ARCH_NAMES = list(ARCHS)


SINGLE = {
    'baseline': [],
    'Dropout': [{'type': 'Dropout', 'p': 0.5}],
    'AdaptiveDropout': [{'type': 'AdaptiveDropout', 'interval': 2}],
    'AdaptiveDropout-implicit': [{'type': 'AdaptiveDropout', 'implicit': True, 'w_mode': 'vector', 'interval': 0}],
    'EATS': [{'type': 'EATS'}],
    'ECO': [{'type': 'ECO', 'teacher_path': '{teacher}', 'schedule_iters': 1000}],
    'DropBlock': [{'type': 'DropBlock', 'block_size': 3}],
    'DropConnect': [{'type': 'DropConnect', 'p': 0.1}],
}
COMBINED = {
    'ECO+EATS': [SINGLE['ECO'][0], {'type': 'EATS'}],
    'AdaptiveDropout+EATS': [SINGLE['AdaptiveDropout'][0], {'type': 'EATS'}],
    'Dropout+EATS': [SINGLE['Dropout'][0], {'type': 'EATS'}],
    'ECO+Dropout': [SINGLE['ECO'][0], SINGLE['Dropout'][0]],
    'DropConnect+EATS': [SINGLE['DropConnect'][0], {'type': 'EATS', 'num_pairs': 2}],
}
CASES = [(arch, reg) for arch in ARCH_NAMES for reg in SINGLE]
CASES += [(arch, reg) for arch in ARCH_NAMES[:2] for reg in COMBINED]
CASES = [pytest.param(arch, reg, id=f'{arch}-{reg}') for arch, reg in CASES]


@pytest.fixture(scope='module')
def fixed_batch():
    photo = torch.from_numpy(load_photo('astronaut')[:, :, ::-1].copy()).permute(2, 0, 1)
    gt = torch.stack([photo[:, y:y + 32, x:x + 32] for y, x in ((100, 180), (200, 260), (300, 120), (60, 400))])
    return matlab_bicubic_resize(gt, 1 / 4).clamp(0, 1), gt


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp('teachers')
    paths = {}
    for name in ARCH_NAMES:
        torch.manual_seed(1)
        paths[name] = str(folder / f'{name}.pth')
        torch.save({'params_ema': build_network(ARCHS[name]).state_dict()}, paths[name])
    return paths


def make_options(arch, regularizers, teacher, workdir):
    regs = [{k: (v.format(teacher=teacher) if isinstance(v, str) else v) for k, v in r.items()} for r in regularizers]
    return {
        'name': 'matrix', 'model_type': 'BlindSRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {'type': 'SkimagePhotosDataset', 'photos': ['astronaut'], 'gt_size': 32}},
        'network_g': dict(ARCHS[arch]), 'path': {'experiments_root': str(workdir)},
        'train': {
            'total_iter': 100, 'ema_decay': 0.999,
            'optim_g': {'type': 'Adam', 'lr': 5e-4, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [100], 'restart_weights': [1],
                          'eta_min': 1e-6},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
            'regularizers': regs,
        },
    }


def eval_l1(model, lq, gt):
    net = model.net_g  # the training wrapper: eval() reaches the regularizers' site transforms too
    net.eval()
    with torch.no_grad():
        loss = F.l1_loss(net(lq), gt).item()
    net.train()
    return loss


@pytest.mark.parametrize('arch, reg', CASES)
def test_trains_and_loss_goes_down(arch, reg, fixed_batch, teachers, tmp_path):
    torch.manual_seed(0)
    regs = {**SINGLE, **COMBINED}[reg]
    opt = validate_options(make_options(arch, regs, teachers[arch], tmp_path))
    opt.update(dist=False, rank=0, world_size=1)
    model = build_model(opt)
    lq, gt = fixed_batch
    eco = next((r for r in model.regularizers if type(r).__name__ == 'ECO'), None)
    if eco is not None:  # a stays 0 here: the fixed pair is the teacher's synthetic one
        lq, gt = eco.transform_batch(step_context(model, lq, gt, 1))
    before = eval_l1(model, lq, gt)
    logs = []
    for it in range(1, ITERS + 1):
        model.feed_data({'lq': fixed_batch[0], 'gt': fixed_batch[1]}, it)
        model.optimize_parameters(it)
        logs.append(model.get_current_log())
    after = eval_l1(model, lq, gt)
    assert all(torch.isfinite(torch.tensor(v)) for log in logs for v in log.values())
    assert after < before, f'{arch} + {reg}: eval L1 {before:.4f} -> {after:.4f}; logs {logs}'
    if any(r['type'] == 'EATS' for r in regs):
        assert all(log['l_awa'] > 0 for log in logs)
    state = model.network_state()
    assert not any(k.startswith('regularizers') for k in state['params'])
    assert set(state['params_ema']) == set(state['params'])


# ----------------------------------------------------------------------------- provided option files
OPTION_FILES = sorted(glob.glob(str(ROOT / 'options' / 'train' / '*' / '*.yml')))


def _point_at_stand_ins(raw, tmp_path, teacher_path):
    """Replace every dataroot/meta file/teacher path by a stand-in that exists."""
    images = tmp_path / 'images'
    images.mkdir(exist_ok=True)
    meta = tmp_path / 'meta_info.txt'
    meta.write_text('')
    for dopt in raw.get('datasets', {}).values():
        for key in list(dopt):
            if key.startswith('dataroot'):
                dopt[key] = str(images)
            elif key.startswith('meta_info'):
                dopt[key] = str(meta)
    for reg in raw.get('train', {}).get('regularizers') or []:
        if 'teacher_path' in reg:
            reg['teacher_path'] = teacher_path
    if raw.get('path', {}).get('pretrain_network_g'):
        raw['path']['pretrain_network_g'] = teacher_path
    if raw['train'].get('perceptual_opt'):  # the GAN files' VGG19 weights (only their existence is validated)
        raw['path']['pretrained_vgg'] = teacher_path
    return raw


def test_option_files_exist_for_every_configuration():
    names = {os.path.relpath(p, ROOT / 'options' / 'train') for p in OPTION_FILES}
    methods = ('baseline', 'dropout', 'adaptive_dropout', 'eats', 'eco')
    expected = {f'{arch}/{m}_x{s}.yml' for arch in ('SRResNet', 'RRDB') for m in methods for s in (2, 4)}
    expected |= {f'{arch}/{m}_x4.yml' for arch in ('SwinIR', 'HAN_lite') for m in methods}
    expected |= {f'{arch}/reflash_dropout_x{s}.yml' for arch in ('SRResNet', 'RRDB') for s in (2, 4)}
    expected |= {f'RRDB/eats_ratio{r}_x4.yml' for r in (20, 40, 60, 80)} | {f'RRDB/eats_filters{k}_x4.yml' for k in (3, 5)}
    assert expected <= names, sorted(expected - names)


def _option_file(name):
    return yaml_load(ROOT / 'options' / 'train' / name)


@pytest.mark.parametrize('arch, eats_p, kong_p', [('SRResNet', 0.5, 0.7), ('RRDB', 0.7, 0.5)])
@pytest.mark.parametrize('scale', [2, 4])
def test_option_files_follow_their_papers(arch, eats_p, kong_p, scale):
    """EATS-table rows: the EATS text (Adam β2 0.999, its Dropout p); Reflash / AD rows: their authors' code."""
    def betas(method):
        return _option_file(f'{arch}/{method}_x{scale}.yml')['train']['optim_g']['betas']

    def reg(method):
        return _option_file(f'{arch}/{method}_x{scale}.yml')['train']['regularizers'][0]

    for method in ('baseline', 'dropout', 'eats', 'eco'):
        assert betas(method) == [0.9, 0.999], method
    for method in ('adaptive_dropout', 'reflash_dropout'):
        assert betas(method) == [0.9, 0.99], method
    assert reg('dropout')['p'] == eats_p and reg('reflash_dropout')['p'] == kong_p
    eats = reg('eats')
    assert eats['layers'] == ['head.*', 'blocks.*.conv.*', 'tail.*'] and eats['num_filters'] == 1
    assert reg('adaptive_dropout')['interval'] == 'auto'


def test_eats_ablation_files_differ_from_eats_in_one_key():
    base = _option_file('RRDB/eats_x4.yml')
    for name, key, value in [(f'eats_ratio{r}', 'layer_ratio', r / 100) for r in (20, 40, 60, 80)] + [
            (f'eats_filters{k}', 'num_filters', k) for k in (3, 5)]:
        raw = _option_file(f'RRDB/{name}_x4.yml')
        assert raw['name'] == f'RRDB_x4_{name}'
        reg = raw['train']['regularizers'][0]
        assert reg[key] == value
        assert {k: v for k, v in reg.items() if k != key} == {k: v for k, v in base['train']['regularizers'][0].items()
                                                               if k != key}
        assert {k: v for k, v in raw.items() if k not in ('name', 'train')} == {k: v for k, v in base.items()
                                                                               if k not in ('name', 'train')}


@pytest.mark.parametrize('path', OPTION_FILES, ids=[os.path.relpath(p, ROOT / 'options' / 'train') for p in
                                                    OPTION_FILES])
def test_option_file_validates(path, tmp_path):
    raw = yaml_load(path)
    teacher = tmp_path / 'teacher.pth'
    teacher.write_bytes(b'')  # only its existence is validated
    raw = _point_at_stand_ins(raw, tmp_path, str(teacher))
    opt = validate_options(raw)
    method = Path(path).stem.rsplit('_x', 1)[0]
    types = [r['type'] for r in opt['train']['regularizers']]
    if method.startswith('eats_'):  # the EATS ablations: eats_ratio<r>, eats_filters<k>
        method = 'eats'
    assert types == {'baseline': [], 'dropout': ['Dropout'], 'reflash_dropout': ['Dropout'],
                     'adaptive_dropout': ['AdaptiveDropout'], 'eats': ['EATS'], 'eco': ['ECO'], 'realesrgan': [],
                     'realesrgan_dropout': ['Dropout']}[method]
    assert opt['scale'] == int(Path(path).stem.rsplit('_x', 1)[1])
