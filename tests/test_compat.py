"""The basicsr 1.4.2 compatibility shim."""
import sys

import torch
import torchvision.transforms.functional as TF

from basicsr_ext import compat


def test_basicsr_imports_and_uses_the_functional_tensor_alias():
    import basicsr  # noqa: F401
    from basicsr.data import degradations
    shim = sys.modules['torchvision.transforms.functional_tensor']
    assert shim.rgb_to_grayscale is TF.rgb_to_grayscale
    img = torch.rand(1, 3, 8, 8)
    gray = degradations.rgb_to_grayscale(img, num_output_channels=1)
    expected = 0.2989 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    torch.testing.assert_close(gray[:, 0], expected, atol=1e-6, rtol=0)


def test_loose_version_fallback_orders_versions():
    v = compat._LooseVersion
    assert v('0.29.1') >= v('0.9.0')
    assert v('2.14.1+cu130') > '2.9'
    assert not v('0.8.2') >= '0.9.0'
    assert v('1.2.3') == '1.2.3'


def test_install_is_idempotent():
    compat.install()
    compat.install()
    from basicsr.archs.arch_util import LooseVersion  # noqa: F401  (arch_util imports it at module level)
