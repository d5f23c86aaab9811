"""The embedded demo as a new user runs it: a fresh copy of the repository, no ../shared beside it.

README command 1 trains the demo (options/demo/SRResNet_x4_demo.yml) and then runs
``python test.py -opt options/test/demo_SRResNet_x4.yml``, which prints bicubic against the model on
photos that scikit-image ships, under the 8 test degradations. Here the training is shortened to a few
iterations; its checkpoint is put where the follow-up command reads the demo's final one.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from basicsr.metrics import calculate_psnr
from basicsr_ext.config import yaml_load
from basicsr_ext.data.eval_degradations import DEGRADATIONS
from basicsr_ext.data.skimage_photos_dataset import SkimagePhotosDataset, copy_photos, photo_path
from basicsr_ext.evaluation.options import validate_test_options
from basicsr_ext.utils.schema import OptionError, validate

REPO = Path(__file__).resolve().parents[1]
DEMO = 'options/demo/SRResNet_x4_demo.yml'
FOLLOW_UP = 'options/test/demo_SRResNet_x4.yml'
SHORT_ITERS = 2


def _fresh_copy(dst):
    """The repository's tracked files only (what a clone has: no experiments/, results/, datasets, venv)."""
    try:
        out = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=True,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f'the fresh-copy test lists the tracked files with git, which failed here: {err}')
    for rel in filter(None, out.decode().split('\0')):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _run(args, cwd, timeout):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '2'
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{" ".join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n' \
                                 f'{proc.stderr[-3000:]}'
    return proc


def test_readme_follow_up_runs_on_a_fresh_copy_without_shared(tmp_path):
    repo = tmp_path / 'basicsr_ext'
    _fresh_copy(repo)
    assert not (tmp_path / 'shared').exists()
    readme = (repo / 'README.md').read_text(encoding='utf-8')
    assert f'python train.py -opt {DEMO} && python test.py -opt {FOLLOW_UP}' in readme
    ci = (repo / '.ci' / 'run').read_text(encoding='utf-8')  # CI runs README command 1 as written
    assert f'python train.py -opt {DEMO}\npython test.py -opt {FOLLOW_UP}\n' in ci

    # the follow-up reads the demo's final checkpoint
    total = yaml_load(str(repo / DEMO))['train']['total_iter']
    model = yaml_load(str(repo / FOLLOW_UP))['models'][1]
    assert model['path'] == f'experiments/SRResNet_x4_demo/models/net_g_{total}.pth'
    assert model['network_g'] == DEMO

    _run(['train.py', '-opt', DEMO, '--force_yml', f'train:total_iter={SHORT_ITERS}',
          f'train:scheduler:periods=[{SHORT_ITERS}]', f'val:val_freq={SHORT_ITERS}',
          f'logger:save_checkpoint_freq={SHORT_ITERS}', 'logger:print_freq=1', 'datasets:train:batch_size_per_gpu=2',
          'datasets:val:max_size=64'],
         repo, timeout=300)
    models = repo / 'experiments' / 'SRResNet_x4_demo' / 'models'  # the copy's code ran, not the installed one
    os.replace(models / f'net_g_{SHORT_ITERS}.pth', repo / model['path'])

    out = _run(['test.py', '-opt', FOLLOW_UP], repo, timeout=300).stdout
    header = '| Model | ' + ' | '.join(DEGRADATIONS) + ' |'
    assert out.count(header) == 2, out  # PSNR and SSIM
    for label in ('| Bicubic |', '| SRResNet_demo (MSRResNet) |', '| **Improvement** (SRResNet_demo − Bicubic) |'):
        assert out.count(label) == 2, out
    assert '## skimage_heldout ×4 (2 images)' in out

    table = json.loads((repo / 'results' / 'demo_SRResNet_x4' / 'table.json').read_text())
    rows = {r['model']: r for r in table['results']}
    assert set(rows) == {'Bicubic', 'SRResNet_demo'}
    for r in rows.values():
        assert list(r['psnr']) == list(DEGRADATIONS) and all(math.isfinite(v) for v in r['psnr'].values())

    # the HR images are the package's photos, and the bicubic clean cell is their bicubic PSNR
    hr_dir = repo / 'datasets' / 'testsets' / 'skimage_heldout' / 'skimage_HR'
    assert sorted(os.listdir(hr_dir)) == ['chelsea.png', 'ihc.png']
    psnrs = []
    for name in ('chelsea', 'ihc'):
        assert (hr_dir / f'{name}.png').read_bytes() == Path(photo_path(name)).read_bytes()
        hr = np.array(Image.open(photo_path(name)).convert('RGB'))
        hr = hr[:hr.shape[0] // 4 * 4, :hr.shape[1] // 4 * 4]
        lr = Image.fromarray(hr).resize((hr.shape[1] // 4, hr.shape[0] // 4), Image.BICUBIC)
        sr = np.array(lr.resize((hr.shape[1], hr.shape[0]), Image.BICUBIC))
        psnrs.append(calculate_psnr(sr, hr, crop_border=4, input_order='HWC'))
    assert rows['Bicubic']['psnr']['clean'] == pytest.approx(np.mean(psnrs), abs=1e-6)


# ---------------------------------------------------------------- the parts, in-process
def _opts(datasets):
    return {'name': 'd', 'models': [{'name': 'Bicubic', 'type': 'bicubic'}], 'degradations': ['clean'],
            'datasets': datasets}


def test_skimage_photos_source_validation(tmp_path):
    opt = validate_test_options({**_opts([{'name': 'S', 'skimage_photos': ['ihc']}]), 'cache_dir': str(tmp_path)})
    assert opt['datasets'][0]['dataroot_hr'] == str(tmp_path / 'S' / 'skimage_HR')
    assert not (tmp_path / 'S').exists()  # validation writes nothing
    with pytest.raises(OptionError) as err:
        validate_test_options(_opts([{'name': 'S'}]))
    assert str(err.value) == ('datasets[0]: give dataroot_hr (a folder of HR images) or skimage_photos (photos that '
                              'scikit-image ships), not neither')
    with pytest.raises(OptionError) as err:
        validate_test_options(_opts([{'name': 'S', 'skimage_photos': ['ihc'], 'dataroot_hr': str(tmp_path)}]))
    assert str(err.value).endswith('not both')
    with pytest.raises(OptionError) as err:
        validate_test_options(_opts([{'name': 'S', 'skimage_photos': []}]))
    assert str(err.value).startswith('datasets[0].skimage_photos: empty list; name photos among astronaut, chelsea')
    with pytest.raises(OptionError, match=r"^datasets\[0\]\.skimage_photos\[0\]: .*'camera'"):
        validate_test_options(_opts([{'name': 'S', 'skimage_photos': ['camera']}]))


def test_copy_photos_keeps_exactly_the_named_photos(tmp_path):
    copy_photos(['chelsea', 'rocket'], str(tmp_path))
    (tmp_path / 'notes.txt').write_text('mine')
    copy_photos(['rocket', 'ihc'], str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['ihc.png', 'notes.txt', 'rocket.jpg']
    assert (tmp_path / 'rocket.jpg').read_bytes() == Path(photo_path('rocket')).read_bytes()


def test_kernels_mode_gives_gt_only_samples():
    opt = validate({'photos': ['astronaut'], 'kernels': True, 'gt_size': 96, 'blur_kernel_size': 15,
                    'final_sinc_prob': 0.0, 'use_hflip': False, 'use_rot': False}, SkimagePhotosDataset.OPTIONS)
    np.random.seed(0)
    item = SkimagePhotosDataset(dict(opt))[0]
    np.random.seed(0)
    top, left = np.random.randint(0, 512 - 96 + 1), np.random.randint(0, 512 - 96 + 1)
    assert sorted(item) == ['gt', 'gt_path', 'kernel1', 'kernel2', 'sinc_kernel']
    assert item['gt'].shape == (3, 96, 96) and item['gt_path'] == 'astronaut'
    assert item['kernel1'].shape == (15, 15) and item['kernel2'].shape == (21, 21)
    for k in ('kernel1', 'kernel2'):
        assert float(item[k].sum()) == pytest.approx(1, abs=1e-5)
    pulse = np.zeros((21, 21), np.float32)
    pulse[10, 10] = 1
    np.testing.assert_array_equal(item['sinc_kernel'].numpy(), pulse)  # final_sinc_prob 0
    # the canvas is the photo's crop at the drawn position (no flips or rotations here), RGB in [0, 1]
    photo = np.array(Image.open(photo_path('astronaut')).convert('RGB'))
    np.testing.assert_array_equal(np.round(item['gt'].permute(1, 2, 0).numpy() * 255),
                                  photo[top:top + 96, left:left + 96])
