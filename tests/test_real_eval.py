"""test.py on real captures: paired sets with a known shift, LR-only folders, ↑/↓ tables, unreadable images."""
import csv
import json

import jsonschema
import numpy as np
import pytest
import skimage.data
import torch
import yaml
from basicsr.metrics.niqe import calculate_niqe
from PIL import Image
from scipy.ndimage import gaussian_filter

from basicsr_ext.evaluation import report
from basicsr_ext.evaluation.loop import evaluate
from basicsr_ext.evaluation.models import BicubicModel
from basicsr_ext.evaluation.options import load_test_options, validate_test_options
from basicsr_ext.utils import pretrained
from basicsr_ext.test import main as run_test_cli
from basicsr_ext.utils.schema import OptionError
from conftest import REPO
from test_metrics import psnr, ssim_plane

SHIFTS = {'astro': (2, -1), 'coffee': (-1, 2)}  # out[y + dy, x + dx] = hr[y, x]
K = 3  # max_shift


def _read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def _photos():
    return {'astro': skimage.data.astronaut()[40:136, 100:220], 'coffee': skimage.data.coffee()[100:196, 200:320]}


def _make_pairs(folder, seed=0):
    """RealSR's layout: <name>_HR.png beside a same-size <name>_LR4.png, blurred, noised and shifted."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = {}
    for name, hr in _photos().items():
        lr = gaussian_filter(hr.astype(np.float64), (1.0, 1.0, 0)) + rng.normal(0, 3, hr.shape)
        lr = np.roll(np.clip(np.round(lr), 0, 255).astype(np.uint8), SHIFTS[name], axis=(0, 1))
        Image.fromarray(hr).save(folder / f'{name}_HR.png')
        Image.fromarray(lr).save(folder / f'{name}_LR4.png')
        pairs[name] = hr, lr
    return pairs


def _paired_options(tmp_path, folder, **extra):
    dataset = {'name': 'Real', 'type': 'paired', 'dataroot_hr': str(folder), 'dataroot_lr': str(folder),
               'filename_hr': '{name}_HR', 'filename_lr': '{name}_LR{scale}', 'max_shift': K}
    dataset.update(extra.pop('dataset', {}))
    opt = {'name': 'real', 'models': [{'name': 'Bicubic', 'type': 'bicubic'}], 'datasets': [dataset],
           'scales': [4], 'crop_border': 2, 'cache_dir': str(tmp_path / 'cache'), 'results_root': str(tmp_path / 'res'),
           'progress': False, 'plot': False, 'metrics': {'psnr': True, 'ssim': True}}
    opt.update(extra)
    return opt


def _run(tmp_path, opt):
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    return run_test_cli(['-opt', str(tmp_path / 'o.yml')])


def test_paired_real_shift_search_and_metrics_after_alignment(tmp_path):
    pairs = _make_pairs(tmp_path / 'Real')
    # same-size restoration: the bicubic row is the captured LR itself, scored after the shift search
    assert _run(tmp_path, _paired_options(tmp_path, tmp_path / 'Real', dataset={'same_size_lr': 'restore'})) == 0
    rows = {r['image']: r for r in _read_csv(tmp_path / 'res' / 'per_image.csv')}
    assert sorted(rows) == sorted(SHIFTS)
    for name, (hr, lr) in pairs.items():
        r = rows[name]
        assert (int(r['shift_y']), int(r['shift_x'])) == SHIFTS[name]
        dy, dx = SHIFTS[name]
        h, w = hr.shape[:2]
        out, ref = lr[K + dy:h - K + dy, K + dx:w - K + dx], hr[K:h - K, K:w - K]
        out, ref = out[2:-2, 2:-2], ref[2:-2, 2:-2]  # crop_border 2 on the common region
        assert float(r['psnr']) == pytest.approx(psnr(out, ref), abs=1e-6)
        assert float(r['ssim']) == pytest.approx(np.mean([ssim_plane(out[..., c], ref[..., c]) for c in range(3)]),
                                                 abs=1e-6)
    table = {r['metric']: r for r in _read_csv(tmp_path / 'res' / 'table.csv')}
    assert float(table['psnr']['real']) == pytest.approx(np.mean([float(r['psnr']) for r in rows.values()]), abs=1e-4)
    md = (tmp_path / 'res' / 'table.md').read_text()
    assert '## Real ×4 (2 images, paired real captures)' in md and 'PSNR (dB) ↑' in md and 'SSIM ↑' in md

    # SR protocol: the same-size LR is downscaled by 4 (MATLAB bicubic) and upscaled again; the shift survives
    opt = _paired_options(tmp_path, tmp_path / 'Real', test_y_channel=True, results_root=str(tmp_path / 'res2'))
    assert _run(tmp_path, opt) == 0
    rows = {r['image']: r for r in _read_csv(tmp_path / 'res2' / 'per_image.csv')}
    assert {n: (int(r['shift_y']), int(r['shift_x'])) for n, r in rows.items()} == SHIFTS


def test_paired_sets_with_small_lr_and_their_errors(tmp_path):
    hr_dir, lr_dir = tmp_path / 'test_HR', tmp_path / 'test_LR'
    hr_dir.mkdir()
    lr_dir.mkdir()
    for name, hr in _photos().items():  # DRealSR's names: <name>_x1.png and <name>_x4.png
        Image.fromarray(hr).save(hr_dir / f'{name}_x1.png')
        Image.fromarray(hr[::4, ::4]).save(lr_dir / f'{name}_x4.png')
    opt = _paired_options(tmp_path, hr_dir, dataset={'dataroot_lr': str(lr_dir), 'filename_hr': '{name}_x1',
                                                     'filename_lr': '{name}_x{scale}', 'max_shift': 0})
    assert _run(tmp_path, opt) == 0
    rows = _read_csv(tmp_path / 'res' / 'per_image.csv')
    assert sorted(r['image'] for r in rows) == ['astro', 'coffee'] and 'shift_y' not in rows[0]
    (lr_dir / 'coffee_x4.png').unlink()
    with pytest.raises(FileNotFoundError, match=r"^Real: no LR image for 'coffee_x1' in '.*test_LR' \(looked for "
                                                r'coffee_x4\)$'):
        evaluate(load_test_options(str(tmp_path / 'o.yml')), device=torch.device('cpu'))
    with pytest.raises(OptionError, match=r'^datasets\[0\].max_shift: only for type: paired$'):
        validate_test_options(dict(opt, datasets=[{'name': 'S', 'dataroot_hr': str(hr_dir), 'max_shift': 2}]))
    with pytest.raises(OptionError, match=r'^datasets\[0\].dataroot_lr: missing required key'):
        validate_test_options(dict(opt, datasets=[{'name': 'P', 'type': 'paired', 'dataroot_hr': str(hr_dir)}]))
    with pytest.raises(OptionError, match=r"^datasets\[0\].filename_lr: 'x4' has no '\{name\}'$"):
        validate_test_options(dict(opt, datasets=[dict(opt['datasets'][0], filename_lr='x4')]))


def _lr_only_folder(folder):
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()[::8, ::8]).save(folder / 'astro.png')  # 64x64 -> 256x256
    Image.fromarray(skimage.data.chelsea()[::5, ::5]).save(folder / 'cat.png')  # 61x91
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)  # -> 160x160: NIQE fails
    Image.fromarray(noise).save(folder / 'noise.png')
    (folder / 'broken.png').write_bytes(b'\x89PNG not really')


def test_lr_only_folder_gives_a_table_of_no_reference_metrics(tmp_path, capsys):
    _lr_only_folder(tmp_path / 'RealSRSet')
    dataset = {'name': 'RealSRSet', 'type': 'lr_only', 'dataroot_lr': str(tmp_path / 'RealSRSet')}
    opt = {'name': 'lronly', 'models': [{'name': 'Bicubic', 'type': 'bicubic'}], 'datasets': [dataset],
           'scales': [4], 'metrics': {'psnr': True, 'niqe': True}, 'results_root': str(tmp_path / 'res'),
           'cache_dir': str(tmp_path / 'cache'), 'progress': False}
    # the default: the unreadable file stops the run, named
    assert _run(tmp_path, opt) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: RealSRSet: cannot decode image '{tmp_path / 'RealSRSet' / 'broken.png'}'")
    assert err.strip().endswith("set on_bad_image: skip in the dataset's options to skip unreadable images")
    dataset['on_bad_image'] = 'skip'
    assert _run(tmp_path, opt) == 0
    table = _read_csv(tmp_path / 'res' / 'table.csv')
    assert [r['metric'] for r in table] == ['niqe'] and list(table[0])[-1] == 'real'
    per_image = {r['image']: r for r in _read_csv(tmp_path / 'res' / 'per_image.csv')}
    assert sorted(per_image) == ['astro', 'cat', 'noise'] and per_image['astro']['psnr'] == ''
    expected = {}
    for name in ('astro', 'cat'):  # the reflash protocol's bicubic: PIL, then basicsr's NIQE with crop 4
        lr = Image.open(tmp_path / 'RealSRSet' / f'{name}.png')
        sr = np.asarray(lr.resize((lr.width * 4, lr.height * 4), Image.BICUBIC))
        expected[name] = calculate_niqe(sr[:, :, ::-1], 4)
        assert float(per_image[name]['niqe']) == pytest.approx(expected[name], abs=1e-9)
    assert per_image['noise']['niqe'] == 'nan' and 'SVD did not converge' in per_image['noise']['note']
    assert float(table[0]['real']) == pytest.approx(np.mean(list(expected.values())), abs=1e-4)
    md = (tmp_path / 'res' / 'table.md').read_text()
    assert '## RealSRSet ×4 (3 images, LR only: no-reference metrics)' in md
    assert 'NIQE ↓' in md and 'PSNR (dB)' not in md
    assert ('1 output(s) with a NaN metric, left out of the means:\n- Bicubic / real / noise: NIQE: SVD did not '
            'converge (the image is 152x152 after the crop; NIQE needs at least 192x192)') in md
    assert f"1 unreadable image(s) skipped (on_bad_image: skip):\n- {tmp_path / 'RealSRSet' / 'broken.png'}: " in md
    report_json = json.loads((tmp_path / 'res' / 'table.json').read_text())
    assert [s['image'] for s in report_json['skipped']] == ['broken']
    assert report_json['better'] == {'psnr': 'higher', 'ssim': 'higher', 'niqe': 'lower'}
    with pytest.raises(OptionError, match=r'^datasets\[0\] \(RealSRSet\): an LR-only set has no HR, so it is scored '
                                          r'by no-reference metrics only; set metrics.niqe: true$'):
        validate_test_options(dict(opt, metrics={'psnr': True}))


def test_unreadable_hr_of_a_synthetic_set(tmp_path, capsys):
    hr = tmp_path / 'HR'
    hr.mkdir()
    for i, img in enumerate((skimage.data.astronaut()[::16, ::16], skimage.data.coffee()[::16, ::16])):
        Image.fromarray(img).save(hr / f'img{i}.png')
    (hr / 'zbad.png').write_bytes(b'')
    dataset = {'name': 'Syn', 'dataroot_hr': str(hr)}
    opt = {'name': 'syn', 'models': [{'name': 'Bicubic', 'type': 'bicubic'}], 'datasets': [dataset],
           'degradations': ['clean', 'noise'], 'metrics': {'ssim': False}, 'results_root': str(tmp_path / 'res'),
           'cache_dir': str(tmp_path / 'cache'), 'progress': False, 'plot': False}
    assert _run(tmp_path, opt) == 2
    assert f"'{hr / 'zbad.png'}'" in capsys.readouterr().err
    dataset['on_bad_image'] = 'skip'
    assert _run(tmp_path, opt) == 0
    assert len(_read_csv(tmp_path / 'res' / 'per_image.csv')) == 2 * 2
    md = (tmp_path / 'res' / 'table.md').read_text()
    assert '## Syn ×4 (2 images)' in md
    assert f"1 unreadable image(s) skipped (on_bad_image: skip):\n- {hr / 'zbad.png'}" in md
    assert not (tmp_path / 'cache' / 'Syn' / 'x4' / 'clean' / 'zbad.png').exists()


class NoisyUpscaler:
    """A model whose outputs are bicubic plus strong noise: worse LPIPS and PSNR than bicubic."""
    name, arch, scale = 'Noisy', 'Noisy', None

    def run(self, lrs, scale):
        rng = np.random.default_rng(0)
        for i, lr in enumerate(lrs):
            up = BicubicModel('b', 'matlab').upscale(lr, scale).astype(np.float64)
            yield i, np.clip(np.round(up + rng.normal(0, 25, up.shape)), 0, 255).astype(np.uint8)


def test_improvement_is_positive_when_a_model_lowers_lpips(tmp_path, monkeypatch):
    _make_pairs(tmp_path / 'Real')
    opt = _paired_options(tmp_path, tmp_path / 'Real', plot=True, baseline='Noisy', improvement='Bicubic',
                          models=[{'name': 'Noisy', 'type': 'bicubic'}, {'name': 'Bicubic', 'type': 'bicubic'}],
                          metrics={'psnr': True, 'ssim': False, 'lpips': True, 'weights_dir': 'random'})
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    opt = load_test_options(str(tmp_path / 'o.yml'))
    records, timing = evaluate(opt, models=[NoisyUpscaler(), BicubicModel('Bicubic', 'matlab')],
                               device=torch.device('cpu'))
    tables = report.write_all(opt, records, timing)
    table = {(r['model'], r['metric']): float(r['real']) for r in _read_csv(tmp_path / 'res' / 'table.csv')}
    assert table[('Bicubic', 'lpips_alex')] < table[('Noisy', 'lpips_alex')]
    assert table[('Improvement', 'lpips_alex')] > 0
    assert table[('Improvement', 'lpips_alex')] == pytest.approx(
        table[('Noisy', 'lpips_alex')] - table[('Bicubic', 'lpips_alex')], abs=2e-4)
    assert table[('Improvement', 'psnr')] == pytest.approx(table[('Bicubic', 'psnr')] - table[('Noisy', 'psnr')],
                                                           abs=2e-4)
    assert table[('Improvement', 'psnr')] > 0
    md = tables['md']
    lpips_block = md[md.index('LPIPS (alex) ↓'):]
    assert f"| Bicubic | **{table[('Bicubic', 'lpips_alex')]:.4f}** |" in lpips_block  # lower is bold
    assert f"| **Improvement** (Noisy − Bicubic) | +{table[('Improvement', 'lpips_alex')]:.4f} |" in lpips_block
    assert '| **Improvement** (Bicubic − Noisy) | +' in md[md.index('PSNR (dB) ↑'):md.index('LPIPS')]
    img = np.asarray(Image.open(tables['plots'][0]))
    assert img.ndim == 3 and img.shape[1] >= 700 and img.std() > 5
    # a missing backbone file is refused before anything runs, naming the file
    monkeypatch.setattr(pretrained, 'PRETRAINED_DIR', tmp_path / 'none')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'none'))
    raw = yaml.safe_load((tmp_path / 'o.yml').read_text())
    raw['metrics'].pop('weights_dir')
    with pytest.raises(OptionError, match=r'^metrics.lpips: LPIPS \(alex\) needs alexnet-owt-7be5be79.pth '):
        validate_test_options(raw)


@pytest.mark.parametrize('path', sorted((REPO / 'options' / 'test' / 'real').glob('*.yml')), ids=lambda p: p.name)
def test_real_capture_examples_are_valid(path, tmp_path):
    """The example files validate once their placeholder folders and checkpoint exist (the data is not shipped)."""
    raw = yaml.safe_load(path.read_text())
    for d in raw['datasets']:
        for key in ('dataroot_hr', 'dataroot_lr'):
            if key in d:
                (tmp_path / d[key].replace('{scale}', '4')).mkdir(parents=True, exist_ok=True)
    for m in raw['models']:
        if 'path' in m:
            (tmp_path / m['path']).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / m['path']).touch()
            (tmp_path / m['network_g']).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / m['network_g']).write_text((REPO / m['network_g']).read_text())
    schema = jsonschema.Draft7Validator(json.loads((REPO / 'docs' / 'test_options.schema.json').read_text()))
    assert [e.message for e in schema.iter_errors(raw)] == []  # editors check these files as they are typed
    raw['metrics']['weights_dir'] = 'random'  # the LPIPS/DISTS backbones are not shipped either
    opt = validate_test_options(raw, root=tmp_path)
    assert {d['type'] for d in opt['datasets']} <= {'paired', 'lr_only'}
