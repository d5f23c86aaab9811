"""The 8 test degradations: reproducibility, agreement with the reference protocol, noise statistics, specs."""
import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

import basicsr_ext  # noqa: F401  (compat shim before basicsr)
from basicsr.utils.matlab_functions import imresize
from basicsr_ext.data.image_io import ImageReadError
from basicsr_ext.data.eval_degradations import (DEGRADATIONS, SPEC_SYNTAX, Degradation, blur_kernel_size,
                                                degrade_image, generate_testsets, image_seed, parse_degradation,
                                                set_dirname)

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'datasets'
NOISE_FREE = ('clean', 'blur', 'jpeg', 'b+j')


def shared_hr(name):
    folder = SHARED / name / 'HR'
    if not folder.is_dir():
        pytest.skip(f'../shared/datasets not found: {folder} is needed for the reference-set checks')
    return folder


def digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def load_rgb(path):
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'))


# ---------------------------------------------------------------- reproducibility on the real sets


@pytest.mark.parametrize('set_name,scale', [('Set5', 4), ('Set5', 2), ('Set14', 4)])
def test_sets_are_byte_identical_across_runs(tmp_path, set_name, scale):
    hr_dir = shared_hr(set_name)
    n_images = len(list(hr_dir.iterdir()))
    generate_testsets(hr_dir, tmp_path / 'a', scale, progress=False)
    # a second run in parallel workers must not change a byte
    generate_testsets(hr_dir, tmp_path / 'b', scale, workers=2, progress=False)
    first, second = digests(tmp_path / 'a'), digests(tmp_path / 'b')
    assert len(first) == 9 * n_images
    assert first == second
    for deg in DEGRADATIONS:
        for hr_path in (tmp_path / 'a' / f'x{scale}' / 'HR').iterdir():
            hr = load_rgb(hr_path)
            assert hr.shape[0] % scale == 0 and hr.shape[1] % scale == 0
            lr = load_rgb(tmp_path / 'a' / f'x{scale}' / deg / hr_path.name)
            assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3)


# ---------------------------------------------------------------- against the reference, written out


def reference_noise_free(hr_path, deg, scale):
    """The authors' add_degradations.py steps for the noise-free sets, with PIL/cv2 called directly."""
    img = Image.open(hr_path)
    img.load()
    w, h = img.size
    img = img.crop((0, 0, w - w % scale, h - h % scale))
    if deg in ('blur', 'b+j'):
        img = Image.fromarray(cv2.GaussianBlur(np.array(img), (21, 21), 2))
    w, h = img.size
    img = img.resize((int(w / scale), int(h / scale)), Image.BICUBIC)
    if deg in ('jpeg', 'b+j'):
        buf = io.BytesIO()
        img.save(buf, format='JPEG', quality=50)
        img = Image.open(io.BytesIO(buf.getvalue())).convert('RGB')
    return np.array(img)


@pytest.mark.parametrize('set_name', ['Set5', 'Set14'])
def test_noise_free_sets_match_reference_protocol(tmp_path, set_name):
    hr_dir = shared_hr(set_name)
    generate_testsets(hr_dir, tmp_path, 4, degradations=NOISE_FREE, progress=False)
    for hr_path in sorted(hr_dir.iterdir()):
        for deg in NOISE_FREE:
            ours = load_rgb(tmp_path / 'x4' / deg / f'{hr_path.stem}.png')
            ref = reference_noise_free(hr_path, deg, 4)
            if ref.ndim == 2:  # an L-mode HR (Set14/bridge) stays one plane in the reference
                ref = np.repeat(ref[:, :, None], 3, axis=2)
            assert ours.shape == ref.shape, (hr_path.name, deg)
            diff = np.abs(ours.astype(int) - ref.astype(int)).max()
            assert diff == 0 if deg == 'clean' else diff <= 1, (hr_path.name, deg, diff)


def test_gray_image_is_processed_as_one_plane_and_written_as_rgb(tmp_path):
    hr_dir = tmp_path / 'hr'
    hr_dir.mkdir()
    gray = skdata.camera()[:203, :150]
    Image.fromarray(gray).save(hr_dir / 'cam.png')  # mode L
    written = generate_testsets(hr_dir, tmp_path / 'out', 4, progress=False)
    hr = load_rgb(written['HR'][0])
    assert hr.shape == (200, 148, 3) and (hr == gray[:200, :148, None]).all()
    for deg in DEGRADATIONS:
        lr = cv2.imread(str(tmp_path / 'out' / 'x4' / deg / 'cam.png'), cv2.IMREAD_UNCHANGED)
        assert lr.shape == (50, 37, 3)
        # gray noise, as the reference produces on an L image
        assert (lr == lr[:, :, :1]).all(), deg


def test_other_pil_modes_are_converted(tmp_path):
    hr_dir = tmp_path / 'hr'
    hr_dir.mkdir()
    rgb = skdata.coffee()[:40, :48]
    Image.fromarray(rgb).convert('RGBA').save(hr_dir / 'rgba.png')
    Image.fromarray(rgb).convert('P').save(hr_dir / 'palette.png')
    deep = (skdata.camera()[:40, :48].astype(np.uint16) * 257)
    cv2.imwrite(str(hr_dir / 'deep.png'), deep)  # PIL mode I;16
    written = generate_testsets(hr_dir, tmp_path / 'out', 4, degradations='clean', progress=False)
    hr = {p.stem: load_rgb(p) for p in written['HR']}
    assert np.array_equal(hr['rgba'], rgb)
    assert np.array_equal(hr['deep'], np.repeat(skdata.camera()[:40, :48, None], 3, axis=2))
    assert hr['palette'].shape == (40, 48, 3)
    assert all(load_rgb(p).shape == (10, 12, 3) for p in written['clean'])


# ---------------------------------------------------------------- noise


def test_noise_std_and_truncation_bias():
    flat = np.full((1024, 1024, 3), 128, np.uint8)
    clean = degrade_image(flat, 'clean', 4).astype(np.float64)
    noisy = degrade_image(flat, 'noise', 4, seed=0, name='flat').astype(np.float64)
    diff = noisy - clean
    # floor(v + 20 z) - v has std sqrt(20^2 + 1/12) and mean -0.5 (truncation, not rounding)
    assert abs(diff.std() - 20.0) < 0.2
    assert abs(diff.mean() + 0.5) < 0.2
    # colour noise: independent per channel
    corr = np.corrcoef(diff[..., 0].ravel(), diff[..., 1].ravel())[0, 1]
    assert abs(corr) < 0.02
    # with almost no noise, truncation shows alone: about half the pixels drop one level
    tiny = degrade_image(flat, 'n0.001', 4, name='flat').astype(np.float64) - clean
    assert set(np.unique(tiny)) <= {-1.0, 0.0}
    assert 0.4 < -tiny.mean() < 0.6


def test_noise_on_a_photo_against_clean_set():
    hr = skdata.astronaut()
    clean = degrade_image(hr, 'clean', 4).astype(np.float64)
    noisy = degrade_image(hr, 'noise', 4, name='astronaut').astype(np.float64)
    away_from_clip = (clean > 60) & (clean < 195)
    diff = (noisy - clean)[away_from_clip]
    assert diff.size > 20000
    assert abs(diff.std() - 20.0) < 0.4
    assert abs(diff.mean() + 0.5) < 0.4


def test_noise_is_deterministic_and_seed_dependent(tmp_path):
    hr = skdata.chelsea()
    a = degrade_image(hr, 'b+n+j', 4, seed=0, name='chelsea')
    assert np.array_equal(a, degrade_image(hr, 'b+n+j', 4, seed=0, name='chelsea'))
    assert np.array_equal(a, degrade_image(hr, 'b2+n20+j50', 4, seed=0, name='chelsea'))
    assert not np.array_equal(a, degrade_image(hr, 'b+n+j', 4, seed=1, name='chelsea'))
    assert not np.array_equal(a, degrade_image(hr, 'b+n+j', 4, seed=0, name='other'))

    hr_dir = tmp_path / 'hr'
    hr_dir.mkdir()
    cv2.imwrite(str(hr_dir / 'coffee.png'), skdata.coffee()[:200, :240, ::-1])
    runs = {seed: digests(Path(generate_testsets(hr_dir, tmp_path / f's{seed}', 4, seed=seed,
                                                 progress=False)['HR'][0]).parents[1])
            for seed in (0, 1)}
    for key in runs[0]:
        same = runs[0][key] == runs[1][key]
        assert same == (key.split('/')[0] in ('HR', ) + NOISE_FREE), key


def test_image_seed_and_noise_stream_are_pinned():
    # sha256-based: the same on every machine and Python process; a change here changes every noise set
    assert image_seed(0, 'baby', 'b+n', 4) == 2917878710
    # a flat image leaves only the noise stream (frozen by NumPy for RandomState) and the float maths
    flat = degrade_image(np.full((64, 64, 3), 128, np.uint8), 'noise', 4, name='flat')
    assert flat[0, 0].tolist() == [136, 137, 97]
    assert hashlib.sha256(flat.tobytes()).hexdigest() == (
        'a98f5bd26eddd2fa57043dac55791890c80beff92b18ba8cef75120e64944706')
    assert image_seed(0, 'baby', 'b2+n20', 4) == image_seed(0, 'baby', 'b+n', 4)
    assert image_seed(0, 'baby', 'b+n', 2) != image_seed(0, 'baby', 'b+n', 4)


def test_degrade_image_matches_written_file(tmp_path):
    hr_dir = tmp_path / 'hr'
    hr_dir.mkdir()
    hr = skdata.astronaut()[:301, :257]
    cv2.imwrite(str(hr_dir / 'astro.png'), hr[:, :, ::-1])
    generate_testsets(hr_dir, tmp_path / 'out', 4, degradations='n+j,b3+n10', seed=5, progress=False)
    for spec in ('n+j', 'b3+n10'):
        on_demand = degrade_image(hr, spec, 4, seed=5, name='astro')
        assert np.array_equal(on_demand, load_rgb(tmp_path / 'out' / 'x4' / spec / 'astro.png'))


# ---------------------------------------------------------------- MATLAB protocol


def test_matlab_protocol_clean():
    hr = skdata.astronaut()[:250, :251]
    lr = degrade_image(hr, 'clean', 2, protocol='matlab')
    crop = hr[:250, :250].astype(np.float32) / 255.
    expected = np.clip(np.round(imresize(crop, 0.5) * 255.), 0, 255).astype(np.uint8)
    assert lr.shape == (125, 125, 3)
    assert np.array_equal(lr, expected)
    assert not np.array_equal(lr, degrade_image(hr, 'clean', 2))
    assert set_dirname('clean', 'matlab') == 'clean_matlab'


# ---------------------------------------------------------------- specs

EXPECTED_SYNTAX = (
    "valid syntax: 'clean', or '+'-joined tokens in the order b, n, j: b[SIGMA] (Gaussian blur, default 2), "
    'n[SIGMA] (Gaussian noise on the 0-255 scale, default 20), j[QUALITY] (JPEG quality, an integer 1-100, '
    "default 50); e.g. 'b', 'n10', 'b3+n10+j30'; named sets: clean, blur, noise, jpeg, b+n, b+j, n+j, b+n+j")


@pytest.mark.parametrize('spec,expected,name', [
    ('clean', Degradation(), 'clean'),
    ('blur', Degradation(2.0), 'blur'),
    ('b', Degradation(2.0), 'blur'),
    ('noise', Degradation(noise_sigma=20.0), 'noise'),
    ('jpeg', Degradation(jpeg_quality=50), 'jpeg'),
    ('b+n', Degradation(2.0, 20.0), 'b+n'),
    ('b+j', Degradation(2.0, None, 50), 'b+j'),
    ('n+j', Degradation(None, 20.0, 50), 'n+j'),
    ('b+n+j', Degradation(2.0, 20.0, 50), 'b+n+j'),
    ('b3+n10+j30', Degradation(3.0, 10.0, 30), 'b3+n10+j30'),
    ('b2+n20+j50', Degradation(2.0, 20.0, 50), 'b+n+j'),
    ('b1.5', Degradation(1.5), 'b1.5'),
    ('n5', Degradation(noise_sigma=5.0), 'n5'),
    (' j95 ', Degradation(jpeg_quality=95), 'j95'),
])
def test_valid_specs(spec, expected, name):
    deg = parse_degradation(spec)
    assert deg == expected
    assert deg.name == name
    assert parse_degradation(deg.name) == deg


@pytest.mark.parametrize('spec,reason', [
    ('x', "bad token 'x'"),
    ('gauss', "bad token 'gauss'"),
    ('', "bad token ''"),
    ('b++n', "bad token ''"),
    ('clean+b', "bad token 'clean'"),
    ('b-2', "bad token 'b-2'"),
    ('B', "bad token 'B'"),
    ('b+b3', "bad token 'b3' (stage 'b' given twice)"),
    ('j+b', "bad token 'b' (out of order: stages are applied as b, n, j)"),
    ('b0', "bad token 'b0' (sigma must be > 0)"),
    ('n0', "bad token 'n0' (sigma must be > 0)"),
    ('j0', "bad token 'j0' (JPEG quality must be an integer 1-100)"),
    ('j101', "bad token 'j101' (JPEG quality must be an integer 1-100)"),
    ('j30.5', "bad token 'j30.5' (JPEG quality must be an integer 1-100)"),
])
def test_invalid_specs_exact_messages(spec, reason):
    assert SPEC_SYNTAX == EXPECTED_SYNTAX
    with pytest.raises(ValueError) as info:
        parse_degradation(spec)
    assert str(info.value) == f'invalid degradation spec {spec!r}: {reason}; {EXPECTED_SYNTAX}'


def test_blur_kernel_size():
    assert blur_kernel_size(2) == 21
    assert blur_kernel_size(3) == 21
    assert blur_kernel_size(5) == 31


# ---------------------------------------------------------------- bad input


def test_missing_hr_folder_names_it(tmp_path):
    missing = tmp_path / 'nope'
    with pytest.raises(FileNotFoundError, match=f"HR folder not found: '{missing}'"):
        generate_testsets(missing, tmp_path / 'out', 4, progress=False)


def test_unreadable_image_names_it(tmp_path):
    hr_dir = tmp_path / 'hr'
    hr_dir.mkdir()
    cv2.imwrite(str(hr_dir / 'good.png'), np.zeros((16, 16, 3), np.uint8))
    (hr_dir / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\nnot really')
    with pytest.raises(ImageReadError, match='broken.png'):
        generate_testsets(hr_dir, tmp_path / 'out', 4, progress=False)


def test_bad_arguments():
    hr = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match='protocol must be one of'):
        degrade_image(hr, 'clean', 4, protocol='cv2')
    with pytest.raises(ValueError, match='uint8'):
        degrade_image(hr.astype(np.float32), 'clean', 4)
    with pytest.raises(ValueError, match='H x W x 3'):
        degrade_image(np.zeros((16, 16, 4), np.uint8), 'clean', 4)


def test_cli(tmp_path, capsys):
    from conftest import load_script
    cli = load_script('generate_degraded_testsets')
    hr_dir = tmp_path / 'hr'
    hr_dir.mkdir()
    cv2.imwrite(str(hr_dir / 'a.bmp'), skdata.coffee()[:64, :80, ::-1])
    rc = cli.main(['--hr', str(hr_dir), '--out', str(tmp_path / 'out'), '--scale', '2', '4', '--degradations',
                   'clean,b3+n10', '--workers', '1', '--no-progress'])
    assert rc == 0
    for scale in (2, 4):
        names = sorted(p.name for p in (tmp_path / 'out' / f'x{scale}').iterdir())
        assert names == ['HR', 'b3+n10', 'clean']
        assert (tmp_path / 'out' / f'x{scale}' / 'b3+n10' / 'a.png').is_file()
    assert cli.main(['--hr', str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]) == 2
    assert cli.main(['--hr', str(hr_dir), '--out', str(tmp_path / 'o'), '--degradations', 'q']) == 2
    err = capsys.readouterr().err
    assert 'missing' in err and "bad token 'q'" in err
