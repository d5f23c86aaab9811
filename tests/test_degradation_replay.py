"""HighOrderDegradation.replay / redegrader: one batch's degradation replayed on other targets."""
import pytest
import torch

import basicsr_ext  # noqa: F401  (compat shim before basicsr)
from basicsr_ext.data.degradation import HighOrderDegradation


def small_batch(b=2, canvas=96):
    torch.manual_seed(10)
    gauss = torch.exp(-(torch.arange(21.) - 10)**2 / 8)
    blur = (gauss[:, None] * gauss[None]) / gauss.sum()**2
    delta = torch.zeros(21, 21)
    delta[10, 10] = 1
    return {'gt': torch.rand(b, 3, canvas, canvas), 'kernel1': blur.expand(b, 21, 21),
            'kernel2': blur.expand(b, 21, 21), 'sinc_kernel': delta.expand(b, 21, 21)}


@pytest.mark.parametrize('gt_usm', [False, True])
def test_redegrade_of_the_real_target_is_the_real_lq(gt_usm):
    deg = HighOrderDegradation({'gt_size': 32, 'context': 8, 'gt_usm': gt_usm}, 4)
    deg.seed(3)
    batch = small_batch()
    redegrade = deg.redegrader(batch, 5)
    real = deg(batch, 5)
    after = deg.state_dict()['generator']
    lq = redegrade(real['gt_usm'] if gt_usm else real['gt'])
    if gt_usm:  # the canvas is sharpened whole instead of by window: float sums may round one level apart
        assert (lq - real['lq']).abs().max() <= 1 / 255 + 1e-6
    else:
        assert torch.equal(lq, real['lq'])
    assert torch.equal(deg.state_dict()['generator'], after)  # the training stream is untouched
    assert deg.opt.gt_usm is gt_usm
    mu = torch.rand(2, 3, 32, 32)
    out = deg.replay(batch, deg.state_dict(), mu, 5)  # any state works: a different draw, the same contract
    assert set(out) == {'lq', 'gt', 'gt_usm'} and out['lq'].shape == real['lq'].shape
    assert torch.equal(redegrade(mu), redegrade(mu))
    assert not torch.equal(redegrade(mu), real['lq'])


def test_replay_refuses_a_training_pair_queue():
    deg = HighOrderDegradation({'gt_size': 32, 'context': 8, 'queue_size': 4}, 4)
    batch = small_batch()
    state = deg.state_dict()
    deg(batch)
    with pytest.raises(ValueError, match='queue_size'):
        deg.replay(batch, state, torch.rand(2, 3, 32, 32))
