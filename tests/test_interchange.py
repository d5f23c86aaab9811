"""Checkpoints other tools load: spandrel (chaiNNer's loader) and .safetensors, and the ×3 RRDB scale."""
import json

import pytest
import torch
import yaml

from basicsr_ext.archs import build_network
from basicsr_ext.archs.forward import ScaleMismatchError, forward_padded
from basicsr_ext.models.loading import load_network, read_checkpoint
from basicsr_ext.train import train_pipeline
from basicsr_ext.utils.checkpoint import load_checkpoint

spandrel = pytest.importorskip('spandrel', reason='spandrel is in the test extra: pip install -e ".[test]"')
safetensors_torch = pytest.importorskip('safetensors.torch')

# spandrel's ESRGAN architecture has num_grow_ch fixed at 32 (ESRGAN's and basicsr's default)
RRDB = dict(type='RRDBNetAnyScale', num_feat=16, num_block=1, num_grow_ch=32)
SWINIR = dict(type='SwinIR', embed_dim=12, depths=[2, 2], num_heads=[2, 2], window_size=4, mlp_ratio=2., img_size=16,
              img_range=1.)


def _net(opt, seed):
    torch.manual_seed(seed)
    return build_network(opt).eval()


def _save_like_train(path, opt):
    """What train.py writes: params and params_ema (different weights, so the loader's choice shows)."""
    torch.save({'params': _net(opt, 1).state_dict(), 'params_ema': _net(opt, 2).state_dict()}, path)
    return _net(opt, 2)


def _spandrel_matches(path, net, scale, sizes):
    model = spandrel.ModelLoader().load_from_file(str(path))
    assert model.scale == scale
    for h, w in sizes:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            # spandrel clamps its output to [0, 1], as this project's inference does
            ref = forward_padded(net, x, scale).clamp(0, 1)
            out = model(x)
        assert out.shape == ref.shape
        assert (out - ref).abs().max() <= 1e-5, (h, w)
    return model


@pytest.mark.parametrize('scale', [1, 2, 4])
def test_spandrel_loads_rrdb(tmp_path, scale):
    opt = dict(RRDB, scale=scale)
    path = tmp_path / 'net_g.pth'
    ema = _save_like_train(path, opt)
    model = _spandrel_matches(path, ema, scale, [(16, 16), (12, 20)])
    assert model.architecture.id == 'ESRGAN'


@pytest.mark.parametrize('upsampler,scale', [('pixelshuffle', 3), ('pixelshuffledirect', 2)])
def test_spandrel_loads_swinir(tmp_path, upsampler, scale):
    opt = dict(SWINIR, upsampler=upsampler, upscale=scale)
    path = tmp_path / 'net_g.pth'
    ema = _save_like_train(path, opt)
    # 16x16 is the mask size the blocks precomputed; 13x21 is no multiple of the window
    model = _spandrel_matches(path, ema, scale, [(16, 16), (13, 21)])
    assert model.architecture.id == 'SwinIR'


@pytest.mark.parametrize('opt', [dict(type='MSRResNet', num_feat=8, num_block=2, upscale=4),
                                 dict(type='HAN', num_feat=8, num_group=2, num_block=1, squeeze_factor=4, upscale=2)])
def test_spandrel_has_no_srresnet_or_han(tmp_path, opt):
    path = tmp_path / 'net_g.pth'
    _save_like_train(path, opt)
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader().load_from_file(str(path))


def test_spandrel_reads_a_x3_rrdb_as_x4(tmp_path):
    """RRDBNetAnyScale ×3 has the parameters of ×4 (conv_up1 and conv_up2 keep their shapes): spandrel's
    ESRGAN, which has no such ×3 layout, builds a ×4 network without an error. docs/interchange.md says so."""
    path = tmp_path / 'net_g.pth'
    _save_like_train(path, dict(RRDB, scale=3))
    model = spandrel.ModelLoader().load_from_file(str(path))
    assert model.scale == 4
    with torch.no_grad():
        assert model(torch.rand(1, 3, 8, 8)).shape[-2:] == (32, 32)


def _train(tmp_path, scale, total_iter=2, **logger):
    opt = {
        'name': 'interchange', 'scale': scale, 'num_gpu': 0, 'manual_seed': 3,
        'datasets': {'train': {'name': 'photos', 'type': 'SkimagePhotosDataset', 'photos': ['astronaut'],
                               'gt_size': 24, 'patches_per_image': 4, 'batch_size_per_gpu': 2}},
        'network_g': dict(RRDB, scale=scale),
        'path': {'experiments_root': str(tmp_path / 'exp')},
        'train': {'total_iter': total_iter, 'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100]},
                  'pixel_opt': {'type': 'L1Loss'}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 1, **logger},
    }
    opt_file = tmp_path / 'opt.yml'
    opt_file.write_text(yaml.safe_dump(opt))
    assert train_pipeline(['-opt', str(opt_file)]) == 0
    return tmp_path / 'exp' / 'models', opt['network_g']


def test_safetensors_beside_pth_equal_its_ema_weights_and_carry_the_scale(tmp_path):
    models, net_opt = _train(tmp_path, scale=3, save_safetensors=True, keep_checkpoints=1)
    pth, st = models / 'net_g_2.pth', models / 'net_g_2.safetensors'
    # older checkpoints are pruned with their .safetensors
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.pth', 'net_g_2.safetensors']
    ckpt = load_checkpoint(pth)
    tensors = safetensors_torch.load_file(st)
    assert set(tensors) == set(ckpt['params_ema'])
    assert all(torch.equal(tensors[k], v) for k, v in ckpt['params_ema'].items())
    from safetensors import safe_open
    with safe_open(str(st), framework='pt') as f:
        meta = f.metadata()
    assert meta['param_key'] == 'params_ema' and meta['scale'] == '3' and meta['arch'] == 'RRDBNetAnyScale'
    assert json.loads(meta['network_g']) == net_opt
    assert read_checkpoint(st)['meta'] == {'scale': 3, 'network_g': net_opt}

    # this project's loader reads the file, and its metadata settles the ×3 / ×4 ambiguity
    net, scale = load_network(net_opt, st)
    assert scale == 3
    with pytest.raises(ScaleMismatchError, match=r"net_g_2.safetensors' was trained at ×3 \(its metadata says so\), "
                       r'but RRDBNetAnyScale is built for ×4; use scale 3'):
        load_network(dict(net_opt, scale=4), st)
    # the .pth alone cannot tell: the same weights load into a ×4 network (docs/interchange.md)
    assert load_network(dict(net_opt, scale=4), pth)[1] == 4

    # spandrel loads the .safetensors (and reads it as ×4, see above)
    assert spandrel.ModelLoader().load_from_file(str(st)).scale == 4


def test_spandrel_loads_a_trained_x4_checkpoint_and_its_safetensors(tmp_path):
    models, net_opt = _train(tmp_path, scale=4, total_iter=1, save_safetensors=True)
    net, _ = load_network(net_opt, models / 'net_g_1.pth')  # params_ema, as spandrel picks
    for path in (models / 'net_g_1.pth', models / 'net_g_1.safetensors'):
        _spandrel_matches(path, net, 4, [(12, 16)])


def test_no_safetensors_by_default(tmp_path):
    models, _ = _train(tmp_path, scale=2, total_iter=1)
    assert sorted(p.name for p in models.iterdir()) == ['net_g_1.pth']



def test_spandrel_assumes_img_range_255_for_swinir_window_7(tmp_path):
    """spandrel guesses SwinIR's img_range from the window size (7: 255, as the official real-world models;
    else 1): a window-7 network trained with img_range 1 loads with the wrong range. docs/interchange.md."""
    path = tmp_path / 'net_g.pth'
    _save_like_train(path, dict(SWINIR, window_size=7, img_size=14, upsampler='pixelshuffle', upscale=2))
    assert spandrel.ModelLoader().load_from_file(str(path)).model.img_range == 255.
