"""The metrics test.py computes: their options, their validation, and the score of one output.

Full-reference metrics (PSNR, SSIM, LPIPS, DISTS) need the HR image; NIQE does not, so it is the one
metric of LR-only sets. PSNR and SSIM are basicsr's MATLAB-compatible functions (RGB or Y); NIQE,
LPIPS and DISTS are :mod:`basicsr_ext.metrics`' (NaN with a note where NIQE fails; backbones from a
local folder, never downloaded). With ``max_shift`` (paired real sets) the output is first aligned to
the HR by the best global shift on luminance (:mod:`basicsr_ext.metrics.alignment`).
"""
import os

from basicsr.metrics import calculate_psnr, calculate_ssim

from ..metrics import LPIPS_NETS, METRIC_INFO, RANDOM, BackboneWeightsNotFound, calculate_dists, calculate_lpips
from ..metrics import niqe_with_note
from ..metrics.alignment import align, find_shift
from ..metrics.backbones import find_backbone_weights
from ..utils.schema import Field, OptionError, Section

__all__ = ['METRICS_SECTION', 'metric_ids', 'validate_metrics', 'score']


def _check_lpips(value, where):
    nets = _lpips_nets(value)
    bad = [n for n in nets if n not in LPIPS_NETS]
    if bad:
        raise OptionError(f"{where}: {bad[0]!r} is not an LPIPS backbone; use true (= alex), alex, vgg or [alex, vgg]")


METRICS_SECTION = Section({
    'psnr': Field(bool, True, doc='PSNR (basicsr calculate_psnr), higher is better'),
    'ssim': Field(bool, True, doc='SSIM (basicsr calculate_ssim), higher is better'),
    'lpips': Field((bool, str, list), False, check=_check_lpips,
                   doc='LPIPS (torchmetrics; lower is better): false, true (= alex), alex, vgg or [alex, vgg]; '
                   'the backbone weights come from metrics.weights_dir or TORCH_HOME'),
    'dists': Field(bool, False, doc='DISTS (torchmetrics; lower is better); VGG16 backbone as for LPIPS'),
    'niqe': Field(bool, False, doc='NIQE (basicsr calculate_niqe; no reference, lower is better); NaN with a note '
                  'where it cannot be computed (flat, noise-like or images under 192 pixels)'),
    'weights_dir': Field(str, None, doc="folder of torchvision's backbone files (alexnet-owt-7be5be79.pth, "
                         'vgg16-397923af.pth) for LPIPS/DISTS; default: experiments/pretrained_models/, then '
                         "$TORCH_HOME/hub/checkpoints/; 'random' = random weights (tests of the wiring only)"),
}, doc='metrics to compute; ↑ higher is better: psnr, ssim; ↓ lower is better: lpips, dists, niqe')


def _lpips_nets(value):
    if value is True:
        return ['alex']
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def metric_ids(metrics):
    """The table names of the enabled metrics, in table order: psnr, ssim, lpips_alex, lpips_vgg, dists, niqe."""
    on = {'psnr': metrics['psnr'], 'ssim': metrics['ssim'], 'dists': metrics['dists'], 'niqe': metrics['niqe'],
          **{f'lpips_{net}': True for net in _lpips_nets(metrics['lpips'])}}
    return [m for m in METRIC_INFO if on.get(m)]


def validate_metrics(opt, resolve):
    """Check the metrics section and that each backbone file is there, before anything runs."""
    m = opt['metrics']
    m['lpips'] = list(dict.fromkeys(_lpips_nets(m['lpips'])))
    if m['weights_dir'] not in (None, RANDOM):
        m['weights_dir'] = resolve(m['weights_dir'])
        if not os.path.isdir(m['weights_dir']):
            raise OptionError(f"metrics.weights_dir: folder '{m['weights_dir']}' does not exist")
    needs = [('lpips', LPIPS_NETS[net], f'LPIPS ({net})') for net in m['lpips']]
    needs += [('dists', 'vgg16', 'DISTS')] if m['dists'] else []
    for key, arch, name in needs:
        try:
            find_backbone_weights(arch, m['weights_dir'], metric=name)
        except BackboneWeightsNotFound as err:
            raise OptionError(f'metrics.{key}: {err}') from err
    ids = metric_ids(m)
    if not ids:
        raise OptionError('metrics: every metric is off; turn on at least one')
    no_ref = [i for i in ids if not METRIC_INFO[i].reference]
    for i, d in enumerate(opt['datasets']):
        if d.get('type') == 'lr_only' and not no_ref:
            raise OptionError(f"datasets[{i}] ({d['name']}): an LR-only set has no HR, so it is scored by "
                              'no-reference metrics only; set metrics.niqe: true')
    return ids


def score(sr, gt, opt, crop, max_shift=0, device=None):
    """The metrics of one uint8 RGB output against its uint8 RGB HR (None: no-reference metrics only).

    Returns:
        dict ``{metric: value}``, plus ``shift_y``/``shift_x`` when ``max_shift`` > 0 and ``note`` where a
        metric is NaN.
    """
    out = {}
    if gt is not None and max_shift:
        out['shift_y'], out['shift_x'] = find_shift(sr, gt, max_shift)
        sr_ref, gt = align(sr, gt, (out['shift_y'], out['shift_x']), max_shift)
    else:
        sr_ref = sr
    m = opt['metrics']
    # basicsr's functions expect BGR (its Y conversion does); RGB metrics do not depend on channel order
    sr_bgr, sr_ref = sr[:, :, ::-1], sr_ref[:, :, ::-1]
    gt = None if gt is None else gt[:, :, ::-1]
    for metric in metric_ids(m):
        if gt is None and METRIC_INFO[metric].reference:
            continue
        if metric == 'psnr':
            out[metric] = float(calculate_psnr(sr_ref, gt, crop, test_y_channel=opt['test_y_channel']))
        elif metric == 'ssim':
            out[metric] = float(calculate_ssim(sr_ref, gt, crop, test_y_channel=opt['test_y_channel']))
        elif metric.startswith('lpips_'):
            out[metric] = calculate_lpips(sr_ref, gt, crop, net=metric[len('lpips_'):], weights=m['weights_dir'],
                                          device=device)
        elif metric == 'dists':
            out[metric] = calculate_dists(sr_ref, gt, crop, weights=m['weights_dir'], device=device)
        elif metric == 'niqe':
            out[metric], note = niqe_with_note(sr_bgr, crop)
            if note:
                out['note'] = note
    return out
