"""Channel maps (basicsr_ext/evaluation/channel_maps.py, scripts/channel_maps.py): captured features,
per-channel statistics, the written plots and CSV, both command-line forms, and the error messages."""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.utils.matlab_functions import imresize

from basicsr_ext.archs import build_network
from basicsr_ext.data.skimage_photos_dataset import load_photo
from basicsr_ext.evaluation import channel_maps as cm
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')
torch.set_num_threads(1)

SRRESNET = dict(type='MSRResNet', num_feat=8, num_block=2, upscale=4)
SWINIR = dict(type='SwinIR', upscale=4, img_size=8, window_size=4, embed_dim=12, depths=[2, 2], num_heads=[2, 2],
              mlp_ratio=2., upsampler='pixelshuffledirect', drop_path_rate=0.)
RRDB = dict(type='RRDBNetAnyScale', num_feat=8, num_block=1, num_grow_ch=4, scale=4)


def _script():
    return load_script('channel_maps')


def _net(opt, seed):
    torch.manual_seed(seed)
    return build_network(opt).eval()


def _photo(name, h, w):
    """A scikit-image photo as a small RGB float tensor (1, 3, h, w)."""
    img = cv2.resize(load_photo(name), (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


def _write_photo(path, name, h, w):
    img = cv2.resize(load_photo(name), (w, h), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), np.round(img * 255).astype(np.uint8))


def _read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Two tiny SRResNet checkpoints (different seeds), an RRDB one, an arch YAML and a folder of LR photos."""
    tmp = tmp_path_factory.mktemp('channel_maps')
    torch.save({'params': _net(SRRESNET, 0).state_dict()}, tmp / 'a.pth')
    torch.save({'params': _net(SRRESNET, 1).state_dict(), 'params_ema': _net(SRRESNET, 2).state_dict()}, tmp / 'b.pth')
    torch.save({'params': _net(RRDB, 0).state_dict()}, tmp / 'rrdb.pth')
    (tmp / 'net.yml').write_text(yaml.safe_dump({'name': 'tiny', 'network_g': SRRESNET}))
    lr = tmp / 'lr'
    lr.mkdir()
    _write_photo(lr / 'astronaut.png', 'astronaut', 20, 24)
    _write_photo(lr / 'coffee.png', 'coffee', 18, 26)
    (lr / 'notes.txt').write_text('not an image')
    return tmp


# ---------------------------------------------------------------- capture
def test_srresnet_block_equals_a_forward_hook_on_the_block():
    net = _net(SRRESNET, 0)
    lq = _photo('astronaut', 20, 24)
    seen = []
    handle = net.body[1].register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()))
    with torch.no_grad():
        net(lq)
    handle.remove()
    feat = cm.capture_site_features(net, 'blocks.1', lq)
    assert feat.dtype == torch.float32 and feat.device.type == 'cpu' and not feat.requires_grad
    assert feat.shape == (1, 8, 20, 24)
    assert torch.equal(feat, seen[0])


def test_last_conv_input_equals_a_pre_hook_on_conv_last():
    net = _net(SRRESNET, 0)
    lq = _photo('coffee', 11, 13)
    seen = []
    handle = net.conv_last.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        net(lq)
    handle.remove()
    feat = cm.capture_site_features(net, 'last_conv_input', lq)
    assert feat.shape == (1, 8, 44, 52)  # at HR, after the upsampler
    assert torch.equal(feat, seen[0])


def test_swinir_token_site_is_the_tokens_reshaped_by_hand_without_the_padding():
    net = _net(SWINIR, 0)
    lq = _photo('astronaut', 10, 14)  # not a multiple of the window (4): padded to 12x16 inside
    seen = []

    def hook(module, args, out):
        seen.append((out.detach().clone(), tuple(args[1])))

    handle = net.layers[1].register_forward_hook(hook)
    padded = F.pad(lq, (0, 2, 0, 2), mode='reflect')
    with torch.no_grad():
        net(padded)
    handle.remove()
    tokens, x_size = seen[0]
    assert x_size == (12, 16) and tokens.shape == (1, 12 * 16, 12)
    by_hand = torch.empty(1, 12, 12, 16)
    for i in range(12):
        for j in range(16):
            by_hand[0, :, i, j] = tokens[0, i * 16 + j]  # token i*W + j is pixel (i, j)
    feat = cm.capture_site_features(net, 'blocks.1', lq)
    assert feat.shape == (1, 12, 10, 14)
    assert torch.allclose(feat, by_hand[:, :, :10, :14], atol=1e-6)


def test_capture_runs_in_eval_mode_and_restores_the_mode():
    net = _net(SRRESNET, 0).train()
    modes = []
    net.body[0].register_forward_pre_hook(lambda m, args: modes.append(m.training))
    cm.capture_site_features(net, 'blocks.0.conv.1', _photo('coffee', 8, 8))
    assert modes == [False] and net.training
    assert not net.body[0].conv2._forward_hooks  # the capture hook is gone


def test_capture_stops_after_the_site():
    net = _net(SRRESNET, 0)
    upsampler_runs = []
    net.upconv1.register_forward_hook(lambda m, args, out: upsampler_runs.append(1))
    cm.capture_site_features(net, 'blocks.1', _photo('coffee', 8, 8))
    assert upsampler_runs == []  # the HR upsampler (most of the cost) is skipped for a body site
    cm.capture_site_features(net, 'last_conv_input', _photo('coffee', 8, 8))
    assert upsampler_runs == [1]


# ---------------------------------------------------------------- statistics
def test_mean_abs_matches_numpy_over_images_of_different_sizes():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(1, 5, 7, 9)), rng.normal(size=(2, 5, 4, 3)) * 3, rng.normal(size=(1, 5, 11, 2))]
    features = [torch.from_numpy(a).float() for a in arrays]
    expected = np.zeros(5)
    for a in arrays:
        for c in range(5):
            expected[c] += np.abs(a[:, c].astype(np.float32)).sum() / a[:, c].size
    expected /= len(arrays)
    assert np.allclose(cm.channel_mean_abs(features), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r'different channel counts \[4, 5\]'):
        cm.channel_mean_abs([features[0], torch.zeros(1, 4, 2, 2)])


def test_top_k_share_on_a_hand_made_tensor():
    # channel c holds +-v_c in a checkerboard: mean |activation| is v_c whatever the signs
    values = [4.0, 1.0, 3.0, 2.0]
    sign = torch.tensor([[1., -1.], [-1., 1.]]).repeat(3, 3)
    feat = torch.stack([v * sign for v in values])[None]
    mean_abs = cm.mean_abs_per_channel(feat)
    assert np.allclose(mean_abs, values)
    assert cm.top_k_share(mean_abs, 1) == pytest.approx(4 / 10)
    assert cm.top_k_share(mean_abs, 2) == pytest.approx(7 / 10)
    assert cm.top_k_share(mean_abs, 4) == pytest.approx(1.0)
    assert cm.top_k_share(mean_abs, 99) == pytest.approx(1.0)
    assert cm.top_k_share(np.ones(8), 2) == pytest.approx(2 / 8)  # equal channels: k/C
    assert np.isnan(cm.top_k_share(np.zeros(3), 1))
    stats = cm.ChannelStats('m', 'arch', 'blocks.0', mean_abs, 1)
    assert stats.ranks().tolist() == [1, 4, 2, 3]
    assert np.allclose(stats.shares(), [0.4, 0.1, 0.3, 0.2])
    with pytest.raises(ValueError, match='top_k must be at least 1, got 0'):
        cm.top_k_share(mean_abs, 0)


# ---------------------------------------------------------------- files
def test_plots_and_csv_are_written(setup, tmp_path):
    loaded, skipped = cm.load_models(cm.read_models_file(_options_file(setup, tmp_path)), torch.device('cpu'))
    assert [m.name for m in loaded] == ['A', 'B'] and skipped == ['Bicubic']
    files = cm.list_inputs(setup / 'lr')
    assert [f.name for f in files] == ['astronaut.png', 'coffee.png']
    stats, first = cm.collect_channel_stats(loaded, 'blocks.1', files)
    written = cm.write_channel_maps(tmp_path / 'out', stats, first, files[0].name, top_k=3, max_channels=5)
    assert sorted(Path(p).name for p in written) == ['A_maps.png', 'B_maps.png', 'channel_stats.csv', 'comparison.png']
    for name in ('A_maps.png', 'B_maps.png', 'comparison.png'):
        img = cv2.imread(str(tmp_path / 'out' / name))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0
    # the CSV against an independent capture of every image
    rows = _read_csv(tmp_path / 'out' / 'channel_stats.csv')
    assert list(rows[0]) == ['model', 'channel', 'mean_abs', 'rank', 'share'] and len(rows) == 16
    for m in loaded:
        feats = [cm.capture_site_features(m.net, 'blocks.1', _png_tensor(f)) for f in files]
        expected = np.mean([np.abs(f[0].numpy()).mean(axis=(1, 2)) for f in feats], axis=0)
        mine = [r for r in rows if r['model'] == m.name]
        assert [int(r['channel']) for r in mine] == list(range(8))
        got = np.array([float(r['mean_abs']) for r in mine])
        assert np.allclose(got, expected, rtol=1e-5)
        assert [int(r['rank']) for r in mine] == (np.argsort(np.argsort(-expected)) + 1).tolist()
        assert np.isclose(sum(float(r['share']) for r in mine), 1.0, atol=1e-6)
    assert stats[1].images == 2
    assert stats[1].top_k_share(3) == pytest.approx(np.sort(got)[::-1][:3].sum() / got.sum(), rel=1e-5)


def _png_tensor(path):
    img = cv2.imread(str(path))[:, :, ::-1].astype(np.float32) / 255.
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


def _options_file(setup, tmp_path, **extra):
    """A test-options file as test.py takes it (the datasets are not read by channel maps)."""
    opt = {
        'name': 'tiny',
        'models': [{'name': 'Bicubic', 'type': 'bicubic'},
                   {'name': 'A', 'network_g': str(setup / 'net.yml'), 'path': str(setup / 'a.pth')},
                   {'name': 'B', 'network_g': SRRESNET, 'path': str(setup / 'b.pth'), 'param_key': 'params_ema'}],
        'datasets': [{'name': 'Set5', 'dataroot_hr': str(tmp_path / 'not_here')}],
    }
    opt.update(extra)
    path = tmp_path / 'test.yml'
    path.write_text(yaml.safe_dump(opt))
    return path


def test_grid_shows_the_strongest_channels_first(tmp_path):
    # channel levels 1, 2, 9, 4 with +-10 % noise and random signs: the panels go 2, 3, 1 (max 3 shown)
    gen = torch.Generator().manual_seed(0)
    noise = 1 + 0.1 * torch.rand(1, 4, 6, 6, generator=gen)
    signs = torch.randint(0, 2, (1, 4, 6, 6), generator=gen) * 2 - 1
    feat = torch.tensor([1., 2., 9., 4.])[None, :, None, None] * noise * signs
    fig = cm.plot_channel_grid(tmp_path / 'grid.png', feat, 'order', max_channels=3)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ['ch 2', 'ch 3', 'ch 1']
    assert cv2.imread(str(tmp_path / 'grid.png')) is not None
    # one colour scale for every panel: 0 to the 99.5th percentile of the |activation| of the shown channels
    limits = {im.get_clim() for ax in fig.axes for im in ax.get_images()}
    assert len(limits) == 1
    low, high = limits.pop()
    assert low == 0 and high == pytest.approx(np.percentile(np.abs(feat[0, [2, 3, 1]].numpy()), 99.5))


# ---------------------------------------------------------------- the script
def test_script_with_a_test_options_file(setup, tmp_path, capsys):
    out = tmp_path / 'maps'
    assert _script().main(['-opt', str(_options_file(setup, tmp_path)), '--site', 'blocks.0', '-i', str(setup / 'lr'),
                           '--out', str(out), '--top_k', '2', '--device', 'cpu', '--no_progress']) == 0
    text = capsys.readouterr().out
    assert sorted(p.name for p in (out / 'blocks.0').iterdir()) == ['A_maps.png', 'B_maps.png', 'channel_stats.csv',
                                                                    'comparison.png']
    rows = _read_csv(out / 'blocks.0' / 'channel_stats.csv')
    shares = {}
    for name in ('A', 'B'):
        vals = np.array([float(r['mean_abs']) for r in rows if r['model'] == name])
        shares[name] = np.sort(vals)[::-1][:2].sum() / vals.sum()
    lines = text.splitlines()
    assert 'Bicubic: skipped (a bicubic pseudo-model has no features)' in lines
    assert 'site blocks.0, 2 image(s)' in lines
    header = next(i for i, line in enumerate(lines) if line.startswith('model'))
    assert lines[header].split() == ['model', 'arch', 'channels', 'top-2', 'share', 'uniform']
    assert lines[header + 1].split() == ['A', 'MSRResNet', '8', f"{shares['A']:.3f}", '0.250']
    assert lines[header + 2].split() == ['B', 'MSRResNet', '8', f"{shares['B']:.3f}", '0.250']


def test_script_quick_form_matches_the_loaded_weights(setup, tmp_path, capsys):
    out = tmp_path / 'maps'
    photo = setup / 'lr' / 'coffee.png'
    assert _script().main(['--site', 'last_conv_input', '-i', str(photo), '--network', str(setup / 'net.yml'),
                           '--ckpt', str(setup / 'a.pth'), '--name', 'Base', '--ckpt', str(setup / 'b.pth'),
                           '--name', 'EMA', '--param_key', 'params', '--param_key', 'params_ema', '--out', str(out),
                           '--no_progress']) == 0
    assert 'site last_conv_input, 1 image(s)' in capsys.readouterr().out
    rows = _read_csv(out / 'last_conv_input' / 'channel_stats.csv')
    # EMA is the params_ema of b.pth, which is the seed-2 network
    for name, seed in (('Base', 0), ('EMA', 2)):
        feat = cm.capture_site_features(_net(SRRESNET, seed), 'last_conv_input', _png_tensor(photo))
        expected = np.abs(feat[0].numpy()).mean(axis=(1, 2))
        got = [float(r['mean_abs']) for r in rows if r['model'] == name]
        assert np.allclose(got, expected, rtol=1e-5)
    for name in ('Base_maps.png', 'EMA_maps.png', 'comparison.png'):
        assert cv2.imread(str(out / 'last_conv_input' / name)) is not None


def test_script_downscale_and_max_images(setup, tmp_path, capsys):
    hr = tmp_path / 'hr'
    hr.mkdir()
    _write_photo(hr / 'b_chelsea.png', 'chelsea', 42, 49)  # not a multiple of 4: mod-cropped to 40x48 first
    _write_photo(hr / 'a_rocket.png', 'rocket', 40, 40)
    out = tmp_path / 'maps'
    assert _script().main(['--site', 'blocks.1', '-i', str(hr), '--network', str(setup / 'net.yml'), '--ckpt',
                           str(setup / 'a.pth'), '--downscale', '--max_images', '1', '--out', str(out),
                           '--no_progress']) == 0
    assert 'site blocks.1, 1 image(s) (downscaled)' in capsys.readouterr().out
    img = cv2.imread(str(hr / 'a_rocket.png'))[:, :, ::-1].astype(np.float32) / 255.
    lr = np.clip(imresize(img, 0.25, antialiasing=True), 0, 1)
    feat = cm.capture_site_features(_net(SRRESNET, 0), 'blocks.1',
                                    torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None])
    rows = _read_csv(out / 'blocks.1' / 'channel_stats.csv')
    assert [r['model'] for r in rows] == ['a'] * 8  # default name: the checkpoint's file name
    assert np.allclose([float(r['mean_abs']) for r in rows], np.abs(feat[0].numpy()).mean(axis=(1, 2)), rtol=1e-5)


# ---------------------------------------------------------------- errors
SITES_SRRESNET = 'MSRResNet has: head.0, blocks.0..1, blocks.<i>.conv.0..1, tail.0..2, last_conv_input'


def test_unknown_site(setup, tmp_path, capsys):
    with pytest.raises(cm.SiteError) as err:
        cm.capture_site_features(_net(SRRESNET, 0), 'block.1', _photo('coffee', 8, 8))
    message = f"unknown site 'block.1': MSRResNet has no such site (did you mean 'blocks.1'?); {SITES_SRRESNET}"
    assert str(err.value) == message
    with pytest.raises(cm.SiteError) as err:
        cm.find_site(_net(SWINIR, 0), 'blocks.7')
    assert str(err.value) == ("unknown site 'blocks.7': SwinIR has no such site (did you mean 'blocks.1'?); "
                              'SwinIR has: head.0, blocks.0..1, blocks.<i>.conv.0..0, tail.0, last_conv_input')
    assert _script().main(['--site', 'block.1', '-i', str(setup / 'lr'), '--network', str(setup / 'net.yml'),
                           '--ckpt', str(setup / 'a.pth'), '--out', str(tmp_path), '--no_progress']) == 2
    assert capsys.readouterr().err.strip() == f"error: model 'a': {message}"
    assert not (tmp_path / 'block.1').exists()


def test_missing_input_and_folder_without_images(setup, tmp_path, capsys):
    script = _script()
    base = ['--site', 'blocks.0', '--network', str(setup / 'net.yml'), '--ckpt', str(setup / 'a.pth'), '--out',
            str(tmp_path / 'o'), '--no_progress']
    missing = tmp_path / 'no_such_folder'
    assert script.main(base + ['-i', str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"error: input '{missing}' does not exist"
    with pytest.raises(FileNotFoundError) as err:
        cm.list_inputs(missing)
    assert str(err.value) == f"input '{missing}' does not exist"
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'readme.txt').write_text('no images here')
    assert script.main(base + ['-i', str(empty)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: no images in input folder '{empty}' (looked for .png, .bmp, .jpg, .jpeg, .tif, .tiff, .webp, .ppm, "
        '.pgm)')


def test_checkpoint_of_another_arch_uses_the_loader_message(setup, tmp_path, capsys):
    ckpt = setup / 'rrdb.pth'
    assert _script().main(['--site', 'blocks.0', '-i', str(setup / 'lr'), '--network', str(setup / 'net.yml'),
                           '--ckpt', str(ckpt), '--name', 'Wrong', '--out', str(tmp_path), '--no_progress']) == 2
    assert capsys.readouterr().err.strip() == (
        f'error: models[0] (Wrong): {ckpt} [params] does not fit MSRResNet: 12 missing keys (body.0.conv1.bias, '
        'body.0.conv1.weight, body.0.conv2.bias, body.0.conv2.weight, body.1.conv1.bias (+7 more)) 36 unexpected keys '
        '(body.0.rdb1.conv1.bias, body.0.rdb1.conv1.weight, body.0.rdb1.conv2.bias, body.0.rdb1.conv2.weight, '
        'body.0.rdb1.conv3.bias (+31 more)) — is it a checkpoint of another architecture, width or scale?')


def test_command_line_model_errors(setup, tmp_path, capsys):
    script = _script()
    base = ['--site', 'blocks.0', '-i', str(setup / 'lr'), '--out', str(tmp_path), '--no_progress']
    net, a, b = str(setup / 'net.yml'), str(setup / 'a.pth'), str(setup / 'b.pth')
    cases = [
        ([], 'error: give the models: -opt <test options YAML>, or --network <options YAML> --ckpt <.pth> '
         '(repeat --ckpt per model)'),
        (['--ckpt', a], 'error: --ckpt needs --network: the options YAML with the network_g the checkpoints were '
         'trained with'),
        (['--network', net, '--ckpt', a, '--ckpt', b, '--name', 'X'],
         'error: --name is given 1 times for 2 --ckpt; give one name per --ckpt'),
        (['--network', net, '--network', net, '--network', net, '--ckpt', a, '--ckpt', b],
         'error: --network is given 3 times for 2 --ckpt; give it once (shared by all models) or once per --ckpt'),
        (['--network', net, '--ckpt', a, '--ckpt', a], "error: two models would be named 'a'; name each with --name"),
        (['--network', net, '--ckpt', str(tmp_path / 'nope.pth')],
         f"error: models[0].path: file '{tmp_path / 'nope.pth'}' does not exist"),
        (['-opt', str(tmp_path / 'x.yml'), '--ckpt', a],
         'error: -opt reads the models from the file; leave out --ckpt, --network, --param_key and --name'),
    ]
    for extra, message in cases:
        assert script.main(base + extra) == 2, extra
        assert capsys.readouterr().err.strip() == message


def test_default_model_names():
    script = _script()
    assert script._default_name('experiments/SRResNet_x4_eats/models/net_g_500000.pth') == 'SRResNet_x4_eats'
    assert script._default_name('weights/RealESRNet_x4plus.pth') == 'RealESRNet_x4plus'
