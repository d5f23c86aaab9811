"""The evaluation loop behind ``python test.py -opt options/test/<name>.yml``.

Models (:mod:`.models`) are evaluated on datasets × degradations × scales (:mod:`.testsets`), and the
results are laid out as in the papers (:mod:`.report`): per dataset a block with one row per model,
one column per degradation, and an Improvement row.

Two protocols (docs/methods.md §1.4-1.5, §2.3, §5):

* ``reflash`` (Reflash Dropout, Adaptive Dropout, EATS): LR sets made with PIL bicubic and
  the 8 test degradations; PSNR on RGB, crop 4.
* ``matlab`` (ECO, classical SR): MATLAB-style ``imresize`` clean LR; PSNR on Y, crop = scale.

Three kinds of dataset: synthetic (HR + those degradations), paired real captures and LR-only folders
(:mod:`.real_sets`). Metrics (:mod:`.scoring`): basicsr's ``calculate_psnr`` / ``calculate_ssim`` on uint8
outputs rounded by basicsr's ``tensor2img``, as the authors computed them, and NIQE, LPIPS, DISTS.
"""
import logging
import os
import time

import cv2
import torch
from tqdm import tqdm

from ..data.image_io import read_image
from ..utils.device import resolve_device
from ..utils.errors import ImageTooSmallError
from . import paper_compare, report
from .models import BicubicModel, build_models
from .real_sets import BadImages, load_real_set
from .report import REAL_COLUMN
from .scoring import score
from .testsets import check_sizes, prepare_dataset, read_gt

__all__ = ['evaluate', 'run_benchmark']

logger = logging.getLogger('basicsr_ext.test')


def _save_image(opt, dataset, scale, deg, model, stem, sr):
    folder = os.path.join(opt['results_root'], 'visualization', f'{dataset}_x{scale}', deg, model)
    os.makedirs(folder, exist_ok=True)
    cv2.imwrite(os.path.join(folder, f'{stem}.png'), sr[:, :, ::-1])


def _synthetic_sets(opt, dataset, scale, crop, bad):
    """``[(degradation, stems, lrs, gts, None)]``: the HR and every LR set read once; an image unreadable in
    any set is left out of all of them (``on_bad_image: skip``)."""
    gt_src, sets = prepare_dataset(opt, dataset, scale, bad)
    gts = {}
    for stem, (path, kind) in gt_src.items():
        gt = bad.read(lambda p, kind=kind: read_gt((p, kind), scale), path, stem)
        if gt is not None:
            gts[stem] = gt
    lrs = {}
    for deg, files in sets.items():
        for stem in [s for s in files if s in gts]:
            lr = bad.read(lambda p: read_image(p, float32=False, order='rgb'), files[stem], stem)
            if lr is None:
                gts.pop(stem)
            else:
                lrs[(deg, stem)] = lr
    if not gts:
        raise ValueError(f"{dataset['name']}: every image was unreadable and skipped")
    out = []
    for deg in sets:
        stems = [s for s in sets[deg] if s in gts]
        for stem in stems:
            check_sizes(dataset['name'], stem, gts[stem], lrs[(deg, stem)], scale, crop)
        out.append((deg, stems, [lrs[(deg, s)] for s in stems], [gts[s] for s in stems], None))
    return out


def _real_sets(dataset, scale, crop, bad):
    """``[('real', stems, lrs, gts, given)]`` of a paired or LR-only set (:func:`.real_sets.load_real_set`)."""
    stems, lrs, gts, given = load_real_set(dataset, scale, bad)
    margin = crop + dataset['max_shift']
    for i, stem in enumerate(stems):
        h, w = gts[i].shape[:2] if gts else (lrs[i].shape[0] * scale, lrs[i].shape[1] * scale)
        if min(h, w) <= 2 * margin:
            raise ImageTooSmallError(f"{dataset['name']}: image '{stem}' is {h}x{w} (HxW) at ×{scale}; crop_border "
                                     f"{crop} and max_shift {dataset['max_shift']} need it larger than "
                                     f'{2 * margin}x{2 * margin}')
    return [(REAL_COLUMN, stems, lrs, gts, given)]


def _outputs(model, lrs, scale, given):
    """``model.run``; under ``same_size_lr: restore`` a bicubic model returns the captured same-size LR as is."""
    if given is None or not isinstance(model, BicubicModel):
        yield from model.run(lrs, scale)
        return
    for i, lr in enumerate(lrs):
        yield i, given[i] if given[i] is not None else model.upscale(lr, scale)


def evaluate(opt, models=None, device=None, skipped=None):
    """Run every model on every (dataset, scale, degradation or real set).

    Loop order is dataset -> scale -> degradation -> model, so each LR set is read once.

    Args:
        skipped: a list that receives one dict per image left out by ``on_bad_image: skip``.

    Returns:
        (records, timing): one dict per image and model with its metrics (and ``shift_y``/``shift_x`` with
        ``max_shift``, ``note`` where a metric is NaN); and seconds spent preparing sets (generating,
        reading) and, per model, running it (``inference_s``, including the uint8 conversion) and scoring its
        outputs (``metrics_s``).
    """
    device = device or resolve_device(opt['device'])
    models = models if models is not None else build_models(opt, device)
    skipped = [] if skipped is None else skipped
    records = []
    timing = {'prepare_s': 0.0, 'models': {m.name: {'inference_s': 0.0, 'metrics_s': 0.0, 'images': 0}
                                           for m in models}}
    for dataset in opt['datasets']:
        bad = BadImages(dataset, skipped)
        for scale in opt['scales']:
            active = [m for m in models if m.scale in (None, scale)]
            if not active:
                continue
            crop = scale if opt['crop_border'] is None else opt['crop_border']
            t0 = time.perf_counter()
            if dataset['type'] == 'synthetic':
                sets = _synthetic_sets(opt, dataset, scale, crop, bad)
            else:
                sets = _real_sets(dataset, scale, crop, bad)
            timing['prepare_s'] += time.perf_counter() - t0
            total = sum(len(s[1]) for s in sets) * len(active)
            bar = tqdm(total=total, unit='img', desc=f"{dataset['name']} x{scale}", disable=not opt['progress'])
            for deg, stems, lrs, gts, given in sets:
                for model in active:
                    if hasattr(model, 'check_size'):
                        for stem, lr in zip(stems, lrs):
                            model.check_size(lr, f"{dataset['name']}/{deg}/{stem}")
                    bar.set_postfix_str(f'{deg} {model.name}')
                    t = timing['models'][model.name]
                    t0 = time.perf_counter()
                    for i, sr in _outputs(model, lrs, scale, given):
                        t1 = time.perf_counter()
                        t['inference_s'] += t1 - t0
                        rec = {'model': model.name, 'arch': model.arch, 'dataset': dataset['name'], 'scale': scale,
                               'degradation': deg, 'image': stems[i],
                               **score(sr, gts[i] if gts else None, opt, crop, dataset['max_shift'], device)}
                        records.append(rec)
                        if opt['save_images']:
                            _save_image(opt, dataset['name'], scale, deg, model.name, stems[i], sr)
                        bar.update()
                        t0 = time.perf_counter()
                        t['metrics_s'] += t0 - t1
                    t['images'] += len(lrs)
            bar.close()
    if skipped:
        logger.warning(f'{len(skipped)} unreadable image(s) skipped (on_bad_image: skip): '
                       + ', '.join(s['file'] for s in skipped))
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
    skipped = []
    records, timing = evaluate(opt, models, device, skipped)
    timing['evaluate_s'] = time.perf_counter() - t0
    timing['device'] = str(device)
    for name, t in timing['models'].items():
        logger.info(f"{name}: {t['images']} images, inference {t['inference_s']:.1f} s "
                    f"({t['images'] / max(t['inference_s'], 1e-9):.2f} img/s), metrics {t['metrics_s']:.1f} s")
    tables = report.write_all(opt, records, timing, skipped)
    if opt['paper_csv'] or opt['paper_table'] or opt['paper_configs']:
        text = paper_compare.compare_files(
            os.path.join(opt['results_root'], 'table.csv'), opt['paper_csv'], table=opt['paper_table'],
            configs=opt['paper_configs'], archs=opt['paper_archs'], datasets=opt['paper_datasets'],
            out_prefix=os.path.join(opt['results_root'], 'paper_comparison'))
        tables['paper_comparison'] = text
    return tables
