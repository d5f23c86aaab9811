"""Mixed precision: the ``amp`` option value (false, true = fp16, 'fp16', 'bf16') and its autocast context."""
import contextlib

import torch

from .schema import OptionError

__all__ = ['amp_dtype', 'autocast', 'check_amp']

_AMP_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}


def check_amp(value, where):
    """Option check for an ``amp`` key: false, true (= fp16), 'fp16' or 'bf16'."""
    if value not in (False, True, 'fp16', 'bf16'):
        raise OptionError(f"{where}: expected false, true, 'fp16' or 'bf16', got {value!r}")


def amp_dtype(amp):
    """The autocast dtype of an ``amp`` option value, or None when it is off."""
    return _AMP_DTYPES['fp16' if amp is True else amp] if amp else None


def autocast(device, amp, allow_cpu=False):
    """Autocast context for ``amp`` in (False, True, 'fp16', 'bf16'); a no-op when off.

    Raises:
        ValueError: ``amp`` is set but ``device`` is not CUDA and ``allow_cpu`` is false (CPU
            autocast is far slower than fp32 on CPUs without bf16 units, such as the project's).
    """
    if not amp:
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type != 'cuda' and not allow_cpu:
        raise ValueError(f'amp: mixed precision needs a CUDA device, but the device is {device}; set amp: false')
    return torch.autocast(device_type=device.type, dtype=amp_dtype(amp))
