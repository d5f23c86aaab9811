"""ONNX export of a loaded network, and the onnxruntime check of the exported file.

The graph takes ``input`` (N, C, H, W) with dynamic N, H and W and returns ``output``
(N, C, scale·H, scale·W). The padding an architecture needs (SwinIR: H and W multiples of its
window; RRDBNet ×1/×2: of its pixel-unshuffle) is part of the graph, as :class:`PadToMultiple`,
so any input of at least one multiple per side runs.

The export uses the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). With torch
2.14 the dynamo exporter fails on SwinIR's attention mask, which is computed for each input size,
while the tracer records that computation with the input's shape, so one graph serves every size.
The trace must not run at the size SwinIR's ``img_size`` precomputed masks for (the network
would take its stored mask instead and bake it in): :func:`trace_size` avoids it.

fp16 graphs are traced from an fp16 copy of the network, so the fp32 islands an architecture
keeps on purpose (HAN's layer attention) stay fp32 inside the graph.
"""
import contextlib
import copy
import json
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from basicsr.archs import swinir_arch as basicsr_swinir
from torch import nn

from ..archs.forward import check_input_size, forward_padded, input_multiple
from ..archs.spec import arch_spec
from ..utils.checkpoint import atomic_write
from ..utils.misc import unwrap

__all__ = ['PadToMultiple', 'trace_size', 'default_check_sizes', 'export_onnx', 'check_onnx', 'onnx_metadata']

DEFAULT_OPSET = 17


class PadToMultiple(nn.Module):
    """``net`` with its input reflect-padded at the bottom/right to a multiple, and its output cropped back.

    The padding of :func:`~basicsr_ext.archs.forward.forward_padded`, written with the input's
    shape only, so that a traced graph pads every input size (a pad of 0 is a no-op). Reflect
    padding needs the input to be larger than the pad, which holds for inputs of at least one
    multiple per side (smaller ones are refused by ``check_input_size`` anyway).
    """

    def __init__(self, net, scale, multiple=None):
        super().__init__()
        self.net = net
        self.scale = int(scale)
        self.multiple = int(multiple or input_multiple(net))

    def forward(self, x):
        h, w = x.shape[-2:]
        if self.multiple > 1:
            m = self.multiple
            x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m), mode='reflect')
        return self.net(x)[..., :h * self.scale, :w * self.scale]


def trace_size(net, multiple):
    """An (H, W) to trace at: not a multiple (so the padding is exercised), and padded to no
    ``input_resolution`` a block precomputed its attention mask for (SwinIR's ``img_size``)."""
    resolutions = (getattr(m, 'input_resolution', None) for m in unwrap(net).modules())
    stored = {tuple(r) for r in resolutions if isinstance(r, (tuple, list))}
    h, w = (2 * multiple + 1, 3 * multiple + 1) if multiple > 1 else (16, 20)
    while (-(-h // multiple) * multiple, -(-w // multiple) * multiple) in stored:
        h, w = h + multiple, w + multiple
    return h, w


def default_check_sizes(multiple):
    """Two input sizes for the check: a square multiple of ``multiple`` and a size that is not one."""
    a = -(-max(32, 2 * multiple) // multiple) * multiple
    return [(a, a), (a + multiple // 2 + 1, a + multiple + 3)]


def _cast_new_masks(net, dtype):
    """Make SwinIR blocks return the attention masks they compute for new sizes in ``dtype``.

    basicsr's ``SwinTransformerBlock.calculate_mask`` builds them in the default dtype (fp32),
    which an fp16 network cannot add to its fp16 attention. An instance attribute shadows the
    method on this (copied) network only.
    """
    for module in net.modules():
        method = getattr(module, 'calculate_mask', None)
        if callable(method):
            module.calculate_mask = lambda x_size, method=method: method(x_size).to(dtype)


def _window_reverse(windows, window_size, h, w):
    # basicsr's window_reverse with the batch left to the reshape instead of computed with int()
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, windows.shape[-1])


@contextlib.contextmanager
def _traceable_window_reverse():
    """Swap basicsr's SwinIR ``window_reverse`` for :func:`_window_reverse` while tracing.

    basicsr computes the batch size there with ``int()``, which the tracer records as a constant:
    the graph would then reshape a batch of another size into the traced one and mix its images.
    """
    original = basicsr_swinir.window_reverse
    basicsr_swinir.window_reverse = _window_reverse
    try:
        yield
    finally:
        basicsr_swinir.window_reverse = original


def onnx_metadata(net, scale, multiple, fp16, net_opt=None, source=None):
    """The metadata_props written into the file: what a loader needs to use it without this package."""
    meta = {'arch': str((net_opt or {}).get('type', type(net).__name__)), 'scale': str(int(scale)),
            'input_multiple': str(int(multiple)), 'dtype': 'float16' if fp16 else 'float32'}
    if net_opt:
        meta['network_g'] = json.dumps(net_opt, sort_keys=True)
    if source:
        meta['source'] = str(source)
    return meta


def export_onnx(net, scale, path, opset=DEFAULT_OPSET, fp16=False, net_opt=None, source=None):
    """Write ``net`` (its weights as they are, on the CPU) to ``path`` as ONNX; returns the traced module.

    Args:
        net: the network (DataParallel/DDP unwrapped here); it is copied, never modified.
        scale: its upsampling factor.
        opset: ONNX opset (the TorchScript exporter of torch 2.14 supports 11 to 20).
        fp16: trace an fp16 copy: fp16 input, weights and output.
        net_opt, source: the network options and the checkpoint's name, for the file's metadata
            (:func:`onnx_metadata`).
    """
    import onnx  # optional dependency (the onnx extra): only export needs it
    bare = copy.deepcopy(unwrap(net)).cpu().eval().float()
    dtype = torch.float16 if fp16 else torch.float32
    if fp16:
        bare.half()
        _cast_new_masks(bare, dtype)
    module = PadToMultiple(bare, scale).eval()
    metadata = onnx_metadata(bare, scale, module.multiple, fp16, net_opt, source)
    h, w = trace_size(bare, module.multiple)
    sample = torch.rand(1, arch_spec(bare).in_channels(bare), h, w, dtype=dtype)

    def write(tmp):
        with warnings.catch_warnings(), torch.no_grad(), _traceable_window_reverse():
            # the tracer warns about every shape it turns into a graph input (as intended here), and
            # torch announces the TorchScript exporter's deprecation on every call
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
            warnings.filterwarnings('ignore', category=DeprecationWarning)
            torch.onnx.export(module, (sample, ), tmp, input_names=['input'], output_names=['output'],
                              dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'},
                                            'output': {0: 'batch', 2: 'out_height', 3: 'out_width'}},
                              opset_version=int(opset), do_constant_folding=True, dynamo=False)
        model = onnx.load(tmp)
        onnx.checker.check_model(model)
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        onnx.save(model, tmp)

    atomic_write(str(path), write)
    return module


def check_onnx(path, net, scale, sizes, batch=2, seed=0):
    """Run ``path`` with onnxruntime (CPU) and PyTorch fp32 on the same random inputs.

    The PyTorch side is the project's own padded inference
    (:func:`~basicsr_ext.archs.forward.forward_padded`) of ``net`` in fp32, whatever the file's
    precision, so an fp16 file is measured against what it approximates.

    Returns:
        ``[(h, w, max_abs_diff), ...]`` for each ``(h, w)`` in ``sizes``, on inputs of ``batch`` images.
    """
    import onnxruntime as ort  # optional dependency (the onnx extra): only the export check needs it
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    feed = session.get_inputs()[0]
    np_dtype = np.float16 if feed.type == 'tensor(float16)' else np.float32
    ref_net = copy.deepcopy(unwrap(net)).cpu().eval().float()
    channels = arch_spec(ref_net).in_channels(ref_net)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for h, w in sizes:
        check_input_size(ref_net, h, w, name=f'check size {h}x{w}')
        x = torch.rand(batch, channels, h, w, generator=generator)
        with torch.no_grad():
            ref = forward_padded(ref_net, x, scale).numpy()
        out = session.run(None, {feed.name: x.numpy().astype(np_dtype)})[0]
        if out.shape != ref.shape:
            raise ValueError(f'{path}: onnxruntime output {out.shape} for input {tuple(x.shape)}; PyTorch gives '
                             f'{ref.shape}')
        rows.append((h, w, float(np.abs(out.astype(np.float32) - ref).max())))
    return rows
