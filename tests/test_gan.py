"""The GAN stage (BlindSRGANModel): Real-ESRGAN's step, targets, checkpoints, bit-exact resume, VGG weights.

Tiny networks and a randomly initialised VGG (``path.pretrained_vgg: random``) check the wiring; nothing is
downloaded (a test fails if torchvision or torch.hub is asked to).
"""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import copy
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs.vgg_arch import VGGFeatureExtractor
from basicsr.losses.basic_loss import PerceptualLoss
from basicsr.utils.img_process_util import USMSharp

from basicsr_ext.config import load_options, validate_options, yaml_load
from basicsr_ext.data.skimage_photos_dataset import load_photo
from basicsr_ext.losses import VGGWeightsNotFound, local_vgg_weights, vgg_file
from basicsr_ext.utils import pretrained
from basicsr_ext.models import build_model
from basicsr_ext.models.gan_model import discriminator_path
from basicsr_ext.train import train_pipeline
from basicsr_ext.utils.checkpoint import load_checkpoint
from basicsr_ext.utils.schema import OptionError
from conftest import REPO
from test_regularizers import one_thread  # noqa: F401  (autouse: one torch thread on a shared machine)
from test_training import tiny_options, write_options

GAN_FILES = ['RRDB/realesrgan_x4.yml', 'RRDB/realesrgan_dropout_x4.yml', 'SRResNet/realesrgan_x4.yml']


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f'a download was attempted: {args} {kwargs}')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


def gan_options(exp_root, total_iter=4, blind=True, **train):
    """tiny_options as a GAN run: a 4-channel U-Net discriminator, random VGG up to conv1_2."""
    opt = tiny_options(exp_root, total_iter=total_iter)
    opt['model_type'] = 'BlindSRGANModel'
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 4}
    opt['path']['pretrained_vgg'] = 'random'
    opt['logger']['save_checkpoint_freq'] = 2
    del opt['datasets']['val']  # validation is BlindSRModel's, tested elsewhere
    opt['train'].update(optim_d={'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                        gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1},
                        perceptual_opt={'type': 'PerceptualLoss', 'layer_weights': {'conv1_2': 1.0}}, **train)
    if blind:  # GT canvases + kernels, degraded on the model side: the degradation gives both GT versions
        opt['datasets']['train'] = {'name': 'gt', 'type': 'GTOnlyDataset', 'dataroot_gt': gt_folder(exp_root.parent),
                                    'crop_pad_size': 64, 'batch_size_per_gpu': 4, 'num_worker_per_gpu': 0}
        opt['degradation'] = {'type': 'HighOrderDegradation', 'gt_size': 32, 'context': 8}
    else:
        opt['datasets']['train']['gt_size'] = 32
    return opt


def gt_folder(root):
    """Four 64×64 GT crops of a photo that scikit-image ships, as PNG files in ``root/gt``."""
    folder = root / 'gt'
    if not folder.is_dir():
        folder.mkdir(parents=True)
        photo = (load_photo('astronaut') * 255).round().astype(np.uint8)
        for i, (y, x) in enumerate(((100, 180), (200, 260), (300, 120), (60, 400))):
            cv2.imwrite(str(folder / f'{i}.png'), photo[y:y + 64, x:x + 64])
    return str(folder)


def run(tmp_path, opt, *extra, name='opt.yml'):
    assert train_pipeline(['-opt', write_options(tmp_path, opt, name), *extra]) == 0


def make_model(opt):
    opt = validate_options(copy.deepcopy(opt))
    opt.update(dist=False, rank=0, world_size=1)
    torch.manual_seed(0)
    return build_model(opt)


def paired_batch(size=32, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 3, size, size, generator=gen)
    return {'lq': torch.nn.functional.avg_pool2d(gt, 4), 'gt': gt}


def params(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def changed(before, net):
    return {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}


# ----------------------------------------------------------------------------- the step
def test_net_d_trains_every_iteration_and_net_g_after_the_warm_up(tmp_path):
    model = make_model(gan_options(tmp_path, blind=False, net_d_init_iters=1, net_d_iters=2))
    net_g, net_d = model.get_bare_model(model.net_g), model.get_bare_model(model.net_d)
    batch = paired_batch()
    updated = []
    for it in (1, 2, 3, 4):
        g0, d0, ema0 = params(net_g), params(net_d), params(model.net_g_ema)
        model.feed_data(batch, it)
        model.optimize_parameters(it)
        log = model.get_current_log()
        assert changed(d0, net_d), f'net_d did not move at iteration {it}'
        assert changed(ema0, model.net_g_ema), 'the EMA follows net_g on every iteration, as Real-ESRGAN'
        updated.append(bool(changed(g0, net_g)))
        assert ('l_gan' in log) == updated[-1]
        assert {'l_d_real', 'l_d_fake', 'out_d_real', 'out_d_fake'} <= set(log)
    # net_d_init_iters 1: not at 1; net_d_iters 2: only even iterations
    assert updated == [False, True, False, True]
    assert [model.updates_g(i) for i in range(1, 7)] == [False, True, False, True, False, True]


def test_each_loss_gets_the_target_its_gt_usm_flag_chooses(tmp_path):
    opt = gan_options(tmp_path, blind=False)
    opt.update(l1_gt_usm=True, percep_gt_usm=False, gan_gt_usm=True)
    model = make_model(opt)
    seen = {}

    def record(name, fn):
        def call(*args, **kwargs):
            seen.setdefault(name, []).append(args[1] if name != 'd' else args[0])
            return fn(*args, **kwargs)
        return call

    model.cri_pix.forward = record('pix', model.cri_pix.forward)
    model.cri_perceptual.forward = record('percep', model.cri_perceptual.forward)
    batch = paired_batch()
    model.feed_data(batch, 1)
    net_d = model.get_bare_model(model.net_d)
    net_d.forward = record('d', net_d.forward)
    model.optimize_parameters(1)
    sharp = USMSharp()(batch['gt'])  # Real-ESRGAN's sharpening of paired GT, computed here independently
    assert not torch.equal(sharp, batch['gt'])
    assert torch.equal(seen['pix'][0], sharp)  # l1_gt_usm
    assert torch.equal(seen['percep'][0], batch['gt'])  # percep_gt_usm false
    # net_d sees: the output for net_g's GAN loss, then the real samples (gan_gt_usm), then the detached fake
    assert len(seen['d']) == 3 and torch.equal(seen['d'][1], sharp)
    assert torch.equal(seen['d'][0], model.output) and torch.equal(seen['d'][2], model.output)


def test_blind_targets_come_from_the_degradation(tmp_path):
    model = make_model(gan_options(tmp_path))  # Real-ESRGAN's defaults: L1 and perceptual sharpened, GAN plain
    from basicsr_ext.data import build_dataset
    data = build_dataset(model.opt['datasets']['train'])
    batch = torch.utils.data.default_collate([data[i] for i in range(2)])
    model.feed_data(batch, 2)
    model.optimize_parameters(2)
    assert model.gt is model.degraded['gt_usm']
    assert model._targets['percep'] is model.degraded['gt_usm']
    assert not torch.equal(model.degraded['gt'], model.degraded['gt_usm'])


def test_small_paired_patches_with_usm_flags_name_the_fix(tmp_path):
    model = make_model(gan_options(tmp_path, blind=False))
    model.feed_data(paired_batch(size=24), 1)
    with pytest.raises(ValueError, match=r'^l1_gt_usm/percep_gt_usm/gan_gt_usm: USM sharpening \(basicsr USMSharp, '
                       r'radius 25\) needs GT patches larger than 25 pixels, got \(24, 24\)'):
        model.optimize_parameters(1)


def test_a_regularizer_acts_on_net_g_beside_the_gan_losses(tmp_path):
    model = make_model(gan_options(tmp_path, blind=False, regularizers=[{'type': 'EATS'}, {'type': 'Dropout',
                                                                                            'p': 0.5}]))
    assert [type(r).__name__ for r in model.regularizers] == ['EATS', 'Dropout']
    assert not hasattr(model.net_d, 'regularizers')  # net_d is never wrapped with net_g's regularizers
    model.feed_data(paired_batch(), 1)
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert {'l_pix', 'l_percep', 'l_gan', 'l_awa', 'l_d_real'} <= set(log) and log['l_awa'] > 0
    state = model.network_state()
    assert not any(k.startswith('regularizers') for k in state['params'])
    assert set(model.discriminator_state()['params']) == set(model.get_bare_model(model.net_d).state_dict())


# ----------------------------------------------------------------------------- checkpoints and resume
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    straight = tmp_path / 'straight'
    opt = gan_options(straight, net_d_init_iters=1)
    opt['logger']['keep_checkpoints'] = 1
    run(tmp_path, opt, name='a.yml')
    assert sorted(os.listdir(straight / 'models')) == ['net_d_4.pth', 'net_g_4.pth']  # pruned in pairs

    resumed = tmp_path / 'resumed'
    run(tmp_path, gan_options(resumed, total_iter=2, net_d_init_iters=1), name='b.yml')
    assert sorted(os.listdir(resumed / 'models')) == ['net_d_2.pth', 'net_g_2.pth']
    run(tmp_path, gan_options(resumed, net_d_init_iters=1), '--auto_resume', name='b.yml')

    for name in ('net_g_4.pth', 'net_d_4.pth'):
        a, b = load_checkpoint(straight / 'models' / name), load_checkpoint(resumed / 'models' / name)
        assert set(a) == ({'params', 'params_ema'} if name.startswith('net_g') else {'params'})
        for key in a:
            assert set(a[key]) == set(b[key])
            for tensor in a[key]:  # net_d's spectral-norm vectors (weight_u, weight_v) included
                assert torch.equal(a[key][tensor], b[key][tensor]), f'{name} {key}.{tensor} differs after resume'
    sa = load_checkpoint(straight / 'training_states' / '4.state')
    sb = load_checkpoint(resumed / 'training_states' / '4.state')
    assert len(sa['optimizers']) == len(sa['schedulers']) == 2  # net_g's, then net_d's
    assert sa['schedulers'] == sb['schedulers']
    for oa, ob in zip(sa['optimizers'], sb['optimizers']):
        for pid, state in oa['state'].items():
            assert all(torch.equal(state[k], ob['state'][pid][k]) for k in ('exp_avg', 'exp_avg_sq'))
    log = next(resumed.glob('train_tiny_*.log')).read_text()
    assert 'l_gan:' in log and 'l_d_real:' in log and 'out_d_fake:' in log
    assert not [p for p in (resumed / 'models').iterdir() if p.name.startswith('.')]  # atomic writes only


def test_resume_without_the_discriminator_file_says_which_file(tmp_path):
    model = make_model(gan_options(tmp_path, blind=False))
    with torch.no_grad():  # make it differ from a freshly built one
        for p in model.get_bare_model(model.net_d).parameters():
            p.add_(0.5)
    path = tmp_path / 'models' / 'net_g_8.pth'
    model.save_network_atomic(str(path))
    d_path = tmp_path / 'models' / 'net_d_8.pth'
    assert discriminator_path(str(path)) == str(d_path) and d_path.is_file()
    other = make_model(gan_options(tmp_path, blind=False))
    fresh = params(other.get_bare_model(other.net_d))
    other.load_network_state(load_checkpoint(path), str(path))
    for name, tensor in model.get_bare_model(model.net_d).state_dict().items():
        assert torch.equal(tensor, other.get_bare_model(other.net_d).state_dict()[name])
    assert changed(fresh, other.get_bare_model(other.net_d))
    d_path.unlink()
    with pytest.raises(FileNotFoundError, match=f'^{d_path} does not exist: the discriminator of the checkpoint'):
        other.load_network_state(load_checkpoint(path), str(path))


# ----------------------------------------------------------------------------- VGG weights
@pytest.fixture
def no_local_vgg(monkeypatch, tmp_path):
    """Empty experiments/pretrained_models and TORCH_HOME."""
    monkeypatch.setattr(pretrained, 'PRETRAINED_DIR', tmp_path / 'pretrained_models')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    return tmp_path


def test_missing_vgg_weights_are_an_option_error_naming_the_file_and_where_to_put_it(no_local_vgg):
    opt = gan_options(no_local_vgg / 'exp')
    del opt['path']['pretrained_vgg']
    with pytest.raises(OptionError) as err:
        validate_options(opt)
    home = no_local_vgg / 'torch_home' / 'hub' / 'checkpoints'
    assert str(err.value) == (
        "path.pretrained_vgg: vgg19-dcbb9e9d.pth not found: the perceptual loss needs torchvision's ImageNet VGG19 "
        'weights (548.1 MB, https://download.pytorch.org/models/vgg19-dcbb9e9d.pth). Nothing is downloaded at run '
        f"time: put vgg19-dcbb9e9d.pth in {no_local_vgg / 'pretrained_models'}/ or in {home}/ "
        '($TORCH_HOME/hub/checkpoints), or set path.pretrained_vgg to its location '
        '(experiments/pretrained_models/README.md).')
    # the same from train.py: exit code 2, the message on stderr, no training
    assert train_pipeline(['-opt', write_options(no_local_vgg, opt)]) == 2
    # a model built from unvalidated options fails the same way, before any download
    with pytest.raises(VGGWeightsNotFound, match='^vgg19-dcbb9e9d.pth not found'):
        with local_vgg_weights(None):
            PerceptualLoss({'conv1_2': 1.0})


def test_an_explicit_vgg_path_that_does_not_exist_is_named(tmp_path):
    opt = gan_options(tmp_path)
    opt['path']['pretrained_vgg'] = str(tmp_path / 'vgg.pth')
    with pytest.raises(OptionError, match=f"^path.pretrained_vgg: '{tmp_path / 'vgg.pth'}' does not exist: it should "
                       "hold torchvision's ImageNet VGG19 weights"):
        validate_options(opt)


def _vgg11_file(path):
    """A torchvision-format vgg11 state dict with known values (features only: the classifier is never read)."""
    from torchvision.models.vgg import cfgs, make_layers
    features = make_layers(cfgs['A'])
    state = {f'features.{k}': torch.full_like(v, 0.01 * i) for i, (k, v) in enumerate(features.state_dict().items())}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@pytest.mark.parametrize('place', ['torch_home', 'pretrained_models', 'option'])
def test_vgg_weights_load_from_each_place_without_the_cwd_or_a_download(no_local_vgg, monkeypatch, place):
    name = vgg_file('vgg11')
    assert name == 'vgg11-8a719046.pth'
    folder = {'torch_home': no_local_vgg / 'torch_home' / 'hub' / 'checkpoints',
              'pretrained_models': no_local_vgg / 'pretrained_models', 'option': no_local_vgg / 'mine'}[place]
    state = _vgg11_file(folder / name)
    # basicsr's own CWD-relative file is never read
    monkeypatch.chdir(no_local_vgg)
    (no_local_vgg / 'experiments' / 'pretrained_models').mkdir(parents=True)
    torch.save({}, no_local_vgg / 'experiments' / 'pretrained_models' / 'vgg19-dcbb9e9d.pth')
    with local_vgg_weights(str(folder / name) if place == 'option' else None):
        extractor = VGGFeatureExtractor(['conv1_1', 'conv2_1'], vgg_type='vgg11')
    assert torch.equal(extractor.vgg_net.conv1_1.weight, state['features.0.weight'])
    assert torch.equal(extractor.vgg_net.conv2_1.bias, state['features.3.bias'])
    assert not any(p.requires_grad for p in extractor.parameters())


def test_a_file_that_is_not_a_vgg_state_dict_is_named(tmp_path):
    torch.save({'features.0.weight': torch.zeros(1)}, tmp_path / 'vgg.pth')
    with pytest.raises(ValueError, match=f"^{tmp_path / 'vgg.pth'}: not torchvision's vgg19 state dict"):
        with local_vgg_weights(str(tmp_path / 'vgg.pth')):
            PerceptualLoss({'conv1_2': 1.0})


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize('change, message', [
    (lambda o: o.update(model_type='BlindSRModel'),
     'network_d: only a model that trains a discriminator reads it (model_type BlindSRGANModel); model_type is '
     'BlindSRModel'),
    (lambda o: o.pop('network_d'), 'network_d: missing required key (BlindSRGANModel trains a discriminator)'),
    (lambda o: o['train'].pop('gan_opt'), 'train.gan_opt: missing required key'),
    (lambda o: o['network_d'].update(num_feet=4), "network_d.num_feet: unknown key; did you mean 'num_feat'?"),
    (lambda o: o['network_d'].update(type='UNetDiscriminator'), "network_d.type: unknown architecture"),
    (lambda o: o['degradation'].update(gt_size=36),
     'network_d: UNetDiscriminatorSN cannot judge 3-channel 36×36 GT patches'),
    (lambda o: o['train']['gan_opt'].update(gan_type='vanila'),
     "train.gan_opt.gan_type: 'vanila' is not one of ['vanilla', 'lsgan', 'wgan', 'wgan_softplus', 'hinge']"),
    (lambda o: o['train']['gan_opt'].update(type='L1Loss'),
     "train.gan_opt.type: L1Loss is not an adversarial loss; use one of ['GANLoss']"),
    (lambda o: o['train']['optim_d'].update(type='Adamm'), "train.optim_d.type: unknown optimizer 'Adamm'"),
    (lambda o: o['train'].update(net_d_iters=0), 'train.net_d_iters: 0 is below the minimum 1'),
    (lambda o: o.update(gan_gt_usm='yes'), "gan_gt_usm: expected bool, got str 'yes'"),
    (lambda o: o['train']['perceptual_opt']['layer_weights'].update(conv5_5=1.0),
     'train.perceptual_opt.layer_weights.conv5_5: not a layer of vgg19; layers are conv1_1, relu1_1, conv1_2'),
])
def test_gan_options_are_validated(tmp_path, change, message):
    opt = gan_options(tmp_path)
    change(opt)
    with pytest.raises(OptionError) as err:
        validate_options(opt)
    assert str(err.value).startswith(message), str(err.value)


def test_bare_gan_keys_on_the_l1_model_are_rejected(tmp_path):
    opt = tiny_options(tmp_path)
    opt['train']['net_d_init_iters'] = 5
    with pytest.raises(OptionError, match=r'^train.net_d_init_iters: only a model that trains a discriminator'):
        validate_options(opt)


@pytest.mark.parametrize('name', GAN_FILES)
def test_shipped_gan_files_validate_with_their_weights_pointed_at_stand_ins(name, tmp_path):
    (tmp_path / 'images').mkdir()
    weights = tmp_path / 'net_g.pth'
    weights.write_bytes(b'')  # only its existence is validated
    overrides = [f'path:pretrain_network_g={weights}', 'path:pretrained_vgg=random',
                 f'datasets:train:dataroot_gt={tmp_path / "images"}', f'datasets:train:meta_info={weights}',
                 f'datasets:val:dataroot_gt={tmp_path / "images"}', f'datasets:val:dataroot_lq={tmp_path / "images"}']
    opt = load_options(str(REPO / 'options' / 'train' / name), overrides=overrides)
    assert opt['model_type'] == 'BlindSRGANModel' and opt['network_d']['type'] == 'UNetDiscriminatorSN_basicsr'
    assert (opt['l1_gt_usm'], opt['percep_gt_usm'], opt['gan_gt_usm']) == (True, True, False)
    assert opt['train']['gan_opt']['loss_weight'] == 0.1 and opt['degradation']['gt_size'] == 256
    assert [r['type'] for r in opt['train']['regularizers']] == (['Dropout'] if 'dropout' in name else [])


def test_pretrained_models_readme_lists_every_weight_file_and_only_it_is_tracked():
    import subprocess
    import torchvision
    folder = REPO / 'experiments' / 'pretrained_models'
    text = (folder / 'README.md').read_text()
    for arch in ('vgg19', 'alexnet', 'vgg16'):
        entry = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        name = os.path.basename(entry.url)
        assert f'`{name}`' in text and entry.url in text and f"{entry.meta['_file_size']:.1f} MB" in text, name
        assert f"begins `{name.rsplit('-', 1)[1][:8]}`" in text  # torchvision's sha256 prefix
    for name in GAN_FILES:  # the generator weights the shipped files start from, when they live there
        start = yaml_load(REPO / 'options' / 'train' / name)['path']['pretrain_network_g']
        if start.startswith('experiments/pretrained_models/'):
            assert f'`{os.path.basename(start)}`' in text
    if not (REPO / '.git').exists():
        pytest.skip('not a git checkout')
    ignored = subprocess.run(['git', 'check-ignore', '--no-index', 'experiments/pretrained_models/README.md',
                              'experiments/pretrained_models/vgg19-dcbb9e9d.pth', 'experiments/x/models/net_g_1.pth'],
                             cwd=REPO, capture_output=True, text=True).stdout.split()
    assert ignored == ['experiments/pretrained_models/vgg19-dcbb9e9d.pth', 'experiments/x/models/net_g_1.pth']
