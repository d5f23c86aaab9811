"""The LR sets and ground truth of a benchmark dataset.

LR sets not given as folders (``dataroot_lr``) are generated with :mod:`basicsr_ext.data.eval_degradations`
into ``<cache_dir>/<dataset>[_seed<seed>]/x<scale>/<set>/`` (the layout of
scripts/generate_degraded_testsets.py) and reused afterwards; a ``.complete.json`` marker records
what a finished set was made from.
"""
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..data.eval_degradations import generate_testsets, mod_crop, read_hr_image, set_dirname
from ..data.image_io import list_images, read_image
from ..data.skimage_photos_dataset import copy_photos
from ..utils.errors import ImageTooSmallError

__all__ = ['prepare_dataset', 'read_gt', 'check_sizes']

logger = logging.getLogger('basicsr_ext.test')


def _stems(folder):
    return {Path(p).stem: os.path.join(folder, p) for p in list_images(folder)}


def _cache_root(opt, dataset):
    suffix = f"_seed{opt['seed']}" if opt['seed'] else ''
    return os.path.join(opt['cache_dir'], dataset['name'] + suffix)


def _set_complete(folder, stems, meta):
    """Is ``folder`` a finished set for these HR images? Our marker says so, or (a set written by
    scripts/generate_degraded_testsets.py, same generator) every file is there."""
    if not all(os.path.isfile(os.path.join(folder, f'{s}.png')) for s in stems):
        return False
    marker = os.path.join(folder, '.complete.json')
    if not os.path.isfile(marker):
        return meta['seed'] == 0
    try:
        with open(marker, encoding='utf-8') as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return info.get('stems') == sorted(stems) and all(info.get(k) == v for k, v in meta.items())


def _mark_complete(folder, stems, meta):
    with open(os.path.join(folder, '.complete.json'), 'w', encoding='utf-8') as f:
        json.dump({'stems': sorted(stems), **meta}, f)


def _match_lr(folder, stem, scale):
    """LR file of ``stem``: same stem, or with the common ``x4`` / ``_x4`` suffixes."""
    files = _stems(folder)
    for cand in (stem, f'{stem}x{scale}', f'{stem}_x{scale}', f'{stem}_X{scale}'):
        if cand in files:
            return files[cand]
    return None


def prepare_dataset(opt, dataset, scale, bad=None):
    """Make sure every LR set of ``dataset`` at ``scale`` exists; return where the files are.

    ``bad`` (a :class:`.real_sets.BadImages` whose policy is skip): unreadable HR images are left out of the
    sets and recorded there instead of stopping the generation.

    Returns:
        (gt, sets): ``gt`` maps stem -> GT source ``(path, kind)`` with kind 'cached' (mod-cropped
        RGB written by the generator) or 'hr' (read and mod-cropped here); ``sets`` maps
        degradation -> {stem: LR path}.
    """
    if dataset.get('skimage_photos'):
        copy_photos(dataset['skimage_photos'], dataset['dataroot_hr'])
    hr_stems = _stems(dataset['dataroot_hr'])
    if bad is not None and bad.policy == 'skip':
        hr_stems = {s: p for s, p in hr_stems.items() if bad.read(read_hr_image, p, s) is not None}
    user = {d: p.replace('{scale}', str(scale)) for d, p in dataset['dataroot_lr'].items()}
    todo = [d for d in opt['degradations'] if d not in user]
    root = os.path.join(_cache_root(opt, dataset), f'x{scale}')
    meta = {'seed': opt['seed'], 'protocol': opt['protocol'], 'scale': scale, 'hr': dataset['dataroot_hr']}
    missing = [d for d in todo if not _set_complete(os.path.join(root, set_dirname(d, opt['protocol'])), hr_stems, meta)]
    if todo and not _set_complete(os.path.join(root, 'HR'), hr_stems, meta):
        missing = todo
    if missing:
        logger.info(f"{dataset['name']} x{scale}: generating {', '.join(missing)} ({opt['protocol']}) in {root}")
        generate_testsets(dataset['dataroot_hr'], _cache_root(opt, dataset), scale=scale, degradations=missing,
                          seed=opt['seed'], protocol=opt['protocol'], workers=opt['workers'],
                          progress=opt['progress'], exclude=set(_stems(dataset['dataroot_hr'])) - set(hr_stems))
        for d in missing:
            _mark_complete(os.path.join(root, set_dirname(d, opt['protocol'])), hr_stems, meta)
        _mark_complete(os.path.join(root, 'HR'), hr_stems, meta)
    elif todo:
        logger.info(f"{dataset['name']} x{scale}: reusing cached sets in {root}")
    sets = {}
    for d in opt['degradations']:
        if d in user:
            files = {}
            for stem in hr_stems:
                path = _match_lr(user[d], stem, scale)
                if path is None:
                    raise FileNotFoundError(f"{dataset['name']}: no LR image for '{stem}' in '{user[d]}' "
                                            f'(looked for {stem}, {stem}x{scale}, {stem}_x{scale})')
                files[stem] = path
            sets[d] = files
        else:
            folder = os.path.join(root, set_dirname(d, opt['protocol']))
            sets[d] = {stem: os.path.join(folder, f'{stem}.png') for stem in hr_stems}
    gt = {stem: (os.path.join(root, 'HR', f'{stem}.png'), 'cached') if todo else (path, 'hr')
          for stem, path in hr_stems.items()}
    return gt, sets


def read_gt(source, scale):
    """The uint8 RGB ground truth of a ``(path, kind)`` source of :func:`prepare_dataset`."""
    path, kind = source
    if kind == 'cached':
        return read_image(path, float32=False, order='rgb')
    hr = mod_crop(read_hr_image(path), scale)
    return np.repeat(hr[:, :, None], 3, axis=2) if hr.ndim == 2 else hr


def check_sizes(dataset, stem, gt, lr, scale, crop):
    """The LR must be the GT divided by ``scale``, and the GT larger than the metrics' crop on both sides."""
    h, w = gt.shape[:2]
    if lr.shape[0] * scale != h or lr.shape[1] * scale != w:
        raise ValueError(f"{dataset}: LR '{stem}' is {lr.shape[0]}x{lr.shape[1]} but its mod-cropped HR is {h}x{w}; "
                         f'expected {h // scale}x{w // scale} at ×{scale}')
    if min(h, w) <= 2 * crop:
        raise ImageTooSmallError(f"{dataset}: image '{stem}' is {h}x{w} (HxW) at ×{scale}; the metrics with "
                                 f'crop_border {crop} need the HR larger than {2 * crop}x{2 * crop}')
