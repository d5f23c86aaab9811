"""Benchmark evaluation: tables in the papers' layout, protocols, option errors, paper comparison, tiling.

The end-to-end runs use Set5/Set14 from ../shared/datasets (skipped when absent); the LR
sets are generated once per module into a temporary cache.
"""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.archs.swinir_arch import SwinIR
from basicsr.utils.matlab_functions import imresize
from PIL import Image

from basicsr_ext.data.eval_degradations import DEGRADATIONS
from basicsr_ext.archs.forward import check_input_size, forward_tiled, input_multiple
from basicsr_ext.evaluation.options import load_test_options, validate_test_options
from basicsr_ext.evaluation.paper_compare import compare_files
from basicsr_ext.evaluation.testsets import prepare_dataset
from basicsr_ext.models.loading import forward_batches
from basicsr_ext.test import main as run_test_cli
from basicsr_ext.utils.schema import OptionError
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'datasets'
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f'{SHARED} not found: the benchmark images live in '
                                  '../shared/datasets beside the repository')
pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')
torch.set_num_threads(2)




def _read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- a tiny trained model
def _train_tiny(path, steps=25):
    """MSRResNet 4/1 after a few Adam steps on random 64-px crops of Set5 (bicubic ×4 pairs)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = MSRResNet(num_feat=4, num_block=1, upscale=4)
    hrs = [np.asarray(Image.open(p).convert('RGB')) for p in sorted((SHARED / 'Set5' / 'HR').glob('*.png'))]
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        crops = []
        for _ in range(4):
            hr = hrs[rng.integers(len(hrs))]
            y, x = rng.integers(hr.shape[0] - 64), rng.integers(hr.shape[1] - 64)
            crops.append(torch.from_numpy(hr[y:y + 64, x:x + 64].transpose(2, 0, 1).copy()).float() / 255.)
        gt = torch.stack(crops)
        lq = F.interpolate(gt, scale_factor=0.25, mode='bicubic', antialias=True).clamp(0, 1)
        loss = F.l1_loss(net(lq), gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save({'params': net.state_dict()}, path)
    return path


# 4 features: the HR-resolution convolutions dominate the run time of the 8-degradation tables
NET_G = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1, 'upscale': 4}


def _options(tmp, ckpt, **extra):
    opt = {
        'name': 'tiny_reflash_x4',
        'models': [{'name': 'Bicubic', 'type': 'bicubic'},
                   {'name': 'Tiny', 'network_g': NET_G, 'path': str(ckpt)}],
        'datasets': [{'name': 'Set5', 'dataroot_hr': str(SHARED / 'Set5' / 'HR')},
                     {'name': 'Set14', 'dataroot_hr': str(SHARED / 'Set14' / 'HR')}],
        'degradations': 'all',
        'scales': [4],
        'metrics': {'psnr': True, 'ssim': False},
        'baseline': 'Bicubic',
        'improvement': 'Tiny',
        'cache_dir': str(tmp / 'cache'),
        'results_root': str(tmp / 'results'),
        'progress': False,
        'batch_same_size': True,
    }
    opt.update(extra)
    return opt


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f'{SHARED} not found')
    tmp = tmp_path_factory.mktemp('bench')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core box one thread beats two fighting for the cores
    try:
        ckpt = _train_tiny(tmp / 'tiny.pth')
        opt_path = tmp / 'tiny.yml'
        opt_path.write_text(yaml.safe_dump(_options(tmp, ckpt, num_threads=1)))
        assert run_test_cli(['-opt', str(opt_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp, ckpt


@needs_shared
def test_tables_have_every_cell_and_a_plot(bench):
    tmp, _ = bench
    res = tmp / 'results'
    rows = _read_csv(res / 'table.csv')
    assert [r['model'] for r in rows] == ['Bicubic', 'Tiny', 'Improvement'] * 2
    assert [r['dataset'] for r in rows] == ['Set5'] * 3 + ['Set14'] * 3
    for r in rows:
        assert r['metric'] == 'psnr' and r['scale'] == '4'
        for d in DEGRADATIONS:
            float(r[d])  # filled and numeric
    for r in rows:
        if r['model'] != 'Improvement':
            assert 15 < float(r['clean']) < 40
    md = (res / 'table.md').read_text()
    assert '## Set5 ×4 (5 images)' in md and '## Set14 ×4 (14 images)' in md
    table_lines = [line for line in md.splitlines() if line.startswith('| ') and not line.startswith('| Model')]
    assert len(table_lines) == 6
    for line in table_lines:
        cells = [c.strip() for c in line.strip('|').split('|')][1:]
        assert len(cells) == 8 and all(c and c != '–' for c in cells)
    assert '| **Improvement** (Tiny − Bicubic) |' in md
    report = json.loads((res / 'table.json').read_text())
    assert len(report['results']) == 4 and len(report['improvement']) == 2
    for r in report['results'] + report['improvement']:
        assert list(r['psnr']) == list(DEGRADATIONS) and all(np.isfinite(list(r['psnr'].values())))
    for name in ('Set5', 'Set14'):
        png = res / f'plot_{name}_x4.png'
        img = np.asarray(Image.open(png))
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 5
    per_image = _read_csv(res / 'per_image.csv')
    assert len(per_image) == (5 + 14) * 8 * 2


@needs_shared
def test_improvement_row_is_model_minus_baseline(bench):
    tmp, _ = bench
    report = json.loads((tmp / 'results' / 'table.json').read_text())
    by_key = {(r['dataset'], r['model']): r['psnr'] for r in report['results']}
    for imp in report['improvement']:
        assert (imp['of'], imp['baseline']) == ('Tiny', 'Bicubic')
        for d in DEGRADATIONS:
            expected = by_key[(imp['dataset'], 'Tiny')][d] - by_key[(imp['dataset'], 'Bicubic')][d]
            assert imp['psnr'][d] == pytest.approx(expected, abs=1e-12)
    rows = {(r['dataset'], r['model']): r for r in _read_csv(tmp / 'results' / 'table.csv')}
    for d in DEGRADATIONS:
        diff = float(rows[('Set14', 'Tiny')][d]) - float(rows[('Set14', 'Bicubic')][d])
        assert float(rows[('Set14', 'Improvement')][d]) == pytest.approx(diff, abs=2e-4)
    # the table means are the means of the per-image values
    per_image = [r for r in _read_csv(tmp / 'results' / 'per_image.csv')
                 if r['dataset'] == 'Set5' and r['model'] == 'Tiny' and r['degradation'] == 'b+n+j']
    assert np.mean([float(r['psnr']) for r in per_image]) == pytest.approx(by_key[('Set5', 'Tiny')]['b+n+j'])


@needs_shared
def test_cached_sets_are_reused(bench):
    tmp, ckpt = bench
    opt = validate_test_options(_options(tmp, ckpt))
    set5 = opt['datasets'][0]
    files = sorted((tmp / 'cache' / 'Set5' / 'x4').rglob('*.png'))
    mtimes = [p.stat().st_mtime_ns for p in files]
    gt, sets = prepare_dataset(opt, set5, 4)
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert list(sets) == list(DEGRADATIONS) and len(gt) == 5
    assert all(Path(p).is_file() for files in sets.values() for p in files.values())


@needs_shared
def test_bicubic_matlab_set5_x4_is_the_textbook_value(tmp_path):
    opt = {'name': 'bic', 'models': [{'name': 'Bicubic', 'type': 'bicubic'}],
           'datasets': [{'name': 'Set5', 'dataroot_hr': str(SHARED / 'Set5' / 'HR')}], 'degradations': ['clean'],
           'scales': [4], 'protocol': 'matlab', 'test_y_channel': True, 'crop_border': 4,
           'metrics': {'psnr': True, 'ssim': True}, 'cache_dir': str(tmp_path / 'cache'),
           'results_root': str(tmp_path / 'res'), 'progress': False, 'plot': False}
    (tmp_path / 'bic.yml').write_text(yaml.safe_dump(opt))
    assert run_test_cli(['-opt', str(tmp_path / 'bic.yml')]) == 0
    rows = {r['metric']: r for r in _read_csv(tmp_path / 'res' / 'table.csv')}
    ours = float(rows['psnr']['clean'])

    # independent: MATLAB-style bicubic down and up, Y = BT.601 luma on [0, 255], PSNR on the cropped Y
    def y_channel(rgb):
        return rgb.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255. + 16.

    psnrs = []
    for p in sorted((SHARED / 'Set5' / 'HR').glob('*.png')):
        hr = np.asarray(Image.open(p).convert('RGB'))
        hr = hr[:hr.shape[0] // 4 * 4, :hr.shape[1] // 4 * 4]
        lr = np.clip(np.round(imresize(hr / 255., 0.25) * 255.), 0, 255)
        sr = np.clip(np.round(imresize(lr / 255., 4) * 255.), 0, 255)
        diff = (y_channel(sr) - y_channel(hr))[4:-4, 4:-4]
        psnrs.append(10 * np.log10(255.**2 / np.mean(diff**2)))
    assert ours == pytest.approx(np.mean(psnrs), abs=1e-3)
    assert abs(ours - 28.42) < 0.05
    assert 0.80 < float(rows['ssim']['clean']) < 0.82


# ---------------------------------------------------------------- options
def _base_options(tmp_path, **extra):
    hr = tmp_path / 'HR'
    hr.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(hr / 'a.png')
    opt = {'name': 'x', 'models': [{'name': 'Bicubic', 'type': 'bicubic'}],
           'datasets': [{'name': 'D', 'dataroot_hr': str(hr)}]}
    opt.update(extra)
    return opt


def test_option_errors_name_the_key(tmp_path):
    with pytest.raises(OptionError, match=r"^tile_sise: unknown key; did you mean 'tile_size'\?"):
        validate_test_options(_base_options(tmp_path, tile_sise=64))
    missing = tmp_path / 'nope' / 'HR'
    with pytest.raises(OptionError) as err:
        validate_test_options(_base_options(tmp_path, datasets=[{'name': 'D', 'dataroot_hr': str(missing)}]))
    assert str(err.value) == f"datasets[0].dataroot_hr: folder '{missing}' does not exist"
    with pytest.raises(OptionError, match=r"relative paths are resolved against the project root"):
        validate_test_options(_base_options(tmp_path, datasets=[{'name': 'D', 'dataroot_hr': 'no/such/HR'}]))
    with pytest.raises(OptionError, match=r"^baseline: no model named 'Bicubc'; did you mean 'Bicubic'\?"):
        validate_test_options(_base_options(tmp_path, baseline='Bicubc'))
    with pytest.raises(OptionError, match=r"^metrics.lpips: 'squeeze' is not an LPIPS backbone; use true \(= alex\)"):
        validate_test_options(_base_options(tmp_path, metrics={'lpips': 'squeeze'}))
    with pytest.raises(OptionError, match=r"^degradations\[1\]: invalid degradation spec 'blurr'"):
        validate_test_options(_base_options(tmp_path, degradations=['clean', 'blurr']))
    with pytest.raises(OptionError, match=r'^models\[0\].path: not used by the bicubic pseudo-model'):
        validate_test_options(_base_options(tmp_path, models=[{'name': 'B', 'type': 'bicubic', 'path': 'x.pth'}]))
    with pytest.raises(OptionError, match=r'^amp: mixed precision needs a CUDA device'):
        validate_test_options(_base_options(tmp_path, amp=True, device='cpu'))


def test_model_options_are_checked_before_running(tmp_path):
    ckpt = tmp_path / 'x2.pth'
    torch.save({'params': MSRResNet(num_feat=4, num_block=1, upscale=2).state_dict()}, ckpt)
    net_g = dict(NET_G, upscale=2)
    with pytest.raises(OptionError, match=r"^models\[0\].network_g.num_feet: unknown key; did you mean 'num_feat'"):
        validate_test_options(_base_options(tmp_path, models=[{'name': 'N', 'path': str(ckpt),
                                                               'network_g': {**net_g, 'num_feet': 8}}]))
    with pytest.raises(OptionError, match=r'^models\[0\].scale: 4, but network_g builds a ×2 MSRResNet'):
        validate_test_options(_base_options(tmp_path, models=[{'name': 'N', 'path': str(ckpt), 'network_g': net_g,
                                                               'scale': 4}]))
    with pytest.raises(OptionError, match=r'^models\[0\] \(N\): a ×2 model, but scales is \[4\]'):
        validate_test_options(_base_options(tmp_path, scales=[4], models=[{'name': 'N', 'path': str(ckpt),
                                                                           'network_g': net_g}]))
    # an arch options file: its network_g section is used, the scale comes from the network
    arch_yml = tmp_path / 'arch.yml'
    arch_yml.write_text(yaml.safe_dump({'name': 'train', 'network_g': net_g}))
    opt = validate_test_options(_base_options(tmp_path, models=[{'name': 'N', 'path': str(ckpt),
                                                                 'network_g': str(arch_yml)}]))
    assert opt['scales'] == [2] and opt['models'][0]['network_g'] == net_g
    assert opt['crop_border'] is None and opt['test_y_channel'] is False and opt['protocol'] == 'reflash'


def test_wrong_checkpoint_scale_is_reported_when_the_run_starts(tmp_path):
    ckpt = tmp_path / 'x2.pth'
    torch.save({'params': MSRResNet(num_feat=4, num_block=1, upscale=2).state_dict()}, ckpt)
    opt = _base_options(tmp_path, models=[{'name': 'N', 'path': str(ckpt), 'network_g': NET_G}],
                        results_root=str(tmp_path / 'res'), cache_dir=str(tmp_path / 'cache'), progress=False)
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    with pytest.raises(OptionError) as err:
        from basicsr_ext.evaluation.models import build_models
        build_models(load_test_options(str(tmp_path / 'o.yml')), torch.device('cpu'))
    assert str(err.value) == (f"models[0] (N): checkpoint '{ckpt}' is a ×2 MSRResNet, but the network is built for ×4 "
                              '(upscale: 4); use scale 2 or a ×4 checkpoint')


def test_too_small_for_the_crop_border(tmp_path, capsys):
    hr = tmp_path / 'HR'
    hr.mkdir()
    Image.fromarray(np.full((8, 12, 3), 128, np.uint8)).save(hr / 'tiny.png')
    opt = {'name': 's', 'models': [{'name': 'Bicubic', 'type': 'bicubic'}], 'degradations': ['clean'],
           'datasets': [{'name': 'D', 'dataroot_hr': str(hr)}], 'cache_dir': str(tmp_path / 'c'),
           'results_root': str(tmp_path / 'r'), 'progress': False}
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    assert run_test_cli(['-opt', str(tmp_path / 'o.yml')]) == 2
    assert capsys.readouterr().err.strip() == ("error: D: image 'tiny' is 8x12 (HxW) at ×4; the metrics with "
                                              'crop_border 4 need the HR larger than 8x8')


# ---------------------------------------------------------------- paper comparison
def test_compare_to_paper_diffs_every_shared_cell(tmp_path, capsys):
    paper = tmp_path / 'paper.csv'
    paper.write_text('table,arch,scale,dataset,config,clean,blur,noise\n'
                     'T1,SRResNet,4,Set5,Original,25.0000,24.0000,22.0000\n'
                     'T1,SRResNet,4,Set5,EATS,25.5000,24.5000,22.2000\n'
                     'T1,SRResNet,4,Set5,Improvement,0.5000,0.5000,0.2000\n'
                     'T9,SRResNet,4,Set5,Original,1.0,1.0,1.0\n')
    ours = tmp_path / 'table.csv'
    ours.write_text('dataset,scale,model,arch,metric,clean,blur,jpeg\n'
                    'Set5,4,base,MSRResNet,psnr,25.2500,23.9000,23.0000\n'
                    'Set5,4,mine,MSRResNet,psnr,25.6000,24.4000,23.5000\n'
                    'Set5,4,Improvement,MSRResNet,psnr,0.3500,0.5000,0.5000\n'
                    'Set5,4,mine,MSRResNet,ssim,0.7000,0.6000,0.5000\n'
                    'Set14,4,mine,MSRResNet,psnr,23.0000,22.0000,21.0000\n')
    text = compare_files(str(ours), str(paper), table='T1', configs={'base': 'Original', 'mine': 'EATS'},
                         out_prefix=str(tmp_path / 'cmp'))
    cells = {(r['config'], r['degradation']): r for r in _read_csv(tmp_path / 'cmp.csv')}
    assert set(cells) == {(c, d) for c in ('Original', 'EATS', 'Improvement') for d in ('clean', 'blur')}
    assert float(cells[('Original', 'clean')]['diff']) == pytest.approx(0.25)
    assert float(cells[('EATS', 'blur')]['diff']) == pytest.approx(-0.1)
    assert float(cells[('Improvement', 'clean')]['diff']) == pytest.approx(-0.15)
    assert '| Original (ours: base) | ours | 25.25 | 23.90 |' in text
    assert '|  | Δ | +0.25 | -0.10 |' in text
    assert 'No published row for: mine (MSRResNet, Set14 ×4)' in text
    # the script prints the same
    script = load_script('compare_to_paper')
    assert script.main(['--ours', str(ours), '--paper', str(paper), '--table', 'T1',
                        '--config-map', 'base=Original', 'mine=EATS']) == 0
    assert capsys.readouterr().out.strip() == text.strip()
    assert script.main(['--ours', str(ours), '--paper', str(paper), '--table', 'T7']) == 2
    assert "no rows of table 'T7'" in capsys.readouterr().err


# ---------------------------------------------------------------- tiled, padded and batched inference
def _tiny_swinir(upscale=2):
    torch.manual_seed(0)
    return SwinIR(upscale=upscale, in_chans=3, img_size=16, window_size=8, img_range=1., depths=[2], embed_dim=12,
                  num_heads=[2], mlp_ratio=2, upsampler='pixelshuffledirect').eval()


def test_tiled_equals_untiled_conv_net():
    torch.manual_seed(0)
    net = MSRResNet(num_feat=8, num_block=1, upscale=4).eval()
    lq = torch.rand(1, 3, 37, 45)
    with torch.inference_mode():
        full = forward_tiled(net, lq, 4, 0)
        tiled = forward_tiled(net, lq, 4, tile=16, tile_pad=8)
    assert tiled.shape == full.shape == (1, 3, 148, 180)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_tiled_equals_untiled_window_attention():
    net = _tiny_swinir()
    assert input_multiple(net) == 8
    lq = torch.rand(1, 3, 44, 52)  # not a multiple of the window: the border tiles are padded too
    with torch.inference_mode():
        full = forward_tiled(net, lq, 2, 0)
        tiled = forward_tiled(net, lq, 2, tile=13, tile_pad=20)  # rounded up to 16 / 24: on the window grid
    assert full.shape == (1, 3, 88, 104)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r'^LR x is 5x20 \(HxW\) at the network input; SwinIR needs at least 8x8'):
        check_input_size(net, 5, 20, name='LR x')


def test_batched_equals_one_by_one():
    torch.manual_seed(0)
    net = MSRResNet(num_feat=8, num_block=1, upscale=4).eval()
    images = [torch.rand(3, 20, 24) for _ in range(3)] + [torch.rand(3, 17, 24), torch.rand(3, 20, 24)]
    one = dict(forward_batches(net, images, 4, batch_size=1))
    batched = dict(forward_batches(net, images, 4, batch_size=3, tile=12, tile_pad=8))
    assert sorted(one) == sorted(batched) == list(range(5))
    for i, img in enumerate(images):
        assert batched[i].shape == (3, img.shape[1] * 4, img.shape[2] * 4)
        torch.testing.assert_close(batched[i], one[i], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r'^amp: mixed precision needs a CUDA device, but the device is cpu'):
        list(forward_batches(net, images, 4, amp='bf16'))


# ---------------------------------------------------------------- examples and docs
@pytest.mark.parametrize('path', sorted((REPO / 'options' / 'test').glob('*.yml')), ids=lambda p: p.name)
def test_example_options_are_valid(path):
    """The shipped examples pass the schema; only checkpoints not trained yet may be missing."""
    from basicsr_ext.config import yaml_load
    try:
        validate_test_options(yaml_load(str(path)))
    except OptionError as err:
        checkpoint_missing = '.path: file ' in str(err) and 'does not exist' in str(err)
        shared_missing = not SHARED.is_dir() and 'dataroot_hr' in str(err)
        assert checkpoint_missing or shared_missing, str(err)


def test_docs_list_every_option_key():
    from basicsr_ext.evaluation.options import describe_options
    text = (REPO / 'docs' / 'evaluation.md').read_text(encoding='utf-8')
    missing = [row[0] for row in describe_options() if f'`{row[0]}`' not in text]
    assert not missing, f'docs/evaluation.md does not describe {missing}'


def test_existing_lr_folders_saved_images_and_paper_comparison(tmp_path):
    """User LR folders (basicsr-style 'x4' names, '{scale}' in the path) beside generated sets."""
    rng = np.random.default_rng(0)
    hr_dir, lr_dir = tmp_path / 'HR', tmp_path / 'LR' / 'X4'
    hr_dir.mkdir()
    lr_dir.mkdir(parents=True)
    for name in ('a', 'b'):
        hr = rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)
        Image.fromarray(hr).save(hr_dir / f'{name}.png')
        Image.fromarray(hr).resize((10, 9), Image.BICUBIC).save(lr_dir / f'{name}x4.png')
    paper = tmp_path / 'paper.csv'
    paper.write_text('table,arch,scale,dataset,config,clean,noise\nT0,Bicubic,4,Rand,Original,10.0,9.0\n')
    opt = {'name': 'lr', 'models': [{'name': 'Bicubic', 'type': 'bicubic'}], 'degradations': ['clean', 'noise'],
           'datasets': [{'name': 'Rand', 'dataroot_hr': str(hr_dir),
                         'dataroot_lr': {'clean': str(tmp_path / 'LR' / 'X{scale}')}}],
           'cache_dir': str(tmp_path / 'cache'), 'results_root': str(tmp_path / 'res'), 'progress': False,
           'save_images': True, 'plot': False, 'metrics': {'psnr': True, 'ssim': False},
           'paper_csv': str(paper), 'paper_configs': {'Bicubic': 'Original'}}
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    assert run_test_cli(['-opt', str(tmp_path / 'o.yml')]) == 0
    assert not (tmp_path / 'cache' / 'Rand' / 'x4' / 'clean').exists()  # given, not generated
    assert len(list((tmp_path / 'cache' / 'Rand' / 'x4' / 'noise').glob('*.png'))) == 2
    sr = np.asarray(Image.open(tmp_path / 'res' / 'visualization' / 'Rand_x4' / 'clean' / 'Bicubic' / 'a.png'))
    assert sr.shape == (36, 40, 3)
    lr = np.asarray(Image.open(lr_dir / 'ax4.png'))
    np.testing.assert_array_equal(sr, np.asarray(Image.fromarray(lr).resize((40, 36), Image.BICUBIC)))
    cmp = _read_csv(tmp_path / 'res' / 'paper_comparison.csv')
    ours = {r['metric']: r for r in _read_csv(tmp_path / 'res' / 'table.csv')}['psnr']
    assert [(c['config'], c['degradation']) for c in cmp] == [('Original', 'clean'), ('Original', 'noise')]
    assert float(cmp[0]['diff']) == pytest.approx(float(ours['clean']) - 10.0, abs=1e-4)
