"""scripts/inference.py: image modes and depths, folders, and the messages for bad input."""
import basicsr_ext  # noqa: F401  (must precede basicsr)

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.archs.srresnet_arch import MSRResNet
from PIL import Image

from basicsr_ext.archs.forward import checkpoint_scale
from basicsr_ext.models.loading import load_network, load_state_dict, upscale_array
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')
torch.set_num_threads(1)


def _script():
    return load_script('inference')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('infer')
    torch.manual_seed(0)
    torch.save({'params': MSRResNet(num_feat=8, num_block=1, upscale=4).state_dict()}, tmp / 'srresnet_x4.pth')
    torch.save({'params': MSRResNet(num_feat=8, num_block=1, upscale=2).state_dict()}, tmp / 'srresnet_x2.pth')
    torch.save({'params': RRDBNet(3, 3, scale=4, num_feat=8, num_block=1, num_grow_ch=4).state_dict()},
               tmp / 'rrdb_x4.pth')
    net_g = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}
    (tmp / 'arch.yml').write_text(yaml.safe_dump({'name': 'tiny', 'network_g': net_g}))
    rng = np.random.default_rng(0)
    inp = tmp / 'in'
    inp.mkdir()
    cv2.imwrite(str(inp / 'gray.png'), rng.integers(0, 256, (12, 10), dtype=np.uint8))
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    rgba[:, :, 3] = np.linspace(0, 255, 11, dtype=np.uint8)[None, :]
    cv2.imwrite(str(inp / 'rgba.png'), rgba)
    cv2.imwrite(str(inp / 'deep.png'), rng.integers(0, 65536, (10, 8, 3), dtype=np.uint16))
    return tmp, _script()


def test_modes_and_depths_are_kept(setup):
    tmp, script = setup
    out = tmp / 'out'
    assert script.main(['-i', str(tmp / 'in'), '-o', str(out), '--model', str(tmp / 'srresnet_x4.pth'), '--arch',
                        str(tmp / 'arch.yml'), '--device', 'cpu', '--no_progress']) == 0
    assert sorted(p.name for p in out.iterdir()) == ['deep_out.png', 'gray_out.png', 'rgba_out.png']
    with Image.open(out / 'gray_out.png') as im:
        assert im.mode == 'L' and im.size == (40, 48)
    with Image.open(out / 'rgba_out.png') as im:
        assert im.mode == 'RGBA' and im.size == (44, 36)
    rgba_in = cv2.imread(str(tmp / 'in' / 'rgba.png'), cv2.IMREAD_UNCHANGED)
    rgba_out = cv2.imread(str(out / 'rgba_out.png'), cv2.IMREAD_UNCHANGED)
    alpha = cv2.resize(rgba_in[:, :, 3].astype(np.float32) / 255., (44, 36), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(rgba_out[:, :, 3], np.clip(np.round(alpha * 255.), 0, 255).astype(np.uint8))
    deep = cv2.imread(str(out / 'deep_out.png'), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (40, 32, 3)
    assert len(np.unique(deep)) > 256  # real 16-bit values, not 8-bit ones scaled up


def test_single_file_by_arch_name_matches_the_options_file(setup):
    tmp, script = setup
    assert script.main(['-i', str(tmp / 'in' / 'gray.png'), '-o', str(tmp / 'by_name'), '--model',
                        str(tmp / 'srresnet_x4.pth'), '--arch', 'MSRResNet', '--arch_opt', 'num_feat=8',
                        'num_block=1', '--scale', '4', '--tile', '8', '--tile_pad', '8', '--no_progress']) == 0
    by_name = cv2.imread(str(tmp / 'by_name' / 'gray_out.png'), cv2.IMREAD_UNCHANGED)
    net, scale = load_network({'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4},
                              tmp / 'srresnet_x4.pth')
    ref = upscale_array(net, cv2.imread(str(tmp / 'in' / 'gray.png'), cv2.IMREAD_UNCHANGED), scale)
    assert scale == 4 and by_name.shape == ref.shape == (48, 40)
    assert np.abs(by_name.astype(int) - ref.astype(int)).max() <= 1  # tiled vs whole: float rounding only


def test_wrong_architecture_gives_a_short_summary(setup, capsys):
    tmp, script = setup
    ckpt = tmp / 'rrdb_x4.pth'
    assert script.main(['-i', str(tmp / 'in'), '-o', str(tmp / 'o2'), '--model', str(ckpt), '--arch',
                        str(tmp / 'arch.yml'), '--no_progress']) == 2
    assert capsys.readouterr().err.strip() == (
        f'error: {ckpt} [params] does not fit MSRResNet: 8 missing keys (body.0.conv1.bias, body.0.conv1.weight, '
        'body.0.conv2.bias, body.0.conv2.weight, upconv1.bias (+3 more)) 36 unexpected keys (body.0.rdb1.conv1.bias, '
        'body.0.rdb1.conv1.weight, body.0.rdb1.conv2.bias, body.0.rdb1.conv2.weight, body.0.rdb1.conv3.bias '
        '(+31 more)) — is it a checkpoint of another architecture, width or scale?')


def test_wrong_scale_is_named(setup, capsys):
    tmp, script = setup
    ckpt = tmp / 'srresnet_x2.pth'
    # judged from the upsampler weights: the ×2 checkpoint does not fit the ×4 network
    assert script.main(['-i', str(tmp / 'in'), '-o', str(tmp / 'o3'), '--model', str(ckpt), '--arch', 'MSRResNet',
                        '--arch_opt', 'num_feat=8', 'num_block=1', '--scale', '4', '--no_progress']) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: checkpoint '{ckpt}' is a ×2 MSRResNet, but the network is built for ×4 (upscale: 4); "
        'use scale 2 or a ×4 checkpoint')
    # judged by running the network: it fits the checkpoint but does not upsample by --scale
    x2_yml = tmp / 'arch_x2.yml'
    x2_yml.write_text(yaml.safe_dump({'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1,
                                                    'upscale': 2}}))
    assert script.main(['-i', str(tmp / 'in'), '-o', str(tmp / 'o3'), '--model', str(ckpt), '--arch', str(x2_yml),
                        '--scale', '4', '--no_progress']) == 2
    assert capsys.readouterr().err.strip() == (f"error: MSRResNet from '{ckpt}' upsamples ×2, not ×4; "
                                               'set the scale to 2')
    state, _ = load_state_dict(ckpt)
    assert checkpoint_scale({'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}, state) == 2
    # RRDBNet ×2 unshuffles its input (12-channel conv_first); basicsr's scale=8 builds a ×4 net: still one answer
    rrdb = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4}
    rrdb_x4, _ = load_state_dict(tmp / 'rrdb_x4.pth')
    assert checkpoint_scale({**rrdb, 'scale': 2}, rrdb_x4) == 4
    rrdb_x2 = RRDBNet(3, 3, scale=2, num_feat=8, num_block=1, num_grow_ch=4).state_dict()
    assert checkpoint_scale({**rrdb, 'scale': 4}, rrdb_x2) == 2


def test_missing_inputs_are_named(setup, capsys):
    tmp, script = setup
    missing = tmp / 'no_such_folder'
    assert script.main(['-i', str(missing), '-o', str(tmp / 'o4'), '--model', str(tmp / 'srresnet_x4.pth'),
                        '--arch', 'MSRResNet']) == 2
    assert capsys.readouterr().err.strip() == f"error: input '{missing}' does not exist"
    assert script.main(['-i', str(tmp / 'in'), '-o', str(tmp / 'o4'), '--model', str(tmp / 'nope.pth'),
                        '--arch', 'MSRResNet']) == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint '{tmp / 'nope.pth'}' does not exist"
    assert script.main(['-i', str(tmp / 'in'), '-o', str(tmp / 'o4'), '--model', str(tmp / 'srresnet_x4.pth'),
                        '--arch', 'MSRResNett']) == 2
    assert capsys.readouterr().err.strip() == "error: unknown architecture 'MSRResNett'; did you mean 'MSRResNet'?"


def test_image_too_small_for_the_window(tmp_path, capsys):
    from basicsr.archs.swinir_arch import SwinIR
    torch.manual_seed(0)
    net_g = dict(type='SwinIR', upscale=2, in_chans=3, img_size=16, window_size=8, img_range=1., depths=[2],
                 embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler='pixelshuffledirect')
    torch.save({'params': SwinIR(**{k: v for k, v in net_g.items() if k != 'type'}).state_dict()},
               tmp_path / 'swinir.pth')
    (tmp_path / 'swinir.yml').write_text(yaml.safe_dump({'network_g': net_g}))
    cv2.imwrite(str(tmp_path / 'small.png'), np.zeros((6, 20, 3), np.uint8))
    assert _script().main(['-i', str(tmp_path / 'small.png'), '-o', str(tmp_path / 'o'), '--model',
                           str(tmp_path / 'swinir.pth'), '--arch', str(tmp_path / 'swinir.yml'), '--no_progress']) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'small.png'} is 6x20 (HxW) at the network input; SwinIR needs at least 8x8 "
        '(its window / pixel-unshuffle size); use a larger image')


def test_an_unreadable_input_is_named_or_skipped_and_counted(setup, tmp_path, capsys):
    tmp, script = setup
    inp = tmp_path / 'in'
    inp.mkdir()
    cv2.imwrite(str(inp / 'good.png'), np.full((12, 12, 3), 128, np.uint8))
    (inp / 'broken.png').write_text('not an image')
    common = ['-o', str(tmp_path / 'out'), '--model', str(tmp / 'srresnet_x4.pth'), '--arch', str(tmp / 'arch.yml'),
              '--no_progress']
    assert script.main(['-i', str(inp), *common]) == 2
    err = capsys.readouterr().err
    assert f"cannot decode image '{inp / 'broken.png'}'" in err and '--on_bad_image skip' in err
    assert script.main(['-i', str(inp), *common, '--on_bad_image', 'skip']) == 0
    captured = capsys.readouterr()
    assert f"skipped: cannot decode image '{inp / 'broken.png'}'" in captured.err
    assert captured.out.strip() == f"1 image(s) written to {tmp_path / 'out'}; 1 unreadable image(s) skipped"
    assert (tmp_path / 'out' / 'good_out.png').is_file()
