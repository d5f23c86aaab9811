"""The papers' analysis figures for a reproduced table's rows: channel correlation and channel ablation.

At one site (``blocks.1`` by default, the shallow layer of the EATS paper's figures), on the clean LR
of the validation set (Set5; the smoke budget's generated set) with its HR as ground truth:

* channel correlation (:mod:`.channel_correlation`): the cosine-similarity matrix of the channel
  responses, and its mean off-diagonal value per row (EATS Fig. 7-8; lower = more distinct channels);
* channel ablation (:mod:`.channel_ablation`): the PSNR drop when each channel is zeroed in turn,
  sorted, and the spread of the drops per row (Adaptive Dropout's experiment).

Each run's numbers are kept in ``<out>/eval/<run>-analysis-<fingerprint>.json`` and reused while its
checkpoint is unchanged. The figures go to ``<out>/tables/<table>/analysis/``.
"""
import hashlib
import json
import os
import time

import numpy as np

from ..data.eval_degradations import set_dirname
from ..data.image_io import list_images
from ..utils.device import resolve_device
from .channel_ablation import ChannelAblation, ablation_pairs, channel_ablation, write_channel_ablation
from .channel_correlation import ChannelCorrelation, CorrelationAccumulator, write_channel_correlation
from .channel_maps import collect_channel_stats, load_models
from .reproduction import display

__all__ = ['analyse_table', 'DEFAULT_SITE']

DEFAULT_SITE = 'blocks.1'


def _files(plan, scale, max_images):
    folder = os.path.join(plan.cache_dir, plan.val_set, f'x{scale}')
    lr_dir, hr_dir = os.path.join(folder, set_dirname('clean')), os.path.join(folder, 'HR')
    names = list_images(lr_dir)[:max_images]
    return [os.path.join(lr_dir, n) for n in names], hr_dir


def _key(run, site, files):
    st = os.stat(run.checkpoint)
    key = {'checkpoint': os.path.abspath(run.checkpoint), 'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
           'site': site, 'files': [os.path.basename(f) for f in files], 'param_key': 'params'}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _analyse_run(model, site, files, pairs):
    acc = CorrelationAccumulator(site)
    collect_channel_stats([model], site, files, on_feature=acc.add)
    corr = acc.results()[0]
    abl = channel_ablation(model, site, pairs)
    return {'matrix': corr.matrix.tolist(), 'corr_images': corr.images, 'base_psnr': abl.base_psnr,
            'channel_psnr': abl.channel_psnr.tolist(), 'abl_images': abl.images}


def analyse_table(plan, tp, evaluation, site=DEFAULT_SITE, device='auto', log=print):
    """Correlation and ablation of every evaluated row; writes the figures, returns summary rows
    ``(row, mean off-diagonal cosine, ablation spread, max drop, seconds or 'reused')``."""
    opt = evaluation['opt']
    scale = tp.spec.scale
    files, hr_dir = _files(plan, scale, plan.budget.analysis_images)
    if not files:
        return []
    loaded = None
    correlations, ablations, summary = [], [], []
    for m in opt['models']:
        run = plan.runs[tp.runs[m['name']]]
        path = os.path.join(plan.out, 'eval', f'{run.id}-analysis-{_key(run, site, files)}.json')
        t0 = time.perf_counter()
        if os.path.isfile(path):
            with open(path, encoding='utf-8') as f:
                saved = json.load(f)
            seconds = 'reused'
        else:
            if loaded is None:
                loaded = {x.name: x for x in load_models(opt['models'], resolve_device(device))[0]}
                pairs = ablation_pairs(files, scale, hr_dir)
            log(f"{tp.spec.id} {m['name']}: channel correlation and ablation at {site} on {len(files)} image(s)")
            saved = _analyse_run(loaded[m['name']], site, files, pairs)
            tmp = f'{path}.tmp'
            with open(tmp, 'w', encoding='utf-8') as f:
                json.dump(saved, f)
            os.replace(tmp, path)
            seconds = time.perf_counter() - t0
        corr = ChannelCorrelation(m['name'], m['arch'], site, np.array(saved['matrix'], dtype=float),
                                  saved['corr_images'])
        abl = ChannelAblation(m['name'], m['arch'], site, saved['base_psnr'], np.array(saved['channel_psnr']),
                              saved['abl_images'])
        correlations.append(corr)
        ablations.append(abl)
        summary.append((m['name'], corr.mean_off_diagonal, abl.spread, float(abl.drops.max()), seconds))
    folder = os.path.join(tp.folder, 'analysis')
    write_channel_correlation(folder, correlations)
    write_channel_ablation(folder, ablations)
    log(f'{tp.spec.id}: analysis figures in {display(folder)}')
    return summary
