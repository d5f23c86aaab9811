"""The evaluation loop behind ``python test.py -opt options/test/<name>.yml``.

Models (:mod:`.models`) are evaluated on datasets × degradations × scales (:mod:`.testsets`), and the
results are laid out as in the papers (:mod:`.report`): per dataset a block with one row per model,
one column per degradation, and an Improvement row.

Two protocols (docs/methods.md §1.4-1.5, §2.3, §5):

* ``reflash`` (Reflash Dropout, Adaptive Dropout, EATS): LR sets made with PIL bicubic and
  the 8 test degradations; PSNR on RGB, crop 4.
* ``matlab`` (ECO, classical SR): MATLAB-style ``imresize`` clean LR; PSNR on Y, crop = scale.

Metrics are basicsr's ``calculate_psnr`` / ``calculate_ssim`` on uint8 outputs rounded by
basicsr's ``tensor2img``, as the authors computed them.
"""
import logging
import os
import time

import cv2
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from tqdm import tqdm

from ..data.image_io import read_image
from ..utils.device import resolve_device
from . import paper_compare, report
from .models import build_models
from .testsets import check_sizes, prepare_dataset, read_gt

__all__ = ['evaluate', 'run_benchmark']

logger = logging.getLogger('basicsr_ext.test')


def _metrics(sr, gt, opt, crop):
    # basicsr's Y conversion expects BGR; RGB metrics do not depend on channel order
    sr, gt = sr[:, :, ::-1], gt[:, :, ::-1]
    out = {}
    if opt['metrics']['psnr']:
        out['psnr'] = float(calculate_psnr(sr, gt, crop, test_y_channel=opt['test_y_channel']))
    if opt['metrics']['ssim']:
        out['ssim'] = float(calculate_ssim(sr, gt, crop, test_y_channel=opt['test_y_channel']))
    return out


def _save_image(opt, dataset, scale, deg, model, stem, sr):
    folder = os.path.join(opt['results_root'], 'visualization', f'{dataset}_x{scale}', deg, model)
    os.makedirs(folder, exist_ok=True)
    cv2.imwrite(os.path.join(folder, f'{stem}.png'), sr[:, :, ::-1])


def evaluate(opt, models=None, device=None):
    """Run every model on every (dataset, scale, degradation).

    Loop order is dataset -> scale -> degradation -> model, so each LR set is read once.

    Returns:
        (records, timing): one dict per image and model with its metrics; and seconds spent
        preparing sets (generating, reading) and, per model, running it (``inference_s``,
        including the uint8 conversion) and scoring its outputs (``metrics_s``).
    """
    device = device or resolve_device(opt['device'])
    models = models if models is not None else build_models(opt, device)
    records = []
    timing = {'prepare_s': 0.0, 'models': {m.name: {'inference_s': 0.0, 'metrics_s': 0.0, 'images': 0}
                                           for m in models}}
    for dataset in opt['datasets']:
        for scale in opt['scales']:
            active = [m for m in models if m.scale in (None, scale)]
            if not active:
                continue
            crop = scale if opt['crop_border'] is None else opt['crop_border']
            t0 = time.perf_counter()
            gt_src, sets = prepare_dataset(opt, dataset, scale)
            gts = {stem: read_gt(src, scale) for stem, src in gt_src.items()}
            timing['prepare_s'] += time.perf_counter() - t0
            total = len(gts) * len(sets) * len(active)
            bar = tqdm(total=total, unit='img', desc=f"{dataset['name']} x{scale}", disable=not opt['progress'])
            for deg, files in sets.items():
                t0 = time.perf_counter()
                stems = list(files)
                lrs = [read_image(files[s], float32=False, order='rgb') for s in stems]
                for stem, lr in zip(stems, lrs):
                    check_sizes(dataset['name'], stem, gts[stem], lr, scale, crop)
                timing['prepare_s'] += time.perf_counter() - t0
                for model in active:
                    if hasattr(model, 'check_size'):
                        for stem, lr in zip(stems, lrs):
                            model.check_size(lr, f"{dataset['name']}/{deg}/{stem}")
                    bar.set_postfix_str(f'{deg} {model.name}')
                    t = timing['models'][model.name]
                    t0 = time.perf_counter()
                    for i, sr in model.run(lrs, scale):
                        t1 = time.perf_counter()
                        t['inference_s'] += t1 - t0
                        stem = stems[i]
                        rec = {'model': model.name, 'arch': model.arch, 'dataset': dataset['name'], 'scale': scale,
                               'degradation': deg, 'image': stem, **_metrics(sr, gts[stem], opt, crop)}
                        records.append(rec)
                        if opt['save_images']:
                            _save_image(opt, dataset['name'], scale, deg, model.name, stem, sr)
                        bar.update()
                        t0 = time.perf_counter()
                        t['metrics_s'] += t0 - t1
                    t['images'] += len(lrs)
            bar.close()
    return records, timing


def run_benchmark(opt):
    """Evaluate, then write the tables, plots and (with ``paper_csv``, ``paper_table`` or ``paper_configs``)
    the comparison with the published numbers (the shipped ones unless ``paper_csv``); returns the tables."""
    device = resolve_device(opt['device'])
    if opt['num_threads']:
        torch.set_num_threads(opt['num_threads'])
    if opt['amp'] and device.type != 'cuda':
        logger.warning(f'amp: ignored, the device is {device} (mixed precision is CUDA-only)')
        opt = {**opt, 'amp': False}
    logger.info(f'device: {device}')
    models = build_models(opt, device)
    t0 = time.perf_counter()
    records, timing = evaluate(opt, models, device)
    timing['evaluate_s'] = time.perf_counter() - t0
    timing['device'] = str(device)
    for name, t in timing['models'].items():
        logger.info(f"{name}: {t['images']} images, inference {t['inference_s']:.1f} s "
                    f"({t['images'] / max(t['inference_s'], 1e-9):.2f} img/s), metrics {t['metrics_s']:.1f} s")
    tables = report.write_all(opt, records, timing)
    if opt['paper_csv'] or opt['paper_table'] or opt['paper_configs']:
        text = paper_compare.compare_files(
            os.path.join(opt['results_root'], 'table.csv'), opt['paper_csv'], table=opt['paper_table'],
            configs=opt['paper_configs'], archs=opt['paper_archs'], datasets=opt['paper_datasets'],
            out_prefix=os.path.join(opt['results_root'], 'paper_comparison'))
        tables['paper_comparison'] = text
    return tables
