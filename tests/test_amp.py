"""Mixed-precision training (train.amp): autocast forward, fp32 losses, loss scaling for fp16, resumable scaler."""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from basicsr_ext.utils.checkpoint import atomic_save, load_checkpoint
from basicsr_ext.config import validate_options
from basicsr_ext.utils.schema import OptionError
from test_regularizers import TINY_SRRESNET, make_model, one_thread, options  # noqa: F401 (autouse fixture)


def fixed_batch():
    lq = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    return {'lq': lq, 'gt': F.interpolate(lq, scale_factor=4, mode='bicubic', align_corners=False)}


def amp_model(tmp_path, amp, **train):
    torch.manual_seed(0)
    return make_model(options(TINY_SRRESNET, [], tmp_path, amp=amp, **train))


def train_steps(model, first, last, batch):
    losses = []
    for it in range(first, last + 1):
        model.feed_data(batch)
        model.optimize_parameters(it)
        losses.append(float(model.log_dict['l_pix']))
    return losses


def test_amp_option_is_validated(tmp_path):
    with pytest.raises(OptionError) as err:
        validate_options(options(TINY_SRRESNET, [], tmp_path, amp='fp8'))
    assert str(err.value) == "train.amp: expected false, true, 'fp16' or 'bf16', got 'fp8'"
    assert validate_options(options(TINY_SRRESNET, [], tmp_path))['train']['amp'] is False


@pytest.mark.parametrize('amp, dtype', [('bf16', torch.bfloat16), ('fp16', torch.float16), (True, torch.float16)])
def test_amp_runs_convs_in_half_precision_and_keeps_fp32_weights_and_losses(tmp_path, amp, dtype):
    model = amp_model(tmp_path, amp)
    seen = []
    for m in model.net_g.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    losses = train_steps(model, 1, 30, fixed_batch())
    fp32_losses = train_steps(amp_model(tmp_path / 'fp32', False), 1, 30, fixed_batch())
    assert set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in model.net_g.parameters())
    assert model.output.dtype == torch.float32
    assert model.grad_scaler.is_enabled() == (dtype == torch.float16)
    assert losses[-1] < 0.9 * losses[0]
    # the same trajectory as fp32 training, up to half-precision rounding
    assert losses == pytest.approx(fp32_losses, rel=0.05)
    assert ('grad_scaler' in model.training_state()) == (dtype == torch.float16)


def test_fp16_gradients_are_unscaled_before_clipping(tmp_path):
    model = amp_model(tmp_path, 'fp16', grad_clip=1e-3)
    assert model.grad_scaler.get_scale() == 65536.0
    model.feed_data(fixed_batch())
    model.optimize_parameters(1)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.net_g.parameters()]))
    # clipped to the threshold in true units; clipping scaled gradients would leave norm ≈ 1e-3 / 65536
    assert norm.item() == pytest.approx(1e-3, rel=1e-3)


def test_fp16_training_resumes_bit_identically_with_its_loss_scale(tmp_path):
    batch = fixed_batch()
    first = amp_model(tmp_path / 'a', 'fp16')
    train_steps(first, 1, 4, batch)
    first.grad_scaler.update(1024.0)  # a scale of its own, so that restoring it is visible
    # through files, as a real resume does (and as weights-only unpickling must accept)
    atomic_save(first.training_state(), str(tmp_path / '4.state'))
    atomic_save(first.network_state(), str(tmp_path / 'net_g_4.pth'))
    state, weights = load_checkpoint(tmp_path / '4.state'), load_checkpoint(tmp_path / 'net_g_4.pth')
    assert state['grad_scaler']['scale'] == 1024.0

    resumed = amp_model(tmp_path / 'b', 'fp16')
    resumed.load_network_state(weights)
    resumed.resume_training(state)
    assert resumed.grad_scaler.get_scale() == 1024.0
    assert resumed.grad_scaler.state_dict() == first.grad_scaler.state_dict()
    train_steps(first, 5, 8, batch)
    train_steps(resumed, 5, 8, batch)
    for a, b in zip(first.net_g.state_dict().values(), resumed.net_g.state_dict().values()):
        assert torch.equal(a, b)


def test_eats_awakening_pass_runs_under_autocast(tmp_path):
    torch.manual_seed(0)
    model = make_model(options(TINY_SRRESNET, [{'type': 'EATS'}], tmp_path, amp='bf16'))
    before = [p.detach().clone() for p in model.net_g.parameters()]
    model.feed_data(fixed_batch())
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_pix', 'l_awa'} and all(torch.isfinite(torch.tensor(v)) for v in
                                                              model.log_dict.values())
    assert all(not torch.equal(a, p) for a, p in zip(before, model.net_g.parameters()))
