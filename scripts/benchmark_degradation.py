"""LR/GT training pairs per second: our GTOnlyDataset + HighOrderDegradation vs basicsr 1.4.2's
RealESRGANDataset + RealESRGANModel.feed_data, on the same machine in one run.

Both paths read images, augment, draw kernels, degrade a batch and crop the patches; the timing of
each iteration covers all of it (single process, no dataloader workers). Iterations alternate
between the two paths so that a change in machine load hits both.

    python scripts/benchmark_degradation.py --device cpu --iters 3 --batch 16 --gt_size 256 128
"""
import argparse
import contextlib
import os
import platform
import random
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import basicsr_ext  # noqa: E402  (compat shim before basicsr)
import basicsr.models.realesrgan_model as bsr_model  # noqa: E402
from basicsr.data.realesrgan_dataset import RealESRGANDataset  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from basicsr_ext.data.degradation import HighOrderDegradation, filter2D  # noqa: E402
from basicsr_ext.data.gt_only_dataset import GTOnlyDataset  # noqa: E402
from basicsr_ext.utils.schema import validate  # noqa: E402

T91 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared', 'datasets', 'T91',
                   'HR')

DEGRADATION_KEYS = {  # Real-ESRGAN's defaults (methods.md 1.3), in basicsr's model option names
    'resize_prob': [0.2, 0.7, 0.1], 'resize_range': [0.15, 1.5], 'gaussian_noise_prob': 0.5, 'noise_range': [1, 30],
    'poisson_scale_range': [0.05, 3], 'gray_noise_prob': 0.4, 'jpeg_range': [30, 95], 'second_blur_prob': 0.8,
    'resize_prob2': [0.3, 0.4, 0.3], 'resize_range2': [0.3, 1.2], 'gaussian_noise_prob2': 0.5,
    'noise_range2': [1, 25], 'poisson_scale_range2': [0.05, 2.5], 'gray_noise_prob2': 0.4, 'jpeg_range2': [30, 95]
}


def image_folder():
    """T91 from ../shared when present, else scikit-image's photos written to a temporary folder."""
    if os.path.isdir(T91):
        return os.path.abspath(T91), 'T91 (../shared/datasets/T91/HR)'
    import cv2
    import skimage.data
    folder = tempfile.mkdtemp(prefix='bench_photos_')
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'motorcycle_left'):
        img = getattr(skimage.data, name)()
        cv2.imwrite(os.path.join(folder, f'{name}.png'), img[:, :, ::-1])
    return folder, 'scikit-image photos (T91 not found)'


def meta_file(folder):
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(('.png', '.bmp', '.jpg')))
    fd, path = tempfile.mkstemp(suffix='.txt')
    with os.fdopen(fd, 'w') as f:
        f.write('\n'.join(names) + '\n')
    return path


@contextlib.contextmanager
def cuda_calls_to(device):
    """basicsr's Real-ESRGAN model calls .cuda() on modules and tensors; send those to ``device`` instead."""
    if device.type == 'cuda':
        yield
        return
    saved = torch.nn.Module.cuda, torch.Tensor.cuda
    torch.nn.Module.cuda = lambda self, *a, **k: self.to(device)
    torch.Tensor.cuda = lambda self, *a, **k: self.to(device)
    try:
        yield
    finally:
        torch.nn.Module.cuda, torch.Tensor.cuda = saved


def basicsr_model(device, scale, gt_size, batch):
    opt = {
        'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1, 'scale': scale,
        'num_gpu': 1 if device.type == 'cuda' else 0, 'gt_size': gt_size,
        'queue_size': batch * max(1, 180 // batch),  # basicsr asserts a multiple of the batch (Real-ESRGAN#151)
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': scale},
        'network_d': {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 8},
        'path': {}, 'l1_gt_usm': True, 'percep_gt_usm': True, 'gan_gt_usm': False,
        'train': {
            'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'optim_d': {'type': 'Adam', 'lr': 1e-4},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [10**6], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1}
        },
        **DEGRADATION_KEYS
    }
    with cuda_calls_to(device):
        return bsr_model.RealESRGANModel(opt)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--iters', type=int, default=3, help='timed batches per path and patch size')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--gt_size', type=int, nargs='+', default=[256, 128])
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--context', type=int, default=None, help='override HighOrderDegradation context')
    parser.add_argument('--with_full_canvas', action='store_true',
                        help='also time ours with crop_before_degrade: false (the whole 400x400 canvas)')
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device')

    folder, source = image_folder()
    meta = meta_file(folder)
    ds_opt = validate({'type': 'GTOnlyDataset', 'dataroot_gt': folder, 'meta_info': meta}, GTOnlyDataset.OPTIONS)
    ours_ds = GTOnlyDataset(dict(ds_opt))
    theirs_ds = RealESRGANDataset(dict(ds_opt))
    # the only changes to basicsr: .cuda() -> the chosen device (above), and filter2D fed contiguous tensors
    bsr_model.filter2D = filter2D

    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, '
          f'torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}'
          + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''))
    print(f'images: {source}, {len(ours_ds)} files; batch {args.batch}, scale {args.scale}, {args.iters} timed '
          'iterations per path after one warm-up')
    print('basicsr patched only to run here: .cuda() calls of RealESRGANModel go to the chosen device, and its '
          'filter2D gets .contiguous() inputs (torch 2.14 crash on DiffJPEG output)')

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    def batch_from(ds, it):
        idx = [(it * args.batch + i) % len(ds) for i in range(args.batch)]
        return default_collate([ds[i] for i in idx])

    results = []
    for gt_size in args.gt_size:
        deg_opt = {'gt_size': gt_size}
        if args.context is not None:
            deg_opt['context'] = args.context
        deg = HighOrderDegradation(deg_opt, args.scale, device)
        deg.seed(0)
        deg_full = HighOrderDegradation(dict(deg_opt, crop_before_degrade=False), args.scale, device)
        model = basicsr_model(device, args.scale, gt_size, args.batch)

        def run_ours(it):
            out = deg(batch_from(ours_ds, it))
            sync()
            return out['lq']

        def run_full(it):
            out = deg_full(batch_from(ours_ds, it))
            sync()
            return out['lq']

        def run_theirs(it):
            with cuda_calls_to(device):
                model.feed_data(batch_from(theirs_ds, it))
            sync()
            return model.lq

        paths = [('ours', run_ours), ('basicsr', run_theirs)]
        if args.with_full_canvas:
            paths.append(('ours_full_canvas', run_full))
        times = {name: 0. for name, _ in paths}
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        for it in range(args.iters + 1):
            for name, fn in (paths if it % 2 else paths[::-1]):
                t0 = time.perf_counter()
                lq = fn(it)
                dt = time.perf_counter() - t0
                if it:  # the first round warms up both paths
                    times[name] += dt
                assert lq.shape[-1] == gt_size // args.scale
        rate = {k: args.iters * args.batch / v for k, v in times.items()}
        results.append((gt_size, rate))
        extra = ''
        if args.with_full_canvas:
            extra = (f", ours without crop-before-degrade {rate['ours_full_canvas']:.2f} pairs/s "
                     f"({rate['ours_full_canvas'] / rate['basicsr']:.2f}x)")
        print(f"gt_size {gt_size}: ours {rate['ours']:.2f} pairs/s, basicsr {rate['basicsr']:.2f} pairs/s, "
              f"ratio {rate['ours'] / rate['basicsr']:.2f}x{extra}", flush=True)
    os.remove(meta)
    return results


if __name__ == '__main__':
    main()
