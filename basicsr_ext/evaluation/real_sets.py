"""Real-capture test sets of test.py: paired real (HR + captured LR) and LR-only folders; unreadable images.

* ``type: paired``: ``dataroot_hr`` and ``dataroot_lr`` folders (the same folder is fine) whose files are
  matched by name patterns, e.g. RealSR's ``Canon_001_HR.png`` / ``Canon_001_LR4.png``
  (``filename_hr: '{name}_HR'``, ``filename_lr: '{name}_LR{scale}'``). An LR of 1/scale the HR size is an
  ordinary SR input; an LR of the HR's size (RealSR v1/v2, City100) is first downscaled by the scale with
  MATLAB bicubic (``same_size_lr: downscale``), or evaluated as a same-size restoration
  (``same_size_lr: restore``: the networks run on that downscaled LR as well, but a bicubic model stands
  for the captured LR itself, unchanged, as in the papers' "input" rows).
* ``type: lr_only``: ``dataroot_lr`` only (RealSRSet, DPED); no-reference metrics only.
* ``on_bad_image``: ``error`` (default) stops at an unreadable image, naming the file; ``skip`` leaves it out
  of every table, logs it and counts it in the report.
"""
import logging
import os
import re
from pathlib import Path

import numpy as np
from basicsr.utils.matlab_functions import imresize

from ..data.eval_degradations import read_hr_image
from ..data.image_io import ImageReadError, list_images, read_image
from ..utils.schema import Field, OptionError

__all__ = ['REAL_DATASET_FIELDS', 'BadImages', 'validate_real_dataset', 'check_synthetic_keys', 'load_real_set']

logger = logging.getLogger('basicsr_ext.test')

DATASET_TYPES = ('synthetic', 'paired', 'lr_only')
REAL_DATASET_FIELDS = {
    'type': Field(str, 'synthetic', choices=DATASET_TYPES,
                  doc="'synthetic' (HR + the test degradations), 'paired' (real HR/LR captures: dataroot_hr + "
                  "dataroot_lr) or 'lr_only' (LR folder, no-reference metrics only)"),
    'filename_hr': Field(str, '{name}', doc="paired: HR file stem pattern, e.g. '{name}_HR' (RealSR), '{name}H' "
                         '(City100); {name} is the image name in the tables'),
    'filename_lr': Field(str, None, doc="paired: LR file stem pattern, e.g. '{name}_LR{scale}' (RealSR); default "
                         '{name}, {name}x{scale} or {name}_x{scale}'),
    'same_size_lr': Field(str, 'downscale', choices=('downscale', 'restore'),
                          doc="paired, LR of the HR's size: 'downscale' it by the scale (MATLAB bicubic) and "
                          "evaluate SR, or 'restore': same-size restoration (networks run on the downscaled LR, "
                          'a bicubic model stands for the captured LR as is)'),
    'max_shift': Field(int, 0, min=0, doc='paired: search a global shift of up to this many HR pixels on '
                       'luminance before the metrics; the shift of each output goes to per_image.csv'),
    'on_bad_image': Field(str, 'error', choices=('error', 'skip'),
                          doc="an unreadable image: 'error' stops naming the file; 'skip' leaves it out, counted "
                          'in the log and the report'),
}
_PAIRED_ONLY = ('filename_hr', 'filename_lr', 'same_size_lr', 'max_shift')


class BadImages:
    """``on_bad_image`` of one dataset: re-raise with the dataset's name, or record the image as skipped."""

    def __init__(self, dataset, skipped):
        self.dataset, self.policy, self.skipped = dataset['name'], dataset['on_bad_image'], skipped

    def read(self, reader, path, stem):
        """``reader(path)``, or None when it cannot be read and the policy is skip."""
        try:
            return reader(path)
        except ImageReadError as err:
            if self.policy == 'error':
                raise ImageReadError(f"{self.dataset}: {err}; set on_bad_image: skip in the dataset's options to "
                                     'skip unreadable images') from err
            if not any(s['dataset'] == self.dataset and s['file'] == str(path) for s in self.skipped):
                logger.warning(f'{self.dataset}: skipped {stem}: {err}')
                self.skipped.append({'dataset': self.dataset, 'image': stem, 'file': str(path), 'error': str(err)})
            return None


def check_synthetic_keys(d, where):
    """A synthetic set takes a mapping of LR folders and none of the paired-only keys."""
    if isinstance(d['dataroot_lr'], str):
        raise OptionError(f"{where}.dataroot_lr: a synthetic set takes LR folders per degradation ({{clean: path}}); "
                          'for one folder of real captures set type: paired or lr_only')
    for key in _PAIRED_ONLY:
        if d[key] != REAL_DATASET_FIELDS[key].default:
            raise OptionError(f'{where}.{key}: only for type: paired')


def _pattern(text, where):
    if '{name}' not in text:
        raise OptionError(f"{where}: {text!r} has no '{{name}}'")
    return text


def validate_real_dataset(d, where, require):
    """Validate a paired or LR-only set; ``require(path, where)`` resolves a folder that must exist."""
    if d.get('skimage_photos') is not None:
        raise OptionError(f"{where}.skimage_photos: only for type: synthetic")
    if not isinstance(d['dataroot_lr'], str):
        raise OptionError(f'{where}.dataroot_lr: missing required key (the folder of the captured LR images)')
    if d['type'] == 'lr_only':
        if d['dataroot_hr'] is not None:
            raise OptionError(f'{where}.dataroot_hr: an lr_only set has no HR; use type: paired for HR/LR pairs')
        for key in _PAIRED_ONLY:
            if d[key] != REAL_DATASET_FIELDS[key].default:
                raise OptionError(f'{where}.{key}: only for type: paired')
    elif d['dataroot_hr'] is None:
        raise OptionError(f'{where}.dataroot_hr: missing required key (a paired set needs the HR folder)')
    else:
        d['dataroot_hr'] = require(d['dataroot_hr'], f'{where}.dataroot_hr')
        _pattern(d['filename_hr'], f'{where}.filename_hr')
        if d['filename_lr'] is not None:
            _pattern(d['filename_lr'], f'{where}.filename_lr')
    d['dataroot_lr'] = require(d['dataroot_lr'], f'{where}.dataroot_lr')
    return d


def _stems(folder):
    return {Path(p).stem: os.path.join(folder, p) for p in list_images(folder)}


def _pairs(dataset, scale):
    """``{name: (hr_path, lr_path)}`` of a paired set (``hr_path`` None for an LR-only set)."""
    lr_dir = dataset['dataroot_lr'].replace('{scale}', str(scale))
    lr_files = _stems(lr_dir)
    if dataset['type'] == 'lr_only':
        if not lr_files:
            raise FileNotFoundError(f"{dataset['name']}: no images in '{lr_dir}'")
        return {stem: (None, path) for stem, path in lr_files.items()}
    hr_dir = dataset['dataroot_hr'].replace('{scale}', str(scale))
    hr_re = re.compile(re.escape(dataset['filename_hr']).replace(re.escape('{name}'), '(?P<name>.+)')
                       .replace(re.escape('{scale}'), str(scale)) + '$')
    pairs = {}
    for stem, hr_path in _stems(hr_dir).items():
        match = hr_re.match(stem)
        if not match:
            continue
        name = match.group('name')
        tried = [t.format(name=name, scale=scale) for t in ([dataset['filename_lr']] if dataset['filename_lr'] else
                                                             ['{name}', '{name}x{scale}', '{name}_x{scale}'])]
        lr_path = next((lr_files[t] for t in tried if t in lr_files and lr_files[t] != hr_path), None)
        if lr_path is None:
            raise FileNotFoundError(f"{dataset['name']}: no LR image for '{stem}' in '{lr_dir}' "
                                    f"(looked for {', '.join(tried)})")
        pairs[name] = (hr_path, lr_path)
    if not pairs:
        raise FileNotFoundError(f"{dataset['name']}: no HR image in '{hr_dir}' matches filename_hr "
                                f"'{dataset['filename_hr']}'")
    return pairs


def _read_rgb(path):
    hr = read_hr_image(path)
    return np.repeat(hr[:, :, None], 3, axis=2) if hr.ndim == 2 else hr


def _fit(dataset, name, hr, lr, scale):
    """Crop the HR (and a same-size LR) to a multiple of the scale; return (hr, lr, same_size)."""
    h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    if lr.shape[:2] == hr.shape[:2]:
        return hr[:h, :w], lr[:h, :w], True
    if lr.shape[0] * scale == h and lr.shape[1] * scale == w:
        return hr[:h, :w], lr, False
    raise ValueError(f"{dataset['name']}: LR '{name}' is {lr.shape[0]}x{lr.shape[1]} but its HR is "
                     f'{hr.shape[0]}x{hr.shape[1]}; expected {h // scale}x{w // scale} (×{scale}) or the HR size')


def downscale(lr, scale):
    """MATLAB-style bicubic downscaling (basicsr's ``imresize``, antialiased) of a uint8 image, rounded to uint8."""
    out = imresize(lr.astype(np.float32) / 255., 1 / scale, antialiasing=True)
    return np.clip(np.round(out * 255.), 0, 255).astype(np.uint8)


def load_real_set(dataset, scale, bad):
    """The images of a paired or LR-only set at ``scale``.

    Returns:
        (stems, lrs, gts, given): model inputs (uint8 RGB, 1/scale of the HR), HRs (None for LR-only) and, for
        ``same_size_lr: restore``, the captured same-size LRs a bicubic model returns unchanged (else None).
    """
    stems, lrs, gts, given = [], [], [], []
    restore = dataset['same_size_lr'] == 'restore'
    for name, (hr_path, lr_path) in _pairs(dataset, scale).items():
        lr = bad.read(lambda p: read_image(p, float32=False, order='rgb'), lr_path, name)
        hr = None if hr_path is None or lr is None else bad.read(_read_rgb, hr_path, name)
        if lr is None or (hr_path is not None and hr is None):
            continue
        same = False
        if hr is not None:
            hr, lr, same = _fit(dataset, name, hr, lr, scale)
        stems.append(name)
        lrs.append(downscale(lr, scale) if same else lr)
        gts.append(hr)
        given.append(lr if same and restore else None)
    if not stems:
        raise ValueError(f"{dataset['name']}: every image was unreadable and skipped")
    return stems, lrs, (gts if dataset['type'] == 'paired' else None), (given if restore else None)
