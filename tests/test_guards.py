"""Guards: tests that fail when a specific, plausible one-line breakage is applied (issue 11).

Each test names the breakage it catches. They pass today's code and were each checked by applying
the breakage and watching the test fail.
"""
import errno
import io
import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize
from PIL import Image

from basicsr_ext.data.eval_degradations import degrade_image, image_seed
from basicsr_ext.regularizers.eco import real_pair_weight
from basicsr_ext.utils import checkpoint
from basicsr_ext.utils.checkpoint import CheckpointWriteError, atomic_save, load_checkpoint
from conftest import step_context
from test_regularizers import TINY_SRRESNET, make_model, one_thread, options, save_teacher  # noqa: F401 (autouse)
from test_training import run, tiny_options


def quick_options(exp, total_iter, **train):
    """tiny_options without validation and with the plain L1 run: a training run of a second or two."""
    opt = tiny_options(exp, total_iter=total_iter, **train)
    del opt['datasets']['val'], opt['val']
    return opt


# ----------------------------------------------------------------------------- atomic_save
class _FailingFile:
    """A real binary file whose write stores half the bytes and then reports a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        data = memoryview(data).cast('B')
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _fail_in_write(monkeypatch):
    # checkpoint.py's `open` resolves through its module globals before the builtins
    monkeypatch.setattr(checkpoint, 'open', lambda *a, **k: _FailingFile(open(*a, **k)), raising=False)


def _fail_in_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(checkpoint.os, 'fsync', fsync)


@pytest.mark.parametrize('fail', [_fail_in_write, _fail_in_fsync], ids=['half-written', 'fsync'])
def test_interrupted_atomic_save_leaves_the_old_file_intact_and_no_temporary(tmp_path, monkeypatch, fail):
    """Breakage: atomic_save writing straight to the final path."""
    path = tmp_path / '6.state'
    old = {'iter': 6, 'w': torch.arange(1000, dtype=torch.float32)}
    atomic_save(old, str(path))
    before = path.read_bytes()
    fail(monkeypatch)
    with pytest.raises(CheckpointWriteError) as err:
        atomic_save({'iter': 9, 'w': torch.zeros(5000)}, str(path))
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    assert f"cannot write '{path}' (" in str(err.value) and ' bytes needed' in str(err.value)
    assert path.read_bytes() == before
    loaded = load_checkpoint(path)
    assert loaded['iter'] == 6 and torch.equal(loaded['w'], old['w'])
    assert [p.name for p in tmp_path.iterdir()] == ['6.state']  # no temporary file left


# ----------------------------------------------------------------------------- ECO
def test_eco_lr_blend_matches_an_independent_bicubic_of_the_teacher_output(tmp_path):
    """Breakage: ECO's LR blend (1-a)·D(μ) + a·LR (e.g. the lerp's ends swapped, or a dropped)."""
    path, teacher = save_teacher(tmp_path, TINY_SRRESNET)
    model = make_model(options(TINY_SRRESNET, [{'type': 'ECO', 'teacher_path': path}], tmp_path, total_iter=100))
    eco = model.regularizers[0]
    torch.manual_seed(3)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    iteration = 40  # a ≈ 0.22: far from 0, 1 and 0.5, where swapping the blend's ends would not show
    a = real_pair_weight(iteration / 100)
    assert 0.1 < a < 0.4
    lq, gt = eco.transform_batch(step_context(model, x, y, iteration))
    with torch.no_grad():
        mu = teacher.eval()(x).clamp(0, 1)
    synthetic = torch.stack([imresize(m, 1 / 4) for m in mu])  # basicsr's MATLAB bicubic, one image at a time
    assert synthetic.shape == x.shape
    assert torch.allclose(lq, (1 - a) * synthetic + a * x, atol=1e-5)
    assert torch.allclose(gt, (1 - a) * mu + a * y, atol=1e-6)
    assert (lq - x).abs().max() > 0.05 and (lq - synthetic).abs().max() > 0.01  # both ends matter


# ----------------------------------------------------------------------------- EATS
def test_eats_loss_weight_and_mean_over_pairs_against_independent_disrupted_forwards(tmp_path):
    """Breakage: EATS's loss_weight ignored, or L_awa summed (or one pair taken) instead of averaged."""
    model = make_model(options(TINY_SRRESNET, [{'type': 'EATS', 'loss_weight': 2.5, 'num_pairs': 3}], tmp_path))
    eats = model.regularizers[0]
    net = model.get_bare_model(model.net_g)
    torch.manual_seed(11)
    with torch.no_grad():  # weights of a trained scale: basicsr's 0.1-scaled init hides a swapped channel
        for p in net.parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.05)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    eats.train()
    eats.transform_batch(step_context(model, x, y, 5))
    pairs = list(eats.pairs)
    output = net(x)
    l_awa = eats.extra_losses(step_context(model, x, y, 5), output)['l_awa']
    assert len(pairs) == 3 and pairs == eats.draw_pairs(5)
    target = F.interpolate(x, scale_factor=4, mode='bicubic', align_corners=False).clamp(0, 1)
    with torch.no_grad():
        each = [F.l1_loss(eats.disrupted_forward(net, x, *pair, replay=False), target).item() for pair in pairs]
    assert max(each) - min(each) > 1e-4 * max(each)  # distinct pairs, so the mean differs from any one of them
    assert l_awa.item() == pytest.approx(2.5 * sum(each) / 3, rel=1e-5)


# ----------------------------------------------------------------------------- test degradations
def _reference_lr(hr, scale, seed, name, spec, blur):
    """The reference protocol written out with PIL/cv2/NumPy: [blur] -> PIL bicubic -> noise -> JPEG 50."""
    import cv2
    img = hr[:hr.shape[0] - hr.shape[0] % scale, :hr.shape[1] - hr.shape[1] % scale]
    if blur:
        img = cv2.GaussianBlur(img, (21, 21), 2.0)
    h, w = img.shape[:2]
    img = np.asarray(Image.fromarray(img).resize((w // scale, h // scale), Image.BICUBIC))
    rng = np.random.RandomState(image_seed(seed, name, spec, scale))
    noisy = np.clip(img.astype(np.float32) / 255. + rng.normal(0., 20. / 255., img.shape), 0, 1)
    img = np.clip(noisy * 255., 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=50)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))


@pytest.mark.parametrize('spec', ['n+j', 'b+n+j'])
def test_noise_comes_before_jpeg_on_a_colour_image(spec):
    """Breakage: the test degradations applying JPEG before the noise (noise(JPEG(x)) instead of JPEG(noise(x)))."""
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:66, 0:50]
    hr = np.stack([(xx * 5) % 256, (yy * 3 + xx) % 256, 128 + 60 * np.sin(xx / 4.0 + yy / 7.0)], axis=2)
    hr = np.clip(hr + rng.randint(-20, 21, hr.shape), 0, 255).astype(np.uint8)  # colour with texture
    lr = degrade_image(hr, spec, 2, seed=4, name='colour')
    assert lr.shape == (33, 25, 3) and not np.array_equal(lr[..., 0], lr[..., 1])
    assert np.array_equal(lr, _reference_lr(hr, 2, 4, 'colour', spec, blur=spec.startswith('b')))


# ----------------------------------------------------------------------------- resume and the global RNG
def _dropout_options(exp, total_iter):
    opt = quick_options(exp, total_iter, regularizers=[{'type': 'Dropout', 'p': 0.5}])
    opt['logger']['save_checkpoint_freq'] = 2
    return opt


def test_resume_restores_the_global_rng_that_dropout_draws_from(tmp_path):
    """Breakage: the global RNG state not restored on a single-process resume (_restore_rank_state /
    set_rng_states): Dropout's masks after the resume would repeat the first iterations' masks."""
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    run(tmp_path, _dropout_options(straight, 4), name='a.yml')
    run(tmp_path, _dropout_options(resumed, 2), name='b.yml')
    state = resumed / 'training_states' / '2.state'
    run(tmp_path, {**_dropout_options(resumed, 4), 'path': {'experiments_root': str(resumed),
                                                           'resume_state': str(state)}}, name='c.yml')
    a = load_checkpoint(straight / 'models' / 'net_g_4.pth')
    b = load_checkpoint(resumed / 'models' / 'net_g_4.pth')
    for key in ('params', 'params_ema'):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f'{key}.{name} differs after resume'


# ----------------------------------------------------------------------------- experiment folders
def test_keep_checkpoints_prunes_to_the_newest_pairs(tmp_path):
    """Breakage: logger.keep_checkpoints ignored (every checkpoint kept) or the wrong ones pruned."""
    exp = tmp_path / 'exp'
    opt = quick_options(exp, 5)
    opt['logger'].update(save_checkpoint_freq=1, keep_checkpoints=2)
    run(tmp_path, opt)
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['4.state', '5.state']
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_4.pth', 'net_g_5.pth']
    assert load_checkpoint(exp / 'training_states' / '5.state')['iter'] == 5
    assert set(load_checkpoint(exp / 'models' / 'net_g_4.pth')) == {'params', 'params_ema'}


def test_a_second_run_without_resume_archives_the_first(tmp_path):
    """Breakage: an existing experiment folder overwritten or deleted instead of moved aside."""
    exp = tmp_path / 'exp'
    run(tmp_path, quick_options(exp, 2), name='first.yml')
    first_weights = (exp / 'models' / 'net_g_2.pth').read_bytes()
    first_history = (exp / 'history.jsonl').read_text()
    run(tmp_path, quick_options(exp, 1), name='second.yml')
    archived = sorted(tmp_path.glob('exp_archived_*'))
    assert len(archived) == 1, sorted(p.name for p in tmp_path.iterdir())
    old = archived[0]
    assert (old / 'models' / 'net_g_2.pth').read_bytes() == first_weights
    assert (old / 'history.jsonl').read_text() == first_history
    assert (old / 'first.yml').exists() and list(old.glob('train_tiny_*.log'))
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_1.pth']  # a fresh folder
    assert (exp / 'second.yml').exists() and not (exp / 'first.yml').exists()
    assert [json.loads(line)['iter'] for line in (exp / 'history.jsonl').read_text().splitlines()] == [1]


# ----------------------------------------------------------------------------- validation on the EMA
class _Loader(list):
    dataset = SimpleNamespace(opt={'name': 'ema_check'})


def test_validation_runs_the_ema_network_when_ema_decay_is_set(tmp_path):
    """Breakage: BlindSRModel.test validating net_g instead of net_g_ema when ema_decay > 0."""
    raw = options(TINY_SRRESNET, [], tmp_path, ema_decay=0.9)
    raw['val'] = {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    model = make_model(raw)
    net, ema = model.get_bare_model(model.net_g), model.get_bare_model(model.net_g_ema)
    with torch.no_grad():
        for p in ema.parameters():  # an EMA that has drifted away from the trained weights
            p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(2)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        from_ema, from_net = ema.eval()(x), net.eval()(x)
    assert (from_ema - from_net).abs().max() > 1e-2
    model.feed_data({'lq': x})
    model.test()
    assert torch.allclose(model.output, from_ema, atol=1e-6)
    # through validation: the GT is the EMA's own (rounded) output, so only the EMA scores an exact match
    gt = torch.from_numpy(tensor2img([from_ema])[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255.
    results = model.validation(_Loader([{'lq': x, 'gt': gt, 'lq_path': ['a.png']}]), 1, None)
    assert results['psnr'] == math.inf


# ----------------------------------------------------------------------------- warm-up
def test_warmup_iter_ramps_the_logged_learning_rate_then_follows_the_schedule(tmp_path):
    """Breakage: train.warmup_iter not passed on to update_learning_rate (no warm-up).

    After the warm-up the chainable MultiStepLR must continue from the initial lr (basicsr alone
    leaves it at init·(w-1)/w for good), and its milestone 6 still halves it (from iteration 7: basicsr steps
    the schedulers from iteration 2 on)."""
    def options(exp, total_iter):
        opt = quick_options(exp, total_iter, warmup_iter=4)
        opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [6], 'gamma': 0.5}
        return opt

    def logged_lrs(exp):
        records = [json.loads(line) for line in (exp / 'history.jsonl').read_text().splitlines()]
        return {r['iter']: r['lr'][0] for r in records if r['kind'] == 'train'}

    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    run(tmp_path, options(straight, 7), name='a.yml')
    expected = {1: 2.5e-4, 2: 5e-4, 3: 7.5e-4, 4: 1e-3, 5: 1e-3, 6: 1e-3, 7: 5e-4}  # init_lr·iter/warmup_iter first
    assert logged_lrs(straight) == pytest.approx(expected, rel=1e-9)
    # a run stopped mid-warm-up continues on the same learning rates
    run(tmp_path, options(resumed, 2), name='b.yml')
    run(tmp_path, options(resumed, 7), '--auto_resume', name='b.yml')
    assert logged_lrs(resumed) == pytest.approx(expected, rel=1e-9)
