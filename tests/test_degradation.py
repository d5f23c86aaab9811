"""HighOrderDegradation: faithfulness to basicsr's operators, determinism, modes, end to end on CPU."""
import math
import random

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import basicsr_ext  # noqa: F401  (compat shim before basicsr)
from basicsr.data.degradations import (add_gaussian_noise_pt, add_poisson_noise_pt, circular_lowpass_kernel,
                                       random_mixed_kernels)
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D as basicsr_filter2D

from basicsr_ext.data import degradation as D
from basicsr_ext.data import gt_only_dataset  # noqa: F401  (registers GTOnlyDataset)
from basicsr_ext.utils.schema import OptionError, validate

CANVAS, GT, SCALE = 128, 64, 4


def photo_canvases(b, size=CANVAS):
    import skimage.data
    img = skimage.data.astronaut()[::2, ::2].astype(np.float32) / 255.  # RGB 256x256
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    return torch.cat([torch.roll(t, (23 * i, 41 * i), (2, 3))[..., :size, :size] for i in range(b)]).contiguous()


def kernels(b, seed=0):
    rng = random.Random(seed)
    np.random.seed(seed)
    out = []
    for _ in range(b):
        ks = []
        for sigma in ([0.2, 3], [0.2, 1.5]):
            size = rng.choice(range(7, 22, 2))
            k = random_mixed_kernels(list(gt_only_dataset.KERNEL_TYPES), [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], size,
                                     sigma, sigma, [-math.pi, math.pi], [0.5, 4], [1, 2], noise_range=None)
            pad = (21 - size) // 2
            ks.append(np.pad(k, ((pad, pad), (pad, pad))))
        ks.append(circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), rng.choice(range(7, 22, 2)), pad_to=21))
        out.append([torch.FloatTensor(k) for k in ks])
    return [torch.stack([o[j] for o in out]) for j in range(3)]


def batch_of(b, seed=0):
    k1, k2, ks = kernels(b, seed)
    return {'gt': photo_canvases(b), 'kernel1': k1, 'kernel2': k2, 'sinc_kernel': ks}


def make(**opt):
    return D.HighOrderDegradation({'gt_size': GT, **opt}, SCALE, 'cpu')


# --------------------------------------------------------------------------------------- operators
def test_filter2d_guard_handles_diffjpeg_output():
    x = DiffJPEG(differentiable=False)(torch.rand(2, 3, 48, 48), quality=torch.tensor([40., 80.]))
    k = torch.rand(2, 21, 21)
    with pytest.raises(RuntimeError):  # the trap: basicsr's filter2D .view()s the channels-last JPEG output
        basicsr_filter2D(x, k)
    assert torch.equal(D.filter2D(x, k), basicsr_filter2D(x.contiguous(), k))


def test_usm_matches_basicsr():
    x = torch.rand(2, 3, 70, 90)
    ref = USMSharp()(x)
    assert torch.allclose(D.usm_sharpen(x, D.usm_kernel_1d(50)), ref, atol=1e-5)
    ref = USMSharp(radius=20)(x, weight=0.8, threshold=5)
    assert torch.allclose(D.usm_sharpen(x, D.usm_kernel_1d(20), 0.8, 5), ref, atol=1e-5)


def _apply_taps(x, th, tw, n_in_w):
    mh = D._taps_matrix(*th, x.size(2))
    mw = D._taps_matrix(*tw, n_in_w)
    return D._matrix_resize(x, [mh] * x.size(0), [mw] * x.size(0))


@pytest.mark.parametrize('mode', D.RESIZE_MODES)
@pytest.mark.parametrize('factor', [0.15, 0.43, 1.0, 1.27, 1.5])
def test_resize_matches_interpolate(mode, factor):
    x = torch.rand(2, 3, 61, 77)
    sf = None if mode == 'area' else factor
    ref = F.interpolate(x, scale_factor=factor, mode=mode)
    th = D.resize_taps(61, ref.size(2), mode, sf)
    tw = D.resize_taps(77, ref.size(3), mode, sf)
    assert torch.allclose(_apply_taps(x, th, tw, 77), ref, atol=1e-5)
    ref = F.interpolate(x, size=(23, 95), mode=mode)  # size mode, as the second and third resizes
    out = _apply_taps(x, D.resize_taps(61, 23, mode), D.resize_taps(77, 95, mode), 77)
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize('mode', D.RESIZE_MODES)
def test_windowed_resize_keeps_full_image_coordinates(mode):
    x = torch.rand(1, 3, 90, 90)
    full = F.interpolate(x, size=(41, 41), mode=mode)
    lo, hi, olo, ohi = 20, 70, 12, 28  # rows 12..27 only need input rows inside 20..69
    th = D.resize_taps(90, 41, mode, None, olo, ohi, lo, hi)
    tw = D.resize_taps(90, 41, mode)
    out = _apply_taps(x[:, :, lo:hi], th, tw, 90)
    assert torch.allclose(out, full[:, :, olo:ohi], atol=1e-5)


def test_gaussian_noise_matches_basicsr():
    img = torch.rand(1, 3, 24, 24)
    torch.manual_seed(3)
    ref = add_gaussian_noise_pt(img, torch.tensor([12.]), torch.tensor([1.]))
    ours = D.add_gaussian_noise(img, torch.tensor([12.]), torch.tensor([1.]), torch.Generator().manual_seed(3))
    assert torch.equal(ours, ref)
    img = torch.rand(4, 3, 24, 24)  # colour noise only: basicsr's shared gray field does not come in
    sigma = torch.tensor([1., 7., 20., 30.])
    torch.manual_seed(4)
    ref = add_gaussian_noise_pt(img, sigma, torch.zeros(4))
    assert torch.equal(D.add_gaussian_noise(img, sigma, torch.zeros(4), torch.Generator().manual_seed(4)), ref)


def test_poisson_noise_matches_basicsr():
    img = torch.rand(3, 3, 24, 24) * torch.tensor([1., 0.3, 0.05]).view(3, 1, 1, 1)  # different level counts
    scale, gray = torch.tensor([0.5, 1.5, 3.]), torch.tensor([1., 0., 1.])
    torch.manual_seed(5)
    ref = add_poisson_noise_pt(img, scale, gray_noise=gray)
    assert torch.equal(D.add_poisson_noise(img, scale, gray, torch.Generator().manual_seed(5)), ref)


def test_packed_jpeg_equals_per_sample_diffjpeg():
    deg = make()
    xs = [torch.rand(1, 3, 37, 50), torch.rand(1, 3, 64, 29), torch.rand(1, 3, 16, 16)]
    q = [35., 60., 90.]
    jpeg = DiffJPEG(differentiable=False)
    for x, y, qq in zip(xs, deg._jpeg(xs, q), q):
        assert torch.equal(y, jpeg(x, quality=torch.tensor([qq])))


# ------------------------------------------------------------------------------ whole pipeline
def usm_reference(x):
    # USMSharp's dense 51x51 convolution is slow on a CPU; test_usm_matches_basicsr ties this one to it
    return D.usm_sharpen(x, D.usm_kernel_1d(50))


def reference_chain(batch, params, gt_usm=True):
    """The RealESRNetModel.feed_data sequence with basicsr's operators, sample by sample, noise off."""
    jpeg = DiffJPEG(differentiable=False)
    out = []
    for i, p in enumerate(params):
        x = batch['gt'][i:i + 1]
        h, w = x.shape[2:]
        x = usm_reference(x) if gt_usm else x
        x = basicsr_filter2D(x, batch['kernel1'][i:i + 1])
        x = torch.clamp(F.interpolate(x, scale_factor=p['s1'], mode=p['mode1']), 0, 1)
        x = jpeg(x, quality=torch.tensor([p['q1']], dtype=torch.float32))
        if p['blur2']:
            x = basicsr_filter2D(x.contiguous(), batch['kernel2'][i:i + 1])
        size = (int(h / SCALE * p['s2']), int(w / SCALE * p['s2']))
        x = torch.clamp(F.interpolate(x, size=size, mode=p['mode2']), 0, 1)
        if p['sinc_first']:
            x = F.interpolate(x, size=(h // SCALE, w // SCALE), mode=p['mode3'])
            x = basicsr_filter2D(x, batch['sinc_kernel'][i:i + 1])
            x = jpeg(torch.clamp(x, 0, 1), quality=torch.tensor([p['q2']], dtype=torch.float32))
        else:
            x = jpeg(torch.clamp(x, 0, 1), quality=torch.tensor([p['q2']], dtype=torch.float32))
            x = F.interpolate(x, size=(h // SCALE, w // SCALE), mode=p['mode3'])
            x = basicsr_filter2D(x.contiguous(), batch['sinc_kernel'][i:i + 1])
        x = torch.clamp((x * 255.).round(), 0, 255) / 255.
        t, l, n = p['top'], p['left'], GT // SCALE
        out.append(x[..., t:t + n, l:l + n])
    return torch.cat(out)


def noiseless_params(deg, b):
    params = deg.sample_params(b, (CANVAS, CANVAS))
    choices = [(0.37, 'area', True, 0.8, 'bicubic', 'bilinear'), (1.31, 'bicubic', False, 1.0, 'area', 'bicubic'),
               (1.0, 'bilinear', True, 0.45, 'bilinear', 'area'), (0.6, 'bicubic', False, 1.13, 'bicubic', 'area')]
    for p, (s1, m1, first, s2, m2, m3) in zip(params, choices):
        p.update(s1=s1, mode1=m1, sinc_first=first, s2=s2, mode2=m2, mode3=m3, gauss1=True, gauss2=True, sigma1=0.,
                 sigma2=0.)
    return [deg.plan(p, (CANVAS, CANVAS)) for p in params]


@pytest.mark.parametrize('crop,gt_usm', [(False, True), (True, True), (False, False)])
def test_pipeline_matches_basicsr_operators(crop, gt_usm):
    """Whole canvas, or a window with context covering it: the same LR as basicsr's operator chain."""
    batch = batch_of(4)
    deg = make(crop_before_degrade=crop, context=CANVAS, gt_usm=gt_usm)
    params = noiseless_params(deg, 4)
    lq, gt, gt_usm_patch = deg.degrade(batch['gt'], batch['kernel1'], batch['kernel2'], batch['sinc_kernel'], params)
    ref = reference_chain(batch, params, gt_usm)
    assert lq.shape == (4, 3, GT // SCALE, GT // SCALE)
    assert (lq - ref).abs().max() <= 1 / 255 + 1e-6  # float-order differences may flip a rounding
    assert (lq != ref).float().mean() < 0.01
    usm = usm_reference(batch['gt'])
    for i, p in enumerate(params):
        t, l = p['top'] * SCALE, p['left'] * SCALE
        assert torch.equal(gt[i], batch['gt'][i, :, t:t + GT, l:l + GT])
        assert torch.allclose(gt_usm_patch[i], usm[i, :, t:t + GT, l:l + GT], atol=1e-5)


def test_crop_before_degrade_stays_close_to_full_canvas():
    batch = batch_of(4)
    full = make(crop_before_degrade=False)
    params = noiseless_params(full, 4)
    ref, _, _ = full.degrade(batch['gt'], batch['kernel1'], batch['kernel2'], batch['sinc_kernel'], params)
    deg = make(context=32)
    params = [deg.plan({k: v for k, v in p.items() if k != 'axes'}, (CANVAS, CANVAS)) for p in params]
    lq, _, _ = deg.degrade(batch['gt'], batch['kernel1'], batch['kernel2'], batch['sinc_kernel'], params)
    assert (lq - ref).abs().mean() < 2 / 255


def test_output_shapes_quantized_and_on_device():
    out = make()(batch_of(3), current_iter=1)
    assert set(out) == {'lq', 'gt', 'gt_usm'}
    assert out['lq'].shape == (3, 3, GT // SCALE, GT // SCALE) and out['gt'].shape == (3, 3, GT, GT)
    assert out['gt_usm'].shape == out['gt'].shape
    q = out['lq'] * 255
    assert torch.equal(q, q.round()) and out['lq'].min() >= 0 and out['lq'].max() <= 1
    assert all(t.device.type == 'cpu' and t.dtype == torch.float32 for t in out.values())


def test_seed_determinism_and_rank_difference():
    batch = batch_of(2)
    a, b, c = make(), make(), make()
    a.seed(10)
    b.seed(10)
    c.seed(11)
    oa, ob, oc = a(batch), b(batch), c(batch)
    assert torch.equal(oa['lq'], ob['lq'])
    assert not torch.equal(oa['lq'], oc['lq'])


def test_state_dict_resumes_exactly():
    batch = batch_of(2)
    deg = make(queue_size=4)
    deg.seed(3)
    deg(batch)
    state = deg.state_dict()
    expected = [deg(batch)["lq"] for _ in range(2)]
    other = make(queue_size=4)
    other.load_state_dict(state)
    for e in expected:
        assert torch.equal(other(batch)['lq'], e)


def test_per_sample_vs_per_batch_params():
    deg = make()
    deg.seed(0)
    params = deg.sample_params(16, (CANVAS, CANVAS))
    assert len({round(p['s1'], 6) for p in params}) > 4
    assert len({p['mode1'] for p in params}) > 1 and len({p['gauss1'] for p in params}) > 1
    assert len({round(p['q1'], 4) for p in params}) == 16
    deg = make(per_sample_params=False)
    params = deg.sample_params(16, (CANVAS, CANVAS))
    for key in ('s1', 'mode1', 'gauss1', 'blur2', 's2', 'mode2', 'gauss2', 'sinc_first', 'mode3', 'top', 'left'):
        assert len({p[key] for p in params}) == 1, key
    assert len({round(p['q1'], 4) for p in params}) == 16  # Real-ESRGAN draws JPEG quality per sample


def test_per_batch_with_queue():
    batch = batch_of(2)
    deg = make(per_sample_params=False, queue_size=4)
    deg.seed(1)
    outs = [deg(batch) for _ in range(4)]
    assert deg.queue['ptr'] == 4
    pool = {tuple(x.flatten()[:20].tolist()) for o in outs[:2] for x in o['lq']}
    for o in outs[2:]:  # once full, each batch is swapped with earlier pairs from the pool
        assert o['lq'].shape == (2, 3, GT // SCALE, GT // SCALE)
        assert o['gt'].shape == (2, 3, GT, GT)
    seen = {tuple(x.flatten()[:20].tolist()) for o in outs[2:] for x in o['lq']}
    assert seen & pool
    with pytest.raises(ValueError, match='multiple of the batch size'):
        make(queue_size=3)(batch)


def test_debug_grid_written_and_readable(tmp_path):
    deg = make(debug_grid={'every': 2, 'num': 2})
    deg.debug_dir = str(tmp_path)
    batch = batch_of(3)
    deg(batch, current_iter=1)
    assert not list(tmp_path.iterdir())
    out = deg(batch, current_iter=2)
    img = cv2.imread(str(tmp_path / 'degradation_2.png'))
    assert img.shape == (2 * GT + 2, 2 * GT + 2, 3)
    assert abs(int(img[0, GT + 2 + 5, 2]) - round(float(out['gt_usm'][0, 0, 0, 5]) * 255)) <= 1
    path = D.save_pair_grid(out['lq'], out['gt'], tmp_path / 'sub' / 'g.png', num=8)
    assert cv2.imread(str(path)).shape == (3 * GT + 4, 2 * GT + 2, 3)


def test_options_reject_unknown_key_with_suggestion():
    with pytest.raises(OptionError, match="did you mean 'queue_size'"):
        validate({'type': 'HighOrderDegradation', 'queue_sise': 180}, D.HighOrderDegradation.OPTIONS, 'degradation')
    with pytest.raises(OptionError, match='multiple of scale'):
        D.HighOrderDegradation({'gt_size': 66}, 4)
    opt = validate({}, D.HighOrderDegradation.OPTIONS)
    assert opt['resize_range'] == [0.15, 1.5] and opt['noise_range2'] == [1, 25] and opt['queue_size'] == 0


# ----------------------------------------------------------------------------- end to end, CPU
def _run_dataset(root, tmp_path, n=4):
    from torch.utils.data import DataLoader
    opt = validate({'type': 'GTOnlyDataset', 'dataroot_gt': str(root), 'crop_pad_size': 160},
                   gt_only_dataset.GTOnlyDataset.OPTIONS)
    ds = gt_only_dataset.GTOnlyDataset(opt)
    random.seed(0)
    np.random.seed(0)
    batch = next(iter(DataLoader(ds, batch_size=n, shuffle=False, num_workers=0)))
    deg = D.HighOrderDegradation({'gt_size': 96}, 4, 'cpu')
    deg.debug_dir = str(tmp_path)
    out = deg(batch, current_iter=0)
    assert out['lq'].shape == (n, 3, 24, 24) and out['gt'].shape == (n, 3, 96, 96)
    q = out['lq'] * 255
    assert torch.equal(q, q.round())
    assert out['lq'].std() > 0.01  # an image, not a constant


def test_end_to_end_t91(shared_datasets, tmp_path):
    root = shared_datasets / 'T91' / 'HR'
    if not root.is_dir():
        pytest.skip(f'{root} not found')
    _run_dataset(root, tmp_path)


def test_end_to_end_skimage_photos(tmp_path):
    import skimage.data
    root = tmp_path / 'photos'
    root.mkdir()
    for name in ('astronaut', 'coffee', 'chelsea'):
        cv2.imwrite(str(root / f'{name}.png'), getattr(skimage.data, name)()[:, :, ::-1])
    cv2.imwrite(str(root / 'small.png'), skimage.data.astronaut()[:90, :120, ::-1])  # padded to the canvas
    _run_dataset(root, tmp_path)
