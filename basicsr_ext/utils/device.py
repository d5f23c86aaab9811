"""Choosing the torch device from an option or command-line value."""
import torch

__all__ = ['resolve_device']


def resolve_device(device='auto'):
    """``'auto'`` -> cuda if available, else mps, else cpu; an explicit device must exist."""
    if device in (None, 'auto'):
        if torch.cuda.is_available():
            return torch.device('cuda')
        if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
            return torch.device('mps')
        return torch.device('cpu')
    dev = torch.device(device)
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}': CUDA is not available on this machine; use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s) present")
    return dev
