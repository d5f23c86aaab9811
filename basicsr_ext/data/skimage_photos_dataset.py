"""The colour photos that scikit-image ships in its package, as a training/validation set (no download).

Used by the embedded demo, so a fresh clone can train and validate without any data set: bicubic ×s
LR/GT pairs, or (``kernels: true``) GT canvases with Real-ESRGAN's kernels for the model-side
``degradation``, as :class:`~basicsr_ext.data.gt_only_dataset.GTOnlyDataset` gives.
"""
import os
import shutil

import cv2
import numpy as np
import skimage
from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from ..utils.schema import Field, Section
from ..utils.typed import options_class, typed_options
from .gt_only_dataset import KERNEL_OPTIONS, PIN_MEMORY_DOC, PREFETCH_DOC, RealESRGANKernels

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'ihc', 'motorcycle_left', 'retina')
_FILES = {
    'astronaut': 'astronaut.png', 'chelsea': 'chelsea.png', 'coffee': 'coffee.png', 'rocket': 'rocket.jpg',
    'hubble_deep_field': 'hubble_deep_field.jpg', 'ihc': 'ihc.png', 'motorcycle_left': 'motorcycle_left.png',
    'retina': 'retina.jpg'
}


def photo_path(name):
    return os.path.join(os.path.dirname(skimage.data.__file__), _FILES[name])


def copy_photos(names, folder):
    """Make ``folder`` hold exactly the files of photos ``names`` (byte copies, the package's names), e.g. as
    the HR folder of a test set; copies only what is missing and removes the other photos. Returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    wanted = {_FILES[n] for n in names}
    for f in set(os.listdir(folder)) - wanted:
        if f in _FILES.values():
            os.remove(os.path.join(folder, f))
    for n in names:
        dest = os.path.join(folder, _FILES[n])
        if not os.path.isfile(dest):  # copied under another name first: a killed copy leaves no partial photo
            shutil.copyfile(photo_path(n), dest + '.part')
            os.replace(dest + '.part', dest)
    return folder


def load_photo(name):
    """BGR float32 [0, 1] HWC, as basicsr datasets use."""
    img = cv2.imread(photo_path(name), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'scikit-image photo {name!r} not found at {photo_path(name)}')
    return img.astype(np.float32) / 255.


@DATASET_REGISTRY.register()
class SkimagePhotosDataset(data.Dataset):
    """LR/GT pairs from scikit-image photos; LR is MATLAB-bicubic downsampled GT.

    Training: random ``gt_size`` crops (``patches_per_image`` per photo and epoch) with flips
    and rotations. With ``kernels: true`` a training item is instead GTOnlyDataset's
    ``{'gt': canvas, 'kernel1', 'kernel2', 'sinc_kernel', 'gt_path'}`` (the canvas is the ``gt_size``
    crop; the top-level ``degradation`` makes the LR and crops its own ``gt_size`` patch from it).
    Validation: whole photos, mod-cropped to the scale (optionally centre-cropped to ``max_size``
    GT pixels to keep validation quick), bicubic LR.
    """
    OPTIONS = {
        'name': Field(str, 'skimage_photos', doc='dataset name in logs'),
        'type': Field(str, 'SkimagePhotosDataset', doc='registered dataset class'),
        'phase': Field(str, 'train', choices=('train', 'val', 'test')),
        'scale': Field(int, 4),
        'photos': Field(list, list(PHOTOS), item=Field(str, choices=PHOTOS), doc='which photos'),
        'gt_size': Field(int, 96, min=8, doc='GT patch size for training (kernels: the canvas size)'),
        'kernels': Field(bool, False, doc='training: GT canvases + Real-ESRGAN kernels for the top-level '
                         'degradation (as GTOnlyDataset) instead of bicubic LR/GT pairs'),
        'patches_per_image': Field(int, 16, min=1, doc='training samples per photo and epoch'),
        'max_size': Field(int, 0, min=0, doc='validation: centre-crop GT to at most this size (0: whole photo)'),
        'use_hflip': Field(bool, True),
        'use_rot': Field(bool, True),
        'num_worker_per_gpu': Field(int, 0, min=0),
        'batch_size_per_gpu': Field(int, 8, min=1),
        'dataset_enlarge_ratio': Field(int, 1, min=1),
        'prefetch_mode': Field(str, None, choices=(None, 'cpu', 'cuda'), doc=PREFETCH_DOC),
        'pin_memory': Field(bool, None, doc=PIN_MEMORY_DOC),
        'persistent_workers': Field(bool, False),
        'io_backend': Section({}, open=True, doc='unused (the photos are read from the scikit-image package)'),
        **KERNEL_OPTIONS,
    }

    def __init__(self, opt):
        super().__init__()
        self.opt = opt = typed_options(opt, self.OPTIONS, f'{type(self).__name__}Options')
        self.scale = opt.scale
        self.images = [load_photo(n) for n in opt.photos]
        self.kernels = RealESRGANKernels(opt) if opt.kernels and opt.phase == 'train' else None
        if opt.phase != 'train':
            self.pairs = [self._val_pair(img) for img in self.images]

    def _val_pair(self, img):
        s = self.scale
        if self.opt.max_size:
            h, w = img.shape[:2]
            m = self.opt.max_size
            top, left = max((h - m) // 2, 0), max((w - m) // 2, 0)
            img = img[top:top + m, left:left + m]
        h, w = img.shape[:2]
        gt = img[:h - h % s, :w - w % s]
        return imresize(gt, 1 / s), gt

    def __len__(self):
        if self.opt.phase == 'train':
            return len(self.images) * self.opt.patches_per_image
        return len(self.images)

    def __getitem__(self, index):
        name = self.opt.photos[index % len(self.images)]
        if self.opt.phase == 'train':
            img = self.images[index % len(self.images)]
            size = self.opt.gt_size
            top = np.random.randint(0, img.shape[0] - size + 1)
            left = np.random.randint(0, img.shape[1] - size + 1)
            # basicsr's augment flips in place: work on a copy, not a view of the cached photo
            gt = augment(img[top:top + size, left:left + size].copy(), self.opt.use_hflip, self.opt.use_rot)
            if self.kernels is not None:
                kernels = self.kernels.draw()
                return {'gt': img2tensor([gt], bgr2rgb=True, float32=True)[0], **kernels, 'gt_path': name}
            lq = imresize(np.ascontiguousarray(gt), 1 / self.scale)
        else:
            lq, gt = self.pairs[index]
        lq = np.clip(lq, 0, 1)
        gt_t, lq_t = img2tensor([gt, lq], bgr2rgb=True, float32=True)
        return {'lq': lq_t, 'gt': gt_t, 'lq_path': name, 'gt_path': name}


SkimagePhotosDatasetOptions = options_class(SkimagePhotosDataset.OPTIONS, 'SkimagePhotosDatasetOptions',
                                            module=__name__)
