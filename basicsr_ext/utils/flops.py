"""FLOP counts of networks and the peak rates of known accelerators, for model FLOP utilisation (MFU).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products,
2 FLOPs per multiply-accumulate (elementwise ops, softmax and norms are not counted), forward only or
forward + backward as the autograd graph runs it (a layer whose input needs no gradient skips its
input-gradient product). MFU = training FLOPs per step ÷ seconds per step ÷ the device's peak rate.
"""
import re

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['PEAK_BF16_TFLOPS', 'count_flops', 'peak_bf16_flops', 'training_step_flops']

#: dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s; the first name that
#: matches the device name as whole words wins, so the specific variants come before the family
PEAK_BF16_TFLOPS = (
    ('H100 PCIe', 756),
    ('H100 NVL', 835),
    ('H200 NVL', 835),
    ('GH200', 989),
    ('H200', 989),  # SXM
    ('H100', 989),  # SXM
    ('A100', 312),
    ('L40S', 362),
    ('L4', 121),
    ('A10', 125),
)


def count_flops(net, x):
    """FLOPs of one no-grad forward of ``net`` on ``x``, and the output shape."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = net(x)
    return counter.get_total_flops(), tuple(out.shape)


def training_step_flops(net, x):
    """FLOPs of one training forward and backward of ``net`` on the batch ``x`` (gradients are cleared after)."""
    with FlopCounterMode(display=False) as counter:
        net(x).float().abs().mean().backward()
    for param in net.parameters():
        param.grad = None
    return counter.get_total_flops()


def peak_bf16_flops(device_name):
    """The dense bf16 peak of a device (FLOP/s) from its name, e.g. 'NVIDIA H100 80GB HBM3'; None if unknown."""
    for name, tflops in PEAK_BF16_TFLOPS:
        if re.search(r'(?<![\w])' + re.escape(name) + r'(?![\w])', device_name):
            return tflops * 1e12
    return None
