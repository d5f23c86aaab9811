"""basicsr's MATLAB-compatible PSNR/SSIM, as the framework calls them, against independent numpy/scipy code."""
import numpy as np
import pytest
from scipy.signal import convolve2d

from basicsr.metrics import calculate_metric


def y_channel(img_bgr):
    """ITU-R BT.601 luma of an 8-bit BGR image, on the [16, 235] scale, as MATLAB's rgb2ycbcr."""
    b, g, r = [img_bgr[..., i].astype(np.float64) for i in range(3)]
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64))**2)
    return 10 * np.log10(255.0**2 / mse)


def gaussian_window(size=11, sigma=1.5):
    ax = np.arange(size) - size // 2
    g = np.exp(-ax**2 / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def ssim_plane(a, b):
    c1, c2 = (0.01 * 255)**2, (0.03 * 255)**2
    w = gaussian_window()
    f = lambda x: convolve2d(x, w[::-1, ::-1], mode='valid')  # noqa: E731  (correlation, like cv2.filter2D)
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    return np.mean(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))


@pytest.fixture
def pair():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    noisy = np.clip(gt.astype(np.int16) + rng.integers(-12, 13, gt.shape), 0, 255).astype(np.uint8)
    return noisy, gt


@pytest.mark.parametrize('crop', [0, 4])
def test_psnr_rgb_and_y(pair, crop):
    sr, gt = pair
    c = slice(crop, -crop) if crop else slice(None)
    rgb = calculate_metric({'img': sr, 'img2': gt}, {'type': 'calculate_psnr', 'crop_border': crop})
    assert rgb == pytest.approx(psnr(sr[c, c], gt[c, c]), abs=1e-9)
    y = calculate_metric({'img': sr, 'img2': gt}, {'type': 'calculate_psnr', 'crop_border': crop, 'test_y_channel': True})
    assert y == pytest.approx(psnr(y_channel(sr)[c, c], y_channel(gt)[c, c]), abs=1e-6)


def test_ssim_rgb_and_y(pair):
    sr, gt = pair
    crop = 4
    c = slice(crop, -crop)
    rgb = calculate_metric({'img': sr, 'img2': gt}, {'type': 'calculate_ssim', 'crop_border': crop})
    expected = np.mean([ssim_plane(sr[c, c, i], gt[c, c, i]) for i in range(3)])
    assert rgb == pytest.approx(expected, abs=1e-9)
    y = calculate_metric({'img': sr, 'img2': gt}, {'type': 'calculate_ssim', 'crop_border': crop, 'test_y_channel': True})
    assert y == pytest.approx(ssim_plane(y_channel(sr)[c, c], y_channel(gt)[c, c]), abs=1e-6)


def test_identical_images_have_infinite_psnr_and_unit_ssim(pair):
    _, gt = pair
    assert calculate_metric({'img': gt, 'img2': gt}, {'type': 'calculate_psnr', 'crop_border': 0}) == float('inf')
    assert calculate_metric({'img': gt, 'img2': gt}, {'type': 'calculate_ssim', 'crop_border': 0}) == pytest.approx(1.0)
