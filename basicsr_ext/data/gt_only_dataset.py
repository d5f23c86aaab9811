"""GT-only training dataset for on-the-fly degradation (Real-ESRGAN's ``RealESRGANDataset`` contract).

Each item is a GT canvas (flipped/rotated, padded or cropped to ``crop_pad_size``) plus the three
per-sample kernels Real-ESRGAN draws on the CPU; :class:`~basicsr_ext.data.degradation.HighOrderDegradation`
does the rest on the training device. The random draws come in the same order as basicsr's
``RealESRGANDataset`` (flip/rotation, crop, kernel 1, kernel 2, sinc), so with the same global RNG
state both return the same canvas and kernels.
"""
import math
import os.path as osp
import random
import warnings

import numpy as np
import torch
from torch.utils import data

from basicsr.data.degradations import circular_lowpass_kernel, random_mixed_kernels
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from ..utils.schema import Field, OptionError, Section
from ..utils.typed import as_plain, options_class, typed_options
from .image_io import ImageReadError, decode_image, list_images, pad_or_reject, read_image

KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')
MAX_BAD_IN_A_ROW = 50


PREFETCH_DOC = ("training: 'cuda' copies each batch to the device and runs the training degradation on a side "
                "stream while the previous step runs (data/prefetch.py; on a CPU run the same batches in order); "
                "null or 'cpu': the plain loader (its workers still prefetch)")
PIN_MEMORY_DOC = 'pin dataloader memory (fast non-blocking copies to the GPU); null: when the run is on CUDA'


def loader_options(type_name):
    """The generic keys basicsr's dataloader / option files put in every dataset section."""
    return {
        'name': Field(str, 'train', doc='dataset name in logs'),
        'type': Field(str, type_name, doc='registered dataset class'),
        'phase': Field(str, 'train', choices=('train', 'val', 'test'), doc='set by the option loader'),
        'scale': Field(int, 4, min=1, doc='SR scale (set by the option loader)'),
        'io_backend': Section({'type': Field(str, 'disk', choices=('disk', 'lmdb'), doc='disk folder or LMDB')},
                              open=True, doc="basicsr FileClient options, e.g. {type: lmdb}"),
        'use_hflip': Field(bool, True, doc='random horizontal flips'),
        'use_rot': Field(bool, False, doc='random vertical flips and 90-degree rotations'),
        'num_worker_per_gpu': Field(int, 4, min=0, doc='dataloader workers per GPU'),
        'batch_size_per_gpu': Field(int, 16, min=1, doc='batch size per GPU'),
        'dataset_enlarge_ratio': Field(int, 1, min=1, doc='repeat the dataset this many times per epoch'),
        'prefetch_mode': Field(str, None, choices=(None, 'cpu', 'cuda'), doc=PREFETCH_DOC),
        'pin_memory': Field(bool, None, doc=PIN_MEMORY_DOC),
        'persistent_workers': Field(bool, False, doc='keep dataloader workers between epochs'),
        'on_bad_image': Field(str, 'error', choices=('error', 'skip'),
                              doc='unreadable image: raise naming the file, or warn, count and skip it (training: '
                              'another image takes its place; validation: it is left out)'),
    }


def read_meta_keys(path):
    """First whitespace-separated token of each non-empty line (BasicSR meta_info formats)."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


class ImageSource:
    """Where images come from: a disk folder (all images, or a meta_info list) or a BasicSR LMDB."""

    def __init__(self, root, meta_info, io_backend, client_key):
        self.root = root
        self.backend = dict(io_backend)
        self.client_key = client_key
        self.client = None
        if self.backend['type'] == 'lmdb':
            meta = osp.join(root, 'meta_info.txt')
            if not osp.isfile(meta):
                raise OptionError(f"io_backend: LMDB '{root}' has no meta_info.txt")
            # BasicSR's LMDB meta_info lines are 'name.png (h,w,c) level'; the key is the name without suffix
            self.keys = [osp.splitext(k)[0] for k in read_meta_keys(meta)]
        elif meta_info:
            self.keys = read_meta_keys(meta_info)
        else:
            self.keys = list_images(root, recursive=True)
        if not self.keys:
            raise OptionError(f"no images found in '{root}'" + (f" (meta_info '{meta_info}')" if meta_info else ''))

    def __len__(self):
        return len(self.keys)

    def name(self, index):
        key = self.keys[index]
        return key if self.backend['type'] == 'lmdb' else osp.join(self.root, key)

    def read(self, index):
        """BGR float32 HWC image of item ``index``; ImageReadError naming it if it can't be read."""
        name = self.name(index)
        if self.backend['type'] != 'lmdb':
            return read_image(name)
        if self.client is None:  # opened lazily: LMDB handles must not cross worker forks
            opts = {k: v for k, v in self.backend.items() if k != 'type'}
            self.client = FileClient('lmdb', db_paths=[self.root], client_keys=[self.client_key], **opts)
        try:
            data_bytes = self.client.get(self.keys[index], self.client_key)
        except Exception as err:  # basicsr's LMDB backend fails with a TypeError on a missing key
            raise ImageReadError(f"cannot read key '{name}' from LMDB '{self.root}': {err}") from err
        return decode_image(data_bytes, f'{self.root}:{name}')


class BadImagePolicy:
    """``on_bad_image``: re-raise, or warn, count and let the caller draw another index.

    ``last_skipped`` is how many images the latest :meth:`read` skipped; datasets put it in the sample
    (``'skipped'``), so the training loop counts skips made in any worker process.
    """

    def __init__(self, mode):
        self.mode = mode
        self.skipped = 0
        self.last_skipped = 0

    def handle(self, err, in_a_row):
        if self.mode == 'error' or in_a_row >= MAX_BAD_IN_A_ROW:
            raise err
        self.skipped += 1
        warnings.warn(f'skipping unreadable image ({self.skipped} skipped so far): {err}')

    def read(self, read_fn, index, length):
        """``(read_fn(index), index)``; on an unreadable image, per the mode, retry at random indices."""
        in_a_row = 0
        while True:
            try:
                value = read_fn(index)
                self.last_skipped = in_a_row
                return value, index
            except ImageReadError as err:
                self.handle(err, in_a_row)
                in_a_row += 1
                index = random.randint(0, length - 1)


def _kernel_sizes(max_size):
    return [2 * v + 1 for v in range(3, max_size // 2 + 1)]


def _check_kernel_size(value, where):
    if value < 7 or value % 2 == 0:
        raise OptionError(f'{where}: kernel size must be odd and at least 7, got {value}')


def _check_kernel_probs(value, where):
    if not value or sum(value) <= 0:
        raise OptionError(f'{where}: expected non-negative weights with a positive sum, got {value!r}')


def _pair(lo, hi, doc):
    return Field(list, [lo, hi], item=Field(float), doc=doc)


def _blur_options(suffix, sigma_hi, which):
    """The options of Real-ESRGAN's first (``suffix`` '') or second ('2') blur."""
    return {
        f'blur_kernel_size{suffix}': Field(int, 21, check=_check_kernel_size,
                                           doc=f'largest {which}-blur kernel; sizes are drawn from 7, 9, ..., this'),
        f'kernel_list{suffix}': Field(list, list(KERNEL_TYPES), item=Field(str, choices=KERNEL_TYPES),
                                      doc=f'{which}-blur kernel types'),
        f'kernel_prob{suffix}': Field(list, [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], item=Field(float, min=0),
                                      check=_check_kernel_probs, doc=f'probability of each kernel_list{suffix} entry'),
        f'blur_sigma{suffix}': _pair(0.2, sigma_hi, f'{which}-blur sigma range'),
        f'betag_range{suffix}': _pair(0.5, 4, f'generalized Gaussian beta range ({which} blur)'),
        f'betap_range{suffix}': _pair(1, 2, f'plateau beta range ({which} blur)'),
        f'sinc_prob{suffix}': Field(float, 0.1, min=0, max=1, doc=f'P({which} blur is a sinc filter)'),
    }


KERNEL_OPTIONS = {
    **_blur_options('', 3, 'first'),
    **_blur_options('2', 1.5, 'second'),
    'final_sinc_prob': Field(float, 0.8, min=0, max=1, doc='P(final sinc filter), else a 21x21 identity pulse'),
}
# bound here by name so that typed options pickle into spawned loader workers
KernelOptions = options_class(KERNEL_OPTIONS, 'KernelOptions', module=__name__)


class RealESRGANKernels:
    """Real-ESRGAN's per-sample first-blur, second-blur and final sinc kernels (the CPU side of its degradation).

    ``opt``: a mapping or typed options holding any of the :data:`KERNEL_OPTIONS` keys (other keys are
    ignored; missing ones take Real-ESRGAN's defaults). The draws use the global ``random``/``numpy`` RNGs in
    basicsr ``RealESRGANDataset``'s order.
    """

    def __init__(self, opt):
        given = as_plain(opt)
        self.opt = typed_options({k: v for k, v in given.items() if k in KERNEL_OPTIONS}, KERNEL_OPTIONS,
                                 'KernelOptions')
        for suffix in ('', '2'):
            types, probs = getattr(self.opt, 'kernel_list' + suffix), getattr(self.opt, 'kernel_prob' + suffix)
            if len(types) != len(probs):
                raise OptionError(f'kernel_prob{suffix}: {len(probs)} weights for {len(types)} kernel_list{suffix} '
                                  'entries')
        self.pulse = torch.zeros(21, 21)
        self.pulse[10, 10] = 1  # convolving with it changes nothing

    def _blur_kernel(self, suffix):
        def option(key):
            return getattr(self.opt, key + suffix)

        max_size = option('blur_kernel_size')
        size = random.choice(_kernel_sizes(max_size))
        if np.random.uniform() < option('sinc_prob'):
            # Real-ESRGAN's cutoff range for small kernels keeps the sinc ringing inside the support
            omega_c = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
            kernel = circular_lowpass_kernel(omega_c, size, pad_to=False)
        else:
            sigma = option('blur_sigma')
            kernel = random_mixed_kernels(
                list(option('kernel_list')),
                list(option('kernel_prob')),
                size,
                sigma,
                sigma, [-math.pi, math.pi],
                option('betag_range'),
                option('betap_range'),
                noise_range=None)
        pad = (max_size - size) // 2
        return torch.FloatTensor(np.pad(kernel, ((pad, pad), (pad, pad))))

    def _sinc_kernel(self):
        if np.random.uniform() < self.opt.final_sinc_prob:
            size = random.choice(_kernel_sizes(21))
            omega_c = np.random.uniform(np.pi / 3, np.pi)
            return torch.FloatTensor(circular_lowpass_kernel(omega_c, size, pad_to=21))
        return self.pulse

    def draw(self):
        """``{'kernel1', 'kernel2': (K, K), 'sinc_kernel': (21, 21)}`` for one sample."""
        kernel1 = self._blur_kernel('')
        kernel2 = self._blur_kernel('2')
        return {'kernel1': kernel1, 'kernel2': kernel2, 'sinc_kernel': self._sinc_kernel()}


@DATASET_REGISTRY.register()
class GTOnlyDataset(data.Dataset):
    """GT canvases + Real-ESRGAN blur/sinc kernels for :class:`HighOrderDegradation`.

    Returns ``{'gt': (3, S, S) float32 RGB [0, 1], 'kernel1', 'kernel2': (K, K), 'sinc_kernel': (21, 21),
    'gt_path'}`` with S = ``crop_pad_size`` and K = ``blur_kernel_size`` / ``blur_kernel_size2``.
    """
    OPTIONS = {
        **loader_options('GTOnlyDataset'),
        'dataroot_gt': Field(str, doc='GT image folder, or a BasicSR .lmdb folder', kind='dir'),
        'meta_info': Field(str, None, kind='file', doc='optional list of image paths relative to dataroot_gt '
                           '(first token per line); disk backend only'),
        'crop_pad_size': Field(int, 400, min=1, doc='canvas size: larger images are randomly cropped to it, '
                               'smaller ones padded (Real-ESRGAN: 400)'),
        'small_image': Field(str, 'pad', choices=('pad', 'error'),
                             doc='image smaller than crop_pad_size: mirror-pad it (Real-ESRGAN) or raise'),
        **KERNEL_OPTIONS,
    }

    def __init__(self, opt):
        super().__init__()
        self.opt = typed_options(opt, self.OPTIONS, f'{type(self).__name__}Options')
        self.source = ImageSource(self.opt.dataroot_gt, self.opt.meta_info, self.opt.io_backend, 'gt')
        self.bad = BadImagePolicy(self.opt.on_bad_image)
        self.kernels = RealESRGANKernels(self.opt)

    def __len__(self):
        return len(self.source)

    # ------------------------------------------------------------------------------------- reading
    def _canvas(self, index):
        """Read, augment and crop/pad item ``index`` to the canvas; unreadable images per on_bad_image."""
        img, index = self.bad.read(self.source.read, index, len(self))
        path = self.source.name(index)
        img = augment(img, self.opt.use_hflip, self.opt.use_rot)
        size = self.opt.crop_pad_size
        img = pad_or_reject(img, size, size, path, self.opt.small_image)
        h, w = img.shape[:2]
        if h > size or w > size:
            top = random.randint(0, h - size)
            left = random.randint(0, w - size)
            img = img[top:top + size, left:left + size]
        return img, path

    def __getitem__(self, index):
        img, path = self._canvas(index)
        kernels = self.kernels.draw()
        gt = img2tensor([img], bgr2rgb=True, float32=True)[0]
        return {'gt': gt, **kernels, 'gt_path': path,
                'skipped': self.bad.last_skipped}

    @property
    def skipped(self):
        """How many unreadable images this dataset object has skipped (per worker process)."""
        return self.bad.skipped


GTOnlyDatasetOptions = options_class(GTOnlyDataset.OPTIONS, 'GTOnlyDatasetOptions', module=__name__)
