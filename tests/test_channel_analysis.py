"""The papers' analysis figures (basicsr_ext/evaluation/channel_correlation.py, channel_ablation.py and their flags
in scripts/channel_maps.py): channel correlation and channel ablation against independent numpy computations on a
tiny network, the files written, and the errors."""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.utils.matlab_functions import imresize

from basicsr_ext.archs import build_network
from basicsr_ext.evaluation import channel_ablation as ca
from basicsr_ext.evaluation import channel_correlation as cc
from basicsr_ext.evaluation.channel_maps import MapModel
from conftest import load_script
from test_channel_maps import _read_csv, _write_photo

pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')
torch.set_num_threads(1)

SRRESNET = dict(type='MSRResNet', num_feat=8, num_block=2, upscale=4)


def _net(seed):
    torch.manual_seed(seed)
    net = build_network(SRRESNET).eval()
    with torch.no_grad():  # weights larger than the 0.1-scaled init, so the channels visibly matter
        for name, param in net.named_parameters():
            if name.endswith('weight'):
                param.normal_(0, 0.08)
    return net


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Two tiny SRResNet checkpoints, their arch YAML, two HR photos, and LR/HR folders made from them."""
    tmp = tmp_path_factory.mktemp('channel_analysis')
    for name, seed in (('a', 0), ('b', 1)):
        torch.save({'params': _net(seed).state_dict()}, tmp / f'{name}.pth')
    (tmp / 'net.yml').write_text(yaml.safe_dump({'name': 'tiny', 'network_g': SRRESNET}))
    hr, lr, gt = tmp / 'hr', tmp / 'lr', tmp / 'gt'
    for d in (hr, lr, gt):
        d.mkdir()
    _write_photo(hr / 'astronaut.png', 'astronaut', 42, 48)  # not a multiple of 4 in height: mod-cropped to 40
    _write_photo(hr / 'coffee.png', 'coffee', 36, 52)
    for f in hr.iterdir():
        img = cv2.imread(str(f))[:40 if f.stem == 'astronaut' else 36]
        cv2.imwrite(str(gt / f'{f.stem}.png'), img)
        small = np.clip(imresize(img.astype(np.float32) / 255., 0.25, antialiasing=True), 0, 1)
        cv2.imwrite(str(lr / f'{f.stem}.png'), np.round(small * 255).astype(np.uint8))
    return tmp


def _pairs_numpy(folder, scale=4):
    """(LR float32 HWC RGB, HR uint8 HWC RGB) from HR photos, made without the module under test."""
    out = []
    for f in sorted(Path(folder).iterdir()):
        hr = cv2.imread(str(f))[:, :, ::-1]
        hr = hr[:hr.shape[0] // scale * scale, :hr.shape[1] // scale * scale]
        lr = np.clip(imresize(hr.astype(np.float32) / 255., 1 / scale, antialiasing=True), 0, 1)
        out.append((lr.astype(np.float32), np.ascontiguousarray(hr)))
    return out


def _numpy_psnr(sr_float, hr_uint8, crop):
    sr = np.clip(np.round(np.clip(sr_float, 0, 1) * 255), 0, 255)
    a, b = sr[crop:-crop, crop:-crop].astype(np.float64), hr_uint8[crop:-crop, crop:-crop].astype(np.float64)
    return 10 * np.log10(255.**2 / np.mean((a - b)**2))


def _run(net, lr):
    with torch.no_grad():
        out = net(torch.from_numpy(lr.transpose(2, 0, 1).copy())[None])
    return out[0].numpy().transpose(1, 2, 0)


# ---------------------------------------------------------------- channel correlation
def test_correlation_matrix_matches_numpy(setup):
    net = _net(0)
    pairs = _pairs_numpy(setup / 'hr')
    # reference: the conv1 output of body block 1 read by a plain forward hook; cosines in numpy, per channel pair
    seen = []
    handle = net.body[1].conv1.register_forward_hook(lambda m, a, out: seen.append(out[0].numpy().copy()))
    for lr, _ in pairs:
        _run(net, lr)
    handle.remove()
    responses = np.concatenate([f.reshape(f.shape[0], -1) for f in seen], axis=1).astype(np.float64)  # (C, pixels)
    c = responses.shape[0]
    expected = np.array([[np.dot(responses[a], responses[b]) / np.linalg.norm(responses[a]) /
                          np.linalg.norm(responses[b]) for b in range(c)] for a in range(c)])
    off = [expected[a, b] for a in range(c) for b in range(c) if a != b]

    acc = cc.CorrelationAccumulator('blocks.1.conv.0')
    from basicsr_ext.evaluation.channel_stats import capture_site_features
    model = MapModel('A', 'MSRResNet', 4, net)
    for lr, _ in pairs:
        acc.add(model, capture_site_features(net, 'blocks.1.conv.0', torch.from_numpy(lr.transpose(2, 0, 1).copy())[None]))
    result, = acc.results()
    assert result.images == 2 and result.channels == 8
    assert np.allclose(result.matrix, expected, atol=1e-9)
    assert result.mean_off_diagonal == pytest.approx(np.mean(off), abs=1e-9)
    assert result.mean_abs_off_diagonal == pytest.approx(np.mean(np.abs(off)), abs=1e-9)
    assert np.allclose(np.diag(result.matrix), 1)


def test_correlation_of_silent_channels_and_extremes():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1., 2.], [3., 4.]])
    x[0, 1] = -2 * x[0, 0]  # anti-parallel: -1
    matrix = cc.cosine_matrix(cc.gram_matrix(x))  # channel 2 is silent: its row and column are NaN
    assert matrix[0, 1] == pytest.approx(-1) and np.isnan(matrix[2]).all() and np.isnan(matrix[:, 2]).all()
    assert cc.mean_off_diagonal(matrix) == pytest.approx(-1)  # NaN entries left out
    assert np.isnan(cc.mean_off_diagonal(np.full((2, 2), np.nan)))


# ---------------------------------------------------------------- channel ablation
def test_ablation_drops_match_numpy(setup):
    net = _net(0)
    pairs = _pairs_numpy(setup / 'hr')

    def numpy_set_psnr(model):
        return np.mean([_numpy_psnr(_run(model, lr), hr, 4) for lr, hr in pairs])

    base = numpy_set_psnr(net)
    expected = []
    for c in range(8):  # reference: channel c of blocks.0.conv.0 silenced by zeroing filter c (kernel and bias)
        twin = copy.deepcopy(net)
        with torch.no_grad():
            twin.body[0].conv1.weight[c] = 0
            twin.body[0].conv1.bias[c] = 0
        expected.append(base - numpy_set_psnr(twin))
    expected = np.array(expected)

    files = sorted((setup / 'hr').iterdir())
    model = MapModel('A', 'MSRResNet', 4, net)
    pairs = ca.ablation_pairs(files, 4, downscale=True)
    result = ca.channel_ablation(model, 'blocks.0.conv.0', pairs, batch=1)
    assert result.base_psnr == pytest.approx(base, abs=1e-9)
    assert np.allclose(result.drops, expected, atol=1e-9)
    assert np.allclose(result.sorted_drops(), np.sort(expected)[::-1], atol=1e-9)
    assert result.spread == pytest.approx(np.std(expected), abs=1e-9)
    assert result.range == pytest.approx(expected.max() - expected.min(), abs=1e-9)
    assert np.abs(expected).max() > 1e-3  # zeroing a channel does change the output
    assert list(result.ranks()) == list(np.argsort(np.argsort(-expected, kind='stable'), kind='stable') + 1)
    assert not net.training
    # several ablated copies per forward: the same up to a rare ±1 flip of the uint8 output (batched convs
    # sum in another order), which moves a PSNR by ~1e-5 dB here
    batched = ca.channel_ablation(model, 'blocks.0.conv.0', pairs, batch=3)
    assert np.allclose(batched.channel_psnr, result.channel_psnr, atol=1e-4)


def test_ablation_pairs_need_ground_truth(setup):
    files = sorted((setup / 'lr').iterdir())
    with pytest.raises(ValueError, match='channel ablation needs ground truth'):
        ca.ablation_pairs(files, 4)
    empty = setup / 'no_gt'
    empty.mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError) as err:
        ca.ablation_pairs(files, 4, gt_dir=empty)
    assert str(err.value) == (f"no ground truth for 'astronaut' in '{empty}' (channel ablation pairs the LR and HR "
                              'images by file name)')
    pairs = ca.ablation_pairs(files, 4, gt_dir=setup / 'gt')
    assert [p.gt.shape for p in pairs] == [(40, 48, 3), (36, 52, 3)] and pairs[0].lq.shape == (1, 3, 10, 12)


# ---------------------------------------------------------------- the script
def test_script_writes_both_figures(setup, tmp_path, capsys):
    out = tmp_path / 'maps'
    args = ['--site', 'blocks.0.conv.0', '-i', str(setup / 'lr'), '--gt', str(setup / 'gt'), '--network',
            str(setup / 'net.yml'), '--ckpt', str(setup / 'a.pth'), '--name', 'A', '--ckpt', str(setup / 'b.pth'),
            '--name', 'B', '--correlation', '--ablation', '--ablation_batch', '4', '--out', str(out), '--no_progress']
    assert load_script('channel_maps').main(args) == 0
    text = capsys.readouterr().out
    site = out / 'blocks.0.conv.0'
    for name in ('correlation.png', 'ablation.png'):
        assert cv2.imread(str(site / name)) is not None
    summary = _read_csv(site / 'correlation_summary.csv')
    matrix = _read_csv(site / 'correlation.csv')
    assert [r['model'] for r in summary] == ['A', 'B'] and len(matrix) == 2 * 64
    for row in summary:  # the summary is the mean off-diagonal of the matrix written beside it
        values = np.array([float(r['cosine']) for r in matrix if r['model'] == row['model']]).reshape(8, 8)
        assert float(row['mean_off_diagonal']) == pytest.approx(cc.mean_off_diagonal(values), abs=1e-8)
    ablation = _read_csv(site / 'ablation_summary.csv')
    per_channel = _read_csv(site / 'channel_ablation.csv')
    for row in ablation:
        drops = np.array([float(r['drop']) for r in per_channel if r['model'] == row['model']])
        assert len(drops) == 8 and float(row['spread_std']) == pytest.approx(np.std(drops), abs=1e-8)
        assert float(row['max_drop']) == pytest.approx(drops.max(), abs=1e-8)
    lines = text.splitlines()
    head = lines.index('channel ablation (PSNR drop in dB when one channel is zeroed):') + 1
    assert lines[head].split()[:4] == ['model', 'arch', 'channels', 'PSNR']
    assert lines[head + 1].split()[0] == 'A' and lines[head + 1].split()[-1] == f"{float(ablation[0]['spread_std']):.4f}"
    assert 'channel correlation (cosine similarity of channel responses):' in lines


@pytest.mark.parametrize('extra, message', [
    (['--ablation'], 'error: --ablation needs ground truth: HR inputs with --downscale, or LR inputs with --gt '
     '<folder of HR images of the same names> (not both)'),
    (['--gt', 'x'], 'error: --gt is the ground truth of --ablation; add --ablation or leave out --gt'),
    (['--ablation', '--downscale', '--ablation_batch', '0'], 'error: --ablation_batch must be at least 1, got 0'),
])
def test_script_errors(setup, tmp_path, capsys, extra, message):
    args = ['--site', 'blocks.0', '-i', str(setup / 'lr'), '--network', str(setup / 'net.yml'), '--ckpt',
            str(setup / 'a.pth'), '--out', str(tmp_path), '--no_progress'] + extra
    assert load_script('channel_maps').main(args) == 2
    assert capsys.readouterr().err.strip() == message
