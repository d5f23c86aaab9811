"""Image reading that fails loudly and normalises layout, for datasets and data tools.

Conventions (the same as basicsr's datasets): arrays are HWC, channels in **BGR** order by
default (``order='rgb'`` flips them), float32 in [0, 1] or uint8 in [0, 255].

* gray (H x W, or H x W x 1) -> the gray plane repeated into 3 channels;
* gray + alpha / BGRA -> the colour part; the alpha plane is dropped, or returned as a
  second value (H x W, same dtype and scale as the image) with ``return_alpha=True``;
* 16-bit -> scaled by 1/65535 to float32, or to uint8 with ``round(v / 257)``;
* float images (e.g. 32-bit TIFF) are taken to be in [0, 1] already.

A missing, empty or undecodable file raises :class:`ImageReadError` with the path in the message,
where ``cv2.imread`` would hand back ``None`` and the failure would only surface later as an
unrelated ``NoneType`` error.
"""
from pathlib import Path

import cv2
import numpy as np
from basicsr.utils import scandir

from ..utils.errors import ImageTooSmallError  # re-exported: raised here and by the archs

IMAGE_EXTENSIONS = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff', '.webp', '.ppm', '.pgm')

__all__ = [
    'IMAGE_EXTENSIONS', 'ImageMissingError', 'ImageReadError', 'ImageTooSmallError', 'list_images', 'imread_unchanged', 'decode_image',
    'read_image', 'pad_or_reject'
]


class ImageReadError(OSError, ValueError):
    """An image file could not be read or decoded.

    Both an ``OSError`` (it is about a file) and a ``ValueError`` (the bytes are bad), so either
    ``except`` clause catches it.
    """


class ImageMissingError(ImageReadError, FileNotFoundError):
    """An image file that was listed (e.g. when the run started) no longer exists."""


def list_images(folder, recursive=False):
    """Sorted image paths under ``folder``, relative to it (POSIX separators), by extension, any case.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: '{folder}'")
    rel = (Path(p) for p in scandir(str(folder), recursive=recursive))
    return sorted(p.as_posix() for p in rel if p.suffix.lower() in IMAGE_EXTENSIONS)


def _decode_raw(data, name):
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageReadError(f"cannot decode image '{name}': the file is empty")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f"cannot decode image '{name}': corrupted, truncated or not an image format "
                             f'OpenCV reads ({buf.size} bytes)')
    return img


def imread_unchanged(path):
    """Read a file as OpenCV stores it (BGR/BGRA/gray, native bit depth), or raise ImageReadError.

    Goes through ``np.fromfile`` + ``cv2.imdecode`` instead of ``cv2.imread`` so that paths with
    non-ASCII characters work and a missing file is told apart from a corrupted one.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ImageMissingError(f"cannot read image file '{path}': no such file") from err
    except OSError as err:
        raise ImageReadError(f"cannot read image file '{path}': {err.strerror or err}") from err
    return _decode_raw(data, path)


def _to_float32(img):
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.
    return img.astype(np.float32)


def _to_uint8(img):
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # 65535 / 255 == 257 exactly, so 8-bit data stored as 16-bit comes back unchanged
        return np.round(img.astype(np.float32) / 257.).astype(np.uint8)
    return np.clip(np.round(img.astype(np.float32) * 255.), 0, 255).astype(np.uint8)


def _normalise(img, name, float32, order, return_alpha):
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ImageReadError(f"unsupported pixel type {img.dtype} in image '{name}'")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    alpha = None
    if img.ndim == 2:
        color = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 2:
        color, alpha = np.repeat(img[:, :, :1], 3, axis=2), img[:, :, 1]
    elif img.shape[2] == 3:
        color = img
    elif img.shape[2] == 4:
        color, alpha = img[:, :, :3], img[:, :, 3]
    else:
        raise ImageReadError(f"unsupported channel count {img.shape[2]} in image '{name}'")
    convert = _to_float32 if float32 else _to_uint8
    color = convert(color)
    if order == 'rgb':
        color = color[:, :, ::-1]
    color = np.ascontiguousarray(color)
    if return_alpha:
        return color, (None if alpha is None else convert(alpha))
    return color


def _check_order(order):
    if order not in ('bgr', 'rgb'):
        raise ValueError(f"order must be 'bgr' or 'rgb', got {order!r}")


def decode_image(data, name='<bytes>', float32=True, order='bgr', return_alpha=False):
    """Like :func:`read_image`, for encoded bytes (e.g. a value from an LMDB); ``name`` is used in errors."""
    _check_order(order)
    return _normalise(_decode_raw(data, name), name, float32, order, return_alpha)


def read_image(path, float32=True, order='bgr', return_alpha=False):
    """Read an image file as a 3-channel HWC array.

    Args:
        path (str | Path): image file.
        float32 (bool): float32 in [0, 1] (default, what basicsr datasets use) or uint8 if False.
        order (str): ``'bgr'`` (default, basicsr/OpenCV convention) or ``'rgb'``.
        return_alpha (bool): also return the alpha plane (``None`` when the file has none).

    Returns:
        ndarray (H, W, 3), or ``(image, alpha)`` when ``return_alpha`` is True.

    Raises:
        ImageReadError: the file is missing, unreadable, corrupted or of an unsupported layout.
    """
    _check_order(order)
    return _normalise(imread_unchanged(path), path, float32, order, return_alpha)


def pad_or_reject(img, min_h, min_w, path, mode='pad'):
    """Make sure ``img`` is at least ``min_h`` x ``min_w``.

    An image that is already large enough is returned as is (the same object). Otherwise, with
    ``mode='pad'`` it is extended at the bottom and right by mirroring (OpenCV BORDER_REFLECT_101,
    the padding basicsr's Real-ESRGAN dataset uses; it keeps the top-left corner fixed, so a GT
    and its LQ padded to sizes in the scale ratio stay aligned); with ``mode='error'`` an
    :class:`ImageTooSmallError` names the file, its size and the size needed.
    """
    if mode not in ('pad', 'error'):
        raise ValueError(f"mode must be 'pad' or 'error', got {mode!r}")
    h, w = img.shape[:2]
    if h >= min_h and w >= min_w:
        return img
    if mode == 'error':
        raise ImageTooSmallError(f"image '{path}' is {h}x{w} (HxW), smaller than the required {min_h}x{min_w}; "
                                 "use larger images or pad them (mode='pad')")
    padded = cv2.copyMakeBorder(img, 0, max(0, min_h - h), 0, max(0, min_w - w), cv2.BORDER_REFLECT_101)
    if img.ndim == 3 and padded.ndim == 2:  # OpenCV drops a trailing single channel
        padded = padded[:, :, None]
    return padded
