"""Make basicsr 1.4.2 importable on a modern stack, without editing site-packages.

basicsr 1.4.2 (the last release) breaks on import in two places:

* ``basicsr/data/degradations.py`` imports ``torchvision.transforms.functional_tensor``,
  which torchvision removed in 0.17. We register an alias module exposing the one
  function basicsr uses (``rgb_to_grayscale``), which lives in
  ``torchvision.transforms.functional`` now.
* ``basicsr/archs/arch_util.py`` imports ``distutils.version.LooseVersion``; distutils is
  gone from Python 3.12 unless setuptools provides its shim. We provide a minimal
  ``LooseVersion`` only when no distutils can be imported.

``install()`` must run before the first ``import basicsr``; ``basicsr_ext/__init__.py``
calls it, so ``import basicsr_ext`` is always enough.
"""
import importlib
import re
import sys
import types

_INSTALLED = False


class _LooseVersion:
    """Comparable version made of the leading integer components of a version string."""

    def __init__(self, vstring):
        self.vstring = str(vstring)
        self.version = tuple(int(p) for p in re.findall(r'\d+', self.vstring.split('+')[0])[:3])

    def _cmp_key(self, other):
        return other.version if isinstance(other, _LooseVersion) else _LooseVersion(other).version

    def __lt__(self, other):
        return self.version < self._cmp_key(other)

    def __le__(self, other):
        return self.version <= self._cmp_key(other)

    def __gt__(self, other):
        return self.version > self._cmp_key(other)

    def __ge__(self, other):
        return self.version >= self._cmp_key(other)

    def __eq__(self, other):
        return self.version == self._cmp_key(other)

    def __repr__(self):
        return f"LooseVersion('{self.vstring}')"


def _alias_functional_tensor():
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    # only when the shim is needed: torchvision must be importable by then, not when compat loads
    from torchvision.transforms import functional
    shim = types.ModuleType(name)
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = shim


def _provide_distutils_version():
    try:
        importlib.import_module('distutils.version')
        return
    except ImportError:
        pass
    pkg = sys.modules.get('distutils') or types.ModuleType('distutils')
    pkg.__path__ = []
    version = types.ModuleType('distutils.version')
    version.LooseVersion = _LooseVersion
    pkg.version = version
    sys.modules['distutils'] = pkg
    sys.modules['distutils.version'] = version


def install():
    """Install the aliases (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _alias_functional_tensor()
    _provide_distutils_version()
    _INSTALLED = True
