"""basicsr_ext: config-driven training of generalizable (blind) super-resolution networks on basicsr."""
from . import compat

compat.install()

import basicsr  # noqa: E402  (must follow the compat shim)

from . import archs, data, losses, metrics, models, regularizers  # noqa: E402,F401

__version__ = '0.1.0'
