"""extract_subimages, create_lmdb and generate_meta_info on small synthetic images, read back with basicsr."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

import basicsr_ext  # noqa: F401  (compat shim before basicsr)
from basicsr.data.data_util import paired_paths_from_lmdb
from basicsr.utils import FileClient, imfrombytes
from conftest import load_script

SCRIPTS = Path(__file__).resolve().parents[1] / 'scripts'




extract = load_script('extract_subimages')
lmdb_script = load_script('create_lmdb')
meta_script = load_script('generate_meta_info')


@pytest.fixture
def images(tmp_path):
    """A colour photo, a gray one and a 16-bit one, as cv2 stores them."""
    folder = tmp_path / 'hr'
    folder.mkdir()
    imgs = {
        'astro': np.ascontiguousarray(skdata.astronaut()[:260, :300, ::-1]),
        'camera': skdata.camera()[:170, :230],
        'deep': (np.random.default_rng(0).integers(0, 65536, size=(120, 150, 3))).astype(np.uint16),
    }
    for name, img in imgs.items():
        assert cv2.imwrite(str(folder / f'{name}.png'), img)
    return folder, imgs


@pytest.mark.parametrize('length,crop,step,thresh,expected', [
    (500, 480, 240, 0, [0, 20]),
    (500, 480, 240, 30, [0]),
    (1000, 480, 240, 0, [0, 240, 480, 520]),
    (960, 480, 240, 0, [0, 240, 480]),
    (300, 480, 240, 0, [0]),
])
def test_crop_starts(length, crop, step, thresh, expected):
    assert extract.crop_starts(length, crop, step, thresh) == expected


def test_extract_subimages_round_trip(tmp_path, images):
    folder, imgs = images
    out = tmp_path / 'sub'
    n = extract.extract_subimages(folder, out, crop_size=100, step=80, thresh_size=0, workers=2, progress=False)
    names = sorted(p.name for p in out.iterdir())
    # astro 260x300: rows [0,80,160], cols [0,80,160,200]; camera 170x230: [0,70] x [0,80,130];
    # deep 120x150: [0,20] x [0,50]
    assert n == len(names) == 12 + 6 + 4
    assert names[:3] == ['astro_s001.png', 'astro_s002.png', 'astro_s003.png']
    for name, img in imgs.items():
        ys = extract.crop_starts(img.shape[0], 100, 80, 0)
        xs = extract.crop_starts(img.shape[1], 100, 80, 0)
        for i, (y, x) in enumerate(((y, x) for y in ys for x in xs), start=1):
            sub = cv2.imread(str(out / f'{name}_s{i:03d}.png'), cv2.IMREAD_UNCHANGED)
            assert sub.dtype == img.dtype
            np.testing.assert_array_equal(sub, img[y:y + 100, x:x + 100])

    with pytest.raises(FileExistsError, match='is not empty'):
        extract.extract_subimages(folder, out, 100, 80, progress=False)
    assert extract.main(['--input', str(folder), '--output', str(out), '--crop_size', '100', '--workers', '1']) == 2
    assert extract.main(['--input', str(folder), '--output', str(out), '--crop_size', '100', '--step', '80',
                         '--workers', '1', '--overwrite']) == 0


def test_extract_small_image_kept_whole(tmp_path, images):
    folder, imgs = images
    n = extract.extract_subimages(folder, tmp_path / 'sub', crop_size=200, step=100, workers=1, progress=False)
    deep = cv2.imread(str(tmp_path / 'sub' / 'deep_s001.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(deep, imgs['deep'])
    assert n == 4 + 2 + 1  # camera 170x230: one row of crops, 170 high, at x = 0 and 30


def read_lmdb(path, key):
    client = FileClient('lmdb', db_paths=[str(path)], client_keys=['gt'])
    return imfrombytes(client.get(key, 'gt'), flag='unchanged')


def test_create_lmdb_gt_only(tmp_path, images):
    folder, imgs = images
    out = tmp_path / 'hr.lmdb'
    keys = lmdb_script.create_lmdb(folder, out)
    assert keys == ['astro', 'camera', 'deep']
    assert (out / 'meta_info.txt').read_text().splitlines() == [
        'astro.png (260,300,3) 1', 'camera.png (170,230,1) 1', 'deep.png (120,150,3) 1']
    for key, img in imgs.items():
        np.testing.assert_array_equal(read_lmdb(out, key), img)
    with pytest.raises(FileExistsError, match='already exists'):
        lmdb_script.create_lmdb(folder, out)
    with pytest.raises(ValueError, match="must end with '.lmdb'"):
        lmdb_script.create_lmdb(folder, tmp_path / 'hr.db')


def test_create_lmdb_paired(tmp_path, images):
    gt_dir, imgs = images
    lq_dir = tmp_path / 'lq'
    lq_dir.mkdir()
    lqs = {}
    for name, img in imgs.items():
        lqs[name] = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(lq_dir / f'{name}.png'), lqs[name])
    gt_db, lq_db = tmp_path / 'gt.lmdb', tmp_path / 'lq.lmdb'
    rc = lmdb_script.main(['--gt', str(gt_dir), '--lq', str(lq_dir), '--out-gt', str(gt_db), '--out-lq', str(lq_db),
                           '--workers', '2'])
    assert rc == 0
    pairs = paired_paths_from_lmdb([str(lq_db), str(gt_db)], ['lq', 'gt'])
    assert [p['gt_path'] for p in pairs] == ['astro', 'camera', 'deep']
    client = FileClient('lmdb', db_paths=[str(lq_db), str(gt_db)], client_keys=['lq', 'gt'])
    for pair in pairs:
        key = pair['gt_path']
        np.testing.assert_array_equal(imfrombytes(client.get(key, 'gt'), 'unchanged'), imgs[key])
        np.testing.assert_array_equal(imfrombytes(client.get(pair['lq_path'], 'lq'), 'unchanged'), lqs[key])


def test_create_lmdb_rejects_bad_input(tmp_path, images, capsys):
    gt_dir, _ = images
    lq_dir = tmp_path / 'lq'
    lq_dir.mkdir()
    cv2.imwrite(str(lq_dir / 'astro.png'), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"2 only in GT \['camera', 'deep'\], 0 only in LQ"):
        lmdb_script.create_paired_lmdb(gt_dir, lq_dir, tmp_path / 'g.lmdb', tmp_path / 'l.lmdb')
    cv2.imwrite(str(lq_dir / 'x.y.png'), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="file name 'x.y.png' cannot be an LMDB key"):
        lmdb_script.create_lmdb(lq_dir, tmp_path / 'l.lmdb')
    assert lmdb_script.main(['--gt', str(tmp_path / 'none'), '--out', str(tmp_path / 'n.lmdb')]) == 2
    assert "image folder not found: '" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lmdb_script.main(['--gt', str(gt_dir), '--out-gt', str(tmp_path / 'n.lmdb')])


def test_generate_meta_info(tmp_path, images):
    folder, _ = images
    meta = tmp_path / 'meta' / 'meta_info.txt'
    assert meta_script.main(['--input', str(folder), '--output', str(meta)]) == 0
    assert meta.read_text() == 'astro.png\ncamera.png\ndeep.png\n'
    meta_script.generate_meta_info(folder, meta, with_shape=True)
    assert meta.read_text().splitlines() == ['astro.png (260,300,3)', 'camera.png (170,230,1)',
                                             'deep.png (120,150,3)']
