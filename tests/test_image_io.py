"""read_image / decode_image / pad_or_reject / list_images on files written with cv2."""
import cv2
import numpy as np
import pytest
from skimage import data as skdata

import basicsr_ext  # noqa: F401  (compat shim before basicsr)
from basicsr_ext.data.image_io import (ImageReadError, ImageTooSmallError, decode_image, list_images, pad_or_reject,
                                       read_image)


def write(path, img):
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def bgr():
    return np.ascontiguousarray(skdata.astronaut()[:48, :64, ::-1])


def test_color_bgr_float_and_rgb_uint8(tmp_path, bgr):
    path = write(tmp_path / 'c.png', bgr)
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == (48, 64, 3)
    np.testing.assert_array_equal(img, bgr.astype(np.float32) / 255.)
    rgb = read_image(path, float32=False, order='rgb')
    assert rgb.dtype == np.uint8 and rgb.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])


def test_gray_becomes_three_equal_channels(tmp_path):
    gray = skdata.camera()[:30, :40]
    img = read_image(write(tmp_path / 'g.png', gray), float32=False)
    assert img.shape == (30, 40, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray)
    img, alpha = read_image(tmp_path / 'g.png', return_alpha=True)
    assert alpha is None and img.dtype == np.float32


def test_rgba_drops_alpha_or_returns_it(tmp_path, bgr):
    alpha = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    path = write(tmp_path / 'a.png', np.dstack([bgr, alpha]))
    img = read_image(path, float32=False)
    np.testing.assert_array_equal(img, bgr)
    img, a = read_image(path, return_alpha=True)
    np.testing.assert_array_equal(img, bgr.astype(np.float32) / 255.)
    np.testing.assert_array_equal(a, alpha.astype(np.float32) / 255.)
    img, a = read_image(path, float32=False, order='rgb', return_alpha=True)
    np.testing.assert_array_equal(img, bgr[:, :, ::-1])
    np.testing.assert_array_equal(a, alpha)


def test_16bit_scaled(tmp_path):
    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, size=(20, 24, 3), dtype=np.uint16)
    deep[0, 0] = [0, 65535, 257 * 100]
    path = write(tmp_path / 'd.png', deep)
    img = read_image(path)
    assert img.dtype == np.float32
    np.testing.assert_allclose(img, deep.astype(np.float32) / 65535., rtol=0, atol=1e-7)
    assert img[0, 0].tolist() == [0.0, 1.0, pytest.approx(100 / 255.)]
    small = read_image(path, float32=False)
    np.testing.assert_array_equal(small, np.round(deep / 257.).astype(np.uint8))
    assert small[0, 0].tolist() == [0, 255, 100]
    gray16 = write(tmp_path / 'g16.png', deep[:, :, 0])
    img = read_image(gray16, float32=False)
    assert img.shape == (20, 24, 3) and (img == img[:, :, :1]).all()


@pytest.mark.parametrize('content', [b'', b'not an image at all', 'truncated'])
def test_corrupted_file_raises_naming_it(tmp_path, bgr, content):
    path = tmp_path / 'broken.png'
    if content == 'truncated':
        ok, buf = cv2.imencode('.png', bgr)
        content = buf.tobytes()[:len(buf) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"cannot decode image '{path}'") as info:
        read_image(path)
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)


def test_missing_file_raises_naming_it(tmp_path):
    path = tmp_path / 'missing.png'
    with pytest.raises(ImageReadError, match=f"cannot read image file '{path}'"):
        read_image(path)
    with pytest.raises(OSError):  # the OSError side works with ordinary handlers
        read_image(path)


def test_decode_image_bytes(bgr):
    ok, buf = cv2.imencode('.png', bgr)
    np.testing.assert_array_equal(decode_image(buf.tobytes(), float32=False), bgr)
    with pytest.raises(ImageReadError, match="cannot decode image 'lmdb:0001'"):
        decode_image(b'junk', name='lmdb:0001')


def test_bad_order(tmp_path, bgr):
    with pytest.raises(ValueError, match="order must be 'bgr' or 'rgb'"):
        read_image(write(tmp_path / 'c.png', bgr), order='RGB')


def test_pad_or_reject_large_enough_is_untouched(bgr):
    assert pad_or_reject(bgr, 48, 64, 'x.png', mode='error') is bgr
    assert pad_or_reject(bgr, 10, 10, 'x.png') is bgr


def test_pad_reflects_bottom_right():
    img = np.arange(3 * 4 * 3, dtype=np.float32).reshape(3, 4, 3)
    out = pad_or_reject(img, 6, 5, 'x.png')
    assert out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out[:3, :4], img)
    np.testing.assert_array_equal(out[3], out[1])  # mirrored about the last row, which is not repeated
    np.testing.assert_array_equal(out[:3, 4], img[:, 2])
    # a pad larger than the image keeps mirroring; a single channel keeps its axis
    assert pad_or_reject(np.zeros((2, 2, 1), np.uint8), 9, 9, 'x.png').shape == (9, 9, 1)
    assert pad_or_reject(np.zeros((2, 2), np.uint8), 9, 1, 'x.png').shape == (9, 2)


def test_reject_message():
    img = np.zeros((100, 90, 3), np.uint8)
    with pytest.raises(ImageTooSmallError) as info:
        pad_or_reject(img, 128, 128, 'datasets/T91/t1.png', mode='error')
    assert str(info.value) == ("image 'datasets/T91/t1.png' is 100x90 (HxW), smaller than the required 128x128; "
                               "use larger images or pad them (mode='pad')")
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="mode must be 'pad' or 'error'"):
        pad_or_reject(img, 128, 128, 'x.png', mode='crop')


def test_list_images(tmp_path, bgr):
    for name in ('b.PNG', 'a.jpg', 'c.bmp'):
        write(tmp_path / name, bgr)
    (tmp_path / 'notes.txt').write_text('x')
    (tmp_path / 'sub').mkdir()
    write(tmp_path / 'sub' / 'd.png', bgr)
    assert list_images(tmp_path) == ['a.jpg', 'b.PNG', 'c.bmp']
    assert list_images(tmp_path, recursive=True) == ['a.jpg', 'b.PNG', 'c.bmp', 'sub/d.png']
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        list_images(tmp_path / 'none')
