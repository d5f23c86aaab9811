"""Paired LR/HR dataset (BasicSR ``PairedImageDataset`` behaviour, with explicit errors and bad-image policy).

Training: random aligned crops of ``gt_size`` (LR ``gt_size / scale``) with flips/rotations.
Validation/test: whole images, the GT cut to LR size x scale as BasicSR does.
"""
import os.path as osp

from torch.utils import data

from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from ..utils.schema import Field, OptionError
from ..utils.typed import options_class, typed_options
from .gt_only_dataset import BadImagePolicy, ImageSource, loader_options
from .image_io import IMAGE_EXTENSIONS, ImageReadError, pad_or_reject


def _check_tmpl(value, where):
    if '{}' not in value:
        raise OptionError(f"{where}: the template needs a '{{}}' for the GT file name, got {value!r}")


@DATASET_REGISTRY.register()
class PairedDataset(data.Dataset):
    """LR/GT pairs from two folders, a meta_info list or two BasicSR LMDBs.

    Returns ``{'lq': (3, h, w), 'gt': (3, h*scale, w*scale)`` float32 RGB [0, 1], ``'lq_path', 'gt_path'}``.
    The LR of GT ``dir/name.ext`` is ``dir/<filename_tmpl with name>.ext`` under ``dataroot_lq`` (any image
    extension is accepted when that exact file is missing).
    """
    OPTIONS = {
        **loader_options('PairedDataset'),
        'dataroot_gt': Field(str, doc='GT (HR) image folder or .lmdb', kind='dir'),
        'dataroot_lq': Field(str, doc='LR image folder or .lmdb', kind='dir'),
        'meta_info': Field(str, None, kind='file', doc='optional list of GT paths relative to dataroot_gt '
                           '(first token per line); disk backend only'),
        'filename_tmpl': Field(str, '{}', check=_check_tmpl, doc="LR file stem from the GT stem, e.g. '{}x4'"),
        'gt_size': Field(int, 128, min=1, doc='GT training patch size (train phase only)'),
        'small_image': Field(str, 'pad', choices=('pad', 'error'),
                             doc='training pair smaller than the patch: mirror-pad both (bottom/right) or raise'),
    }

    def __init__(self, opt):
        super().__init__()
        self.opt = opt = typed_options(opt, self.OPTIONS, f'{type(self).__name__}Options')
        self.scale = opt.scale
        backend = opt.io_backend
        self.gt = ImageSource(opt.dataroot_gt, opt.meta_info, backend, 'gt')
        self.bad = BadImagePolicy(opt.on_bad_image)
        if backend['type'] == 'lmdb':
            self.lq = ImageSource(opt.dataroot_lq, None, backend, 'lq')
            missing = sorted(set(self.gt.keys) - set(self.lq.keys))
            if missing:
                raise OptionError(f"dataroot_lq: LMDB '{opt.dataroot_lq}' lacks {len(missing)} GT keys, "
                                  f'e.g. {missing[:3]}')
            self.lq.keys = list(self.gt.keys)
        else:
            self.lq = ImageSource(opt.dataroot_lq, None, backend, 'lq')
            self.lq.keys = [self._lq_key(k) for k in self.gt.keys]

    def _lq_key(self, gt_key):
        folder, name = osp.split(gt_key)
        stem, ext = osp.splitext(name)
        stem = self.opt.filename_tmpl.format(stem)
        for candidate in [ext] + [e for e in IMAGE_EXTENSIONS if e != ext.lower()]:
            key = osp.join(folder, stem + candidate)
            if osp.isfile(osp.join(self.opt.dataroot_lq, key)):
                return key
        raise OptionError(f"dataroot_lq: no LR image for GT '{gt_key}' "
                          f"(looked for '{osp.join(self.opt.dataroot_lq, folder, stem + ext)}')")

    def __len__(self):
        return len(self.gt)

    def _read_pair(self, index):
        return self.gt.read(index), self.lq.read(index)

    def __getitem__(self, index):
        training = self.opt.phase == 'train'
        if training:
            (img_gt, img_lq), index = self.bad.read(self._read_pair, index, len(self))
        else:  # evaluation never swaps in another image: a skipped one is left out of the metrics
            try:
                img_gt, img_lq = self._read_pair(index)
            except ImageReadError as err:
                self.bad.handle(err, 0)
                return {'unreadable': str(err), 'gt_path': self.gt.name(index), 'lq_path': self.lq.name(index)}
        gt_path, lq_path = self.gt.name(index), self.lq.name(index)
        s = self.scale
        if training:
            gt_size = self.opt.gt_size
            if gt_size % s:
                raise OptionError(f'gt_size: {gt_size} is not a multiple of scale {s}')
            mode = self.opt.small_image
            img_lq = pad_or_reject(img_lq, gt_size // s, gt_size // s, lq_path, mode)
            # the GT is padded to the LR's (possibly padded) size x scale so the pair stays aligned
            img_gt = pad_or_reject(img_gt, img_lq.shape[0] * s, img_lq.shape[1] * s, gt_path, mode)
            img_gt, img_lq = paired_random_crop(img_gt, img_lq, gt_size, s, gt_path)
            img_gt, img_lq = augment([img_gt, img_lq], self.opt.use_hflip, self.opt.use_rot)
        else:
            h, w = img_lq.shape[:2]
            if img_gt.shape[0] < h * s or img_gt.shape[1] < w * s:
                raise ValueError(f"GT '{gt_path}' is {img_gt.shape[0]}x{img_gt.shape[1]}, smaller than its LR "
                                 f"'{lq_path}' ({h}x{w}) x scale {s}")
            img_gt = img_gt[:h * s, :w * s]
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        sample = {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}
        if training:
            sample['skipped'] = self.bad.last_skipped
        return sample

    @property
    def skipped(self):
        """How many unreadable pairs this dataset object has skipped (per worker process)."""
        return self.bad.skipped


PairedDatasetOptions = options_class(PairedDataset.OPTIONS, 'PairedDatasetOptions', module=__name__)
