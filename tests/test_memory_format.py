"""train.channels_last: the same training in the NHWC layout, for every architecture and with regularizers."""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_regularizer_matrix import ARCHS
from test_regularizers import make_model, one_thread, options  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')


def trained(tmp_path, arch, channels_last, iters=3):
    torch.manual_seed(0)
    regs = [{'type': 'AdaptiveDropout', 'interval': 0}, {'type': 'EATS'}]
    model = make_model(options(dict(ARCHS[arch]), regs, tmp_path, channels_last=channels_last))
    lq = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)  # the dropout masks
    for it in range(1, iters + 1):
        model.feed_data({'lq': lq, 'gt': F.interpolate(lq, scale_factor=4, mode='bicubic')})
        model.optimize_parameters(it)
    return model


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_channels_last_training_matches_the_default_layout(tmp_path, arch):
    default, nhwc = trained(tmp_path / 'a', arch, False), trained(tmp_path / 'b', arch, True)
    convs = [m for m in nhwc.net_g.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert nhwc.lq.is_contiguous(memory_format=torch.channels_last)
    assert float(nhwc.log_dict['l_awa']) == pytest.approx(float(default.log_dict['l_awa']), rel=1e-4)
    a, b = default.network_state()['params'], nhwc.network_state()['params']
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape and torch.allclose(a[key], b[key], atol=1e-5), key
