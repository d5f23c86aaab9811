"""GTOnlyDataset and PairedDataset: backends, Real-ESRGAN parity, bad and small images, options."""
import random

import cv2
import numpy as np
import pytest
import torch

import basicsr_ext  # noqa: F401  (compat shim before basicsr)
from basicsr.data.realesrgan_dataset import RealESRGANDataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from basicsr_ext.data.gt_only_dataset import GTOnlyDataset
from basicsr_ext.data.image_io import ImageReadError, ImageTooSmallError
from basicsr_ext.data.paired_dataset import PairedDataset
from basicsr_ext.utils.schema import OptionError, validate


def _photo(i, h, w):
    rng = np.random.default_rng(i)
    base = cv2.resize(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    return base


@pytest.fixture
def gt_folder(tmp_path):
    root = tmp_path / 'gt'
    (root / 'sub').mkdir(parents=True)
    sizes = [(180, 210), (150, 160), (90, 120)]  # the last is smaller than the canvas
    names = ['a.png', 'sub/b.png', 'c.png']
    for i, (name, (h, w)) in enumerate(zip(names, sizes)):
        cv2.imwrite(str(root / name), _photo(i, h, w))
    meta = tmp_path / 'meta.txt'
    meta.write_text('a.png (180,210,3)\nsub/b.png (150,160,3)\nc.png\n')
    return root, meta, names


def gt_only(**opt):
    return GTOnlyDataset(validate({'type': 'GTOnlyDataset', 'crop_pad_size': 160, **opt}, GTOnlyDataset.OPTIONS))


def test_gt_only_matches_basicsr_realesrgan_dataset(tmp_path):
    """Same RNG state -> same canvas and kernels as basicsr's RealESRGANDataset (its canvas is 400)."""
    root = tmp_path / 'big'
    root.mkdir()
    cv2.imwrite(str(root / 'crop.png'), _photo(1, 420, 450))
    cv2.imwrite(str(root / 'pad.png'), _photo(2, 300, 350))
    meta = tmp_path / 'meta.txt'
    meta.write_text('crop.png\npad.png\n')
    opt = validate({'dataroot_gt': str(root), 'meta_info': str(meta)}, GTOnlyDataset.OPTIONS)
    ours, theirs = GTOnlyDataset(dict(opt)), RealESRGANDataset(dict(opt))
    for index in range(2):
        for seed in (1, 2):
            items = []
            for ds in (ours, theirs):
                random.seed(seed)
                np.random.seed(seed)
                items.append(ds[index])
            a, b = items
            for key in ('gt', 'kernel1', 'kernel2', 'sinc_kernel'):
                assert torch.equal(a[key], b[key]), key
            assert a['gt'].shape == (3, 400, 400) and a['kernel1'].shape == (21, 21)


def test_disk_folder_meta_info_and_lmdb_backends(gt_folder, tmp_path):
    root, meta, names = gt_folder
    disk = gt_only(dataroot_gt=str(root))
    assert len(disk) == 3 and {p.replace(str(root) + '/', '') for p in disk.source.keys} == set(names)
    listed = gt_only(dataroot_gt=str(root), meta_info=str(meta))
    assert listed.source.keys == names
    lmdb_path = tmp_path / 'gt.lmdb'
    make_lmdb_from_imgs(str(root), str(lmdb_path), names, [n.replace('/', '_')[:-4] for n in names], n_thread=1)
    db = gt_only(dataroot_gt=str(lmdb_path), io_backend={'type': 'lmdb'})
    assert len(db) == 3
    for i in range(3):
        random.seed(i)
        np.random.seed(i)
        a = listed[i]
        random.seed(i)
        np.random.seed(i)
        b = db[i]
        assert torch.equal(a['gt'], b['gt'])
        assert b['gt_path'] == names[i].replace('/', '_')[:-4]


def test_bad_image_error_or_skip(gt_folder):
    root, _, _ = gt_folder
    (root / 'broken.png').write_bytes(b'not a png')
    ds = gt_only(dataroot_gt=str(root))
    bad = [i for i, k in enumerate(ds.source.keys) if 'broken' in k][0]
    with pytest.raises(ImageReadError, match='broken.png'):
        ds[bad]
    ds = gt_only(dataroot_gt=str(root), on_bad_image='skip')
    random.seed(0)
    with pytest.warns(UserWarning, match='broken.png'):
        item = ds[bad]
    assert 'broken' not in item['gt_path'] and ds.skipped >= 1


def test_small_image_pad_or_error(gt_folder):
    root, meta, _ = gt_folder
    ds = gt_only(dataroot_gt=str(root), meta_info=str(meta))
    assert ds[2]['gt'].shape == (3, 160, 160)  # 90x120 padded
    ds = gt_only(dataroot_gt=str(root), meta_info=str(meta), small_image='error')
    with pytest.raises(ImageTooSmallError, match='c.png'):
        ds[2]


def test_gt_only_options():
    with pytest.raises(OptionError, match="did you mean 'crop_pad_size'"):
        validate({'type': 'GTOnlyDataset', 'dataroot_gt': '.', 'crop_pad_sise': 400}, GTOnlyDataset.OPTIONS)
    with pytest.raises(OptionError, match='does not exist'):
        validate({'type': 'GTOnlyDataset', 'dataroot_gt': '/no/such/folder'}, GTOnlyDataset.OPTIONS)
    opt = validate({'dataroot_gt': '.', 'phase': 'train', 'scale': 4, 'batch_size_per_gpu': 8,
                    'num_worker_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None,
                    'pin_memory': True, 'persistent_workers': False, 'name': 'DF2K'}, GTOnlyDataset.OPTIONS)
    assert opt['final_sinc_prob'] == 0.8 and opt['blur_sigma2'] == [0.2, 1.5] and opt['use_rot'] is False


# ------------------------------------------------------------------------------------- paired
@pytest.fixture
def pair_folders(tmp_path):
    gt, lq = tmp_path / 'hr', tmp_path / 'lr'
    gt.mkdir()
    lq.mkdir()
    for i, (h, w) in enumerate([(96, 128), (64, 80), (40, 48)]):
        img = _photo(10 + i, h, w)
        cv2.imwrite(str(gt / f'img{i}.png'), img)
        cv2.imwrite(str(lq / f'img{i}x4.png'), cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA))
    return gt, lq


def paired(gt, lq, **opt):
    base = {'type': 'PairedDataset', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq), 'filename_tmpl': '{}x4',
            'scale': 4, 'gt_size': 48}
    return PairedDataset(validate({**base, **opt}, PairedDataset.OPTIONS))


def test_paired_train_crops_aligned(pair_folders):
    gt, lq = pair_folders
    ds = paired(gt, lq)
    random.seed(0)
    for i in range(3):
        item = ds[i]
        assert item['gt'].shape == (3, 48, 48) and item['lq'].shape == (3, 12, 12)
        down = torch.nn.functional.avg_pool2d(item['gt'][None], 4)[0]
        assert (down - item['lq']).abs().mean() < 0.03  # the LR patch is the GT patch's own LR
        assert item['lq_path'].endswith(f'img{i}x4.png') and item['gt_path'].endswith(f'img{i}.png')


def test_paired_val_crops_gt_to_lq_times_scale(pair_folders):
    gt, lq = pair_folders
    cv2.imwrite(str(gt / 'img0.png'), _photo(10, 99, 130))  # not a multiple of the scale
    ds = paired(gt, lq, phase='val')
    item = ds[0]
    assert item['lq'].shape == (3, 24, 32) and item['gt'].shape == (3, 96, 128)


def test_paired_small_image_and_missing_lr(pair_folders):
    gt, lq = pair_folders
    ds = paired(gt, lq, gt_size=64)
    assert ds[2]['gt'].shape == (3, 64, 64)  # 40x48 padded
    ds = paired(gt, lq, gt_size=64, small_image='error')
    with pytest.raises(ImageTooSmallError, match='img2x4.png'):
        ds[2]
    (lq / 'img1x4.png').unlink()
    with pytest.raises(OptionError, match='img1.png'):
        paired(gt, lq)


def test_paired_meta_info_and_lmdb(pair_folders, tmp_path):
    gt, lq = pair_folders
    meta = tmp_path / 'pairs.txt'
    meta.write_text('img1.png\nimg0.png\n')
    ds = paired(gt, lq, meta_info=str(meta), phase='val')
    assert len(ds) == 2 and ds[0]['gt_path'].endswith('img1.png')
    keys = [f'img{i}' for i in range(3)]
    make_lmdb_from_imgs(str(gt), str(tmp_path / 'hr.lmdb'), [k + '.png' for k in keys], keys, n_thread=1)
    make_lmdb_from_imgs(str(lq), str(tmp_path / 'lr.lmdb'), [k + 'x4.png' for k in keys], keys, n_thread=1)
    db = paired(tmp_path / 'hr.lmdb', tmp_path / 'lr.lmdb', io_backend={'type': 'lmdb'}, phase='val')
    disk = paired(gt, lq, phase='val')
    for i in range(3):
        assert torch.equal(db[i]['gt'], disk[i]['gt']) and torch.equal(db[i]['lq'], disk[i]['lq'])


def test_paired_options():
    with pytest.raises(OptionError, match="did you mean 'filename_tmpl'"):
        validate({'dataroot_gt': '.', 'dataroot_lq': '.', 'filename_tmp': '{}'}, PairedDataset.OPTIONS)
    with pytest.raises(OptionError, match='template'):
        validate({'dataroot_gt': '.', 'dataroot_lq': '.', 'filename_tmpl': 'x4'}, PairedDataset.OPTIONS)
