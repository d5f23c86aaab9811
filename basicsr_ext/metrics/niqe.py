"""NIQE (Mittal et al., 2013), lower is better: basicsr's ``calculate_niqe``, NaN with a note where it fails.

basicsr's NIQE fits a Gaussian to the features of 96x96 blocks and inverts its covariance. On an image
smaller than 192 pixels on a side (one block row or column), or a flat or noise-like one, too few blocks
have finite features and numpy stops with ``LinAlgError: SVD did not converge``. Here that case is a
NaN with a note saying why, so one image does not end a whole evaluation.
"""
import math
import warnings

import numpy as np
from basicsr.metrics.metric_util import reorder_image
from basicsr.metrics.niqe import calculate_niqe
from basicsr.utils import get_root_logger
from basicsr.utils.registry import METRIC_REGISTRY

__all__ = ['niqe_with_note', 'calculate_niqe_or_nan']

NIQE_MIN_SIZE = 192  # two 96x96 blocks: fewer leave one sample for the covariance


def niqe_with_note(img, crop_border=0, input_order='HWC', convert_to='y'):
    """``(value, note)``: basicsr's NIQE and None, or NaN and the reason it could not be computed."""
    try:
        with warnings.catch_warnings():  # the empty-slice warnings that precede the failure
            warnings.simplefilter('ignore', RuntimeWarning)
            return float(calculate_niqe(img, crop_border, input_order=input_order, convert_to=convert_to)), None
    except np.linalg.LinAlgError as err:
        h, w = reorder_image(np.asarray(img), input_order=input_order).shape[:2]
        h, w = h - 2 * crop_border, w - 2 * crop_border
        if min(h, w) < NIQE_MIN_SIZE:
            why = f'the image is {h}x{w} after the crop; NIQE needs at least {NIQE_MIN_SIZE}x{NIQE_MIN_SIZE}'
        else:
            why = 'a flat or noise-like image: too few 96x96 blocks with finite NIQE features'
        return math.nan, f'NIQE: {err} ({why})'


@METRIC_REGISTRY.register()
def calculate_niqe_or_nan(img, img2=None, crop_border=0, input_order='HWC', test_y_channel=False, convert_to='y',
                          **kwargs):
    """basicsr's NIQE of ``img`` (``img2`` is ignored: no reference), NaN with a logged warning where it fails."""
    value, note = niqe_with_note(img, crop_border, input_order, convert_to)
    if note:
        get_root_logger().warning(f'{note}; recorded as NaN')
    return value


calculate_niqe_or_nan.better = 'lower'
