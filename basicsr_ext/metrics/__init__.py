"""Metric functions (layer 2: they see arrays, never models or option files).

Registered in basicsr's ``METRIC_REGISTRY`` with basicsr's signature ``fn(img, img2, crop_border,
input_order, test_y_channel, **options)`` on BGR [0, 255] images, so the training validation
(``val.metrics: {name: {type: calculate_lpips, net: vgg}}``) and ``test.py`` use the same functions:

* ``calculate_niqe_or_nan`` (:mod:`.niqe`): basicsr's NIQE, NaN with a note where basicsr's fails;
* ``calculate_lpips`` (:mod:`.lpips`): LPIPS with an AlexNet or VGG16 backbone;
* ``calculate_dists`` (:mod:`.dists`): DISTS.

Each function carries ``better`` ('higher' or 'lower'); :func:`metric_better` also knows basicsr's own.
The perceptual metrics read their backbone from a local file, never the network (:mod:`.backbones`).
Evaluation (test options, models, test sets, the loop, reports, channel maps) is :mod:`basicsr_ext.evaluation`.
"""
from typing import NamedTuple

from basicsr.utils.registry import METRIC_REGISTRY

from .backbones import BACKBONE_FILES, RANDOM, BackboneWeightsNotFound
from .dists import calculate_dists
from .lpips import LPIPS_NETS, calculate_lpips
from .niqe import calculate_niqe_or_nan, niqe_with_note

__all__ = ['BACKBONE_FILES', 'RANDOM', 'BackboneWeightsNotFound', 'LPIPS_NETS', 'METRIC_INFO', 'MetricInfo',
           'calculate_dists', 'calculate_lpips', 'calculate_niqe_or_nan', 'metric_better', 'niqe_with_note']

_BASICSR_BETTER = {'calculate_psnr': 'higher', 'calculate_ssim': 'higher', 'calculate_niqe': 'lower'}


class MetricInfo(NamedTuple):
    label: str  # table title
    better: str  # 'higher' or 'lower'
    reference: bool  # needs the HR image (full-reference) or not (no-reference)
    decimals: int  # in table.md


# the metrics test.py reports, by the name they have in its tables
METRIC_INFO = {
    'psnr': MetricInfo('PSNR (dB)', 'higher', True, 2),
    'ssim': MetricInfo('SSIM', 'higher', True, 4),
    'lpips_alex': MetricInfo('LPIPS (alex)', 'lower', True, 4),
    'lpips_vgg': MetricInfo('LPIPS (vgg)', 'lower', True, 4),
    'dists': MetricInfo('DISTS', 'lower', True, 4),
    'niqe': MetricInfo('NIQE', 'lower', False, 3),
}


def metric_better(type_name):
    """'higher' or 'lower': which direction is better for a registered metric function."""
    fn = METRIC_REGISTRY.get(type_name)
    return getattr(fn, 'better', _BASICSR_BETTER.get(type_name, 'higher'))
