"""Image arrays (as OpenCV reads them) to the planes a network takes, and its output back.

A user expects the output file to keep the input's kind: gray stays gray, the alpha plane is
kept (upscaled on its own, not by the network), 16-bit stays 16-bit. :func:`array_to_planes`
splits an array into float32 CHW planes in [0, 1] and an :class:`ArrayLayout` that remembers
what was split off; :func:`planes_to_array` undoes it on the network's output.
"""
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

__all__ = ['ArrayLayout', 'to_unit', 'from_unit', 'array_to_planes', 'planes_to_array']


def to_unit(img):
    """``img`` as float32 in [0, 1], and the peak it was divided by (None for float input, clipped to [0, 1])."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255., 255.
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535., 65535.
    return np.clip(img.astype(np.float32), 0, 1), None


def from_unit(x, peak, dtype):
    """Inverse of :func:`to_unit`: rounded to the integer range of ``peak``, or clipped floats when it is None."""
    if peak is None:
        return np.clip(x, 0, 1).astype(dtype)
    return np.clip(np.round(x * peak), 0, peak).astype(dtype)


@dataclass(frozen=True)
class ArrayLayout:
    """What :func:`array_to_planes` took apart: dtype and peak of the input, gray or BGR, the alpha plane."""
    dtype: np.dtype
    peak: Optional[float]
    gray: bool
    alpha: Optional[np.ndarray] = None


def array_to_planes(img, in_channels=3):
    """An HxW / HxWx1 / HxWx2 / HxWx3 / HxWx4 array (gray/BGR, any alpha, any depth) -> CHW float32 planes.

    The planes are RGB for a 3-channel network (gray repeated into 3 channels), or one gray plane
    for a 1-channel network (BGR converted with OpenCV's luma weights).

    Returns:
        (planes, layout): a contiguous C x H x W float32 array in [0, 1], and what
        :func:`planes_to_array` needs to rebuild the input's kind.
    """
    dtype = img.dtype
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    alpha = None
    if img.ndim == 3 and img.shape[2] in (2, 4):
        img, alpha = img[:, :, :-1], img[:, :, -1]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    gray = img.ndim == 2
    x, peak = to_unit(img)
    if in_channels == 1:
        planes = x[None] if gray else cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)[None]
    else:
        rgb = np.repeat(x[:, :, None], 3, axis=2) if gray else x[:, :, ::-1]
        planes = rgb.transpose(2, 0, 1)
    return np.ascontiguousarray(planes), ArrayLayout(dtype, peak, gray, alpha)


def planes_to_array(planes, layout):
    """The network's C x H x W output (float, in [0, 1]) as an array of the input's kind (see :func:`array_to_planes`).

    Gray input -> HxW (a 3-channel output converted back with OpenCV's luma weights); colour ->
    BGR; the alpha plane is resized to the output with bicubic interpolation and re-attached.
    """
    out = planes.transpose(1, 2, 0)
    if out.shape[2] == 1:
        out = out[:, :, 0] if layout.gray else np.repeat(out, 3, axis=2)
    else:
        out = np.ascontiguousarray(out[:, :, ::-1])  # back to BGR
        if layout.gray:
            out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    out = from_unit(out, layout.peak, layout.dtype)
    if layout.alpha is not None:
        a, a_peak = to_unit(layout.alpha)
        a = cv2.resize(a, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
        a = from_unit(a, a_peak, layout.dtype)
        out = np.concatenate([out if out.ndim == 3 else out[:, :, None], a[:, :, None]], axis=2)
    return out
