"""Export a trained checkpoint to ONNX (dynamic batch, height and width), then check it with onnxruntime.

Examples:
    python scripts/export_onnx.py --model experiments/SRResNet_x4_demo/models/net_g_600.pth \
        --arch options/demo/SRResNet_x4_demo.yml
    python scripts/export_onnx.py --model net_g.pth --arch SwinIR --arch_opt embed_dim=60 depths=[6,6,6,6] \
        num_heads=[6,6,6,6] window_size=8 mlp_ratio=2 upsampler=pixelshuffledirect --scale 4 --fp16 -o swinir_x4.onnx

The graph's input is ``input`` (N, C, H, W) float in [0, 1], its output ``output`` (N, C, sH, sW).
Padding to the architecture's input multiple (SwinIR's window, RRDBNet ×1/×2's unshuffle) is part of
the graph, so any H, W of at least one multiple runs. The file's metadata_props hold the arch, scale,
input multiple, dtype and network options. After writing, onnxruntime runs the file on random inputs
of two sizes (one not a multiple) and the script prints the largest difference from PyTorch fp32; it
exits with 1 when a difference is over --atol.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr_ext.archs import arch_spec  # noqa: E402
from basicsr_ext.archs.weights import CheckpointMismatchError, pick_param_key  # noqa: E402
from basicsr_ext.models.export import DEFAULT_OPSET, check_onnx, default_check_sizes, export_onnx  # noqa: E402
from basicsr_ext.models.loading import add_network_arguments, load_network, network_options, read_checkpoint  # noqa


def _size(item):
    try:
        h, w = (int(v) for v in item.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 32x48), got '{item}'") from None
    return h, w


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 2)[2])
    add_network_arguments(parser, 'weights to export')
    parser.add_argument('-o', '--output', default=None,
                        help='the .onnx file (default: beside the checkpoint, <name>.onnx or <name>_fp16.onnx)')
    parser.add_argument('--fp16', action='store_true', help='fp16 graph: fp16 input, weights and output')
    parser.add_argument('--opset', type=int, default=None, help='ONNX opset, 11 to 20 (default 17)')
    parser.add_argument('--check_sizes', type=_size, nargs='+', default=None, metavar='HxW',
                        help='input sizes of the onnxruntime check (default: two sizes from the input multiple)')
    parser.add_argument('--atol', type=float, default=None,
                        help='largest accepted difference from PyTorch fp32 (default 1e-3, 2e-2 with --fp16)')
    return parser.parse_args(argv)


def run(args):
    """Export and check; returns ``(output path, [(h, w, max_abs_diff)], atol)``."""
    import onnxruntime  # the onnx extra; main() turns its absence into an install hint

    opset = args.opset or DEFAULT_OPSET
    if not 11 <= opset <= 20:
        raise ValueError(f'--opset {opset}: the TorchScript ONNX exporter supports opsets 11 to 20')
    net_opt = network_options(args)
    net, scale = load_network(net_opt, args.model, args.param_key, args.scale, 'cpu')
    key = pick_param_key(read_checkpoint(args.model), args.param_key)
    out = args.output or f"{os.path.splitext(args.model)[0]}{'_fp16' if args.fp16 else ''}.onnx"
    multiple = export_onnx(net, scale, out, opset, args.fp16, net_opt, os.path.basename(args.model)).multiple
    dtype = 'float16' if args.fp16 else 'float32'
    channels = arch_spec(net).in_channels(net)
    padding = f'padding to multiples of {multiple} inside the graph' if multiple > 1 else 'no padding needed'
    print(f"Exported {net_opt['type']} ×{scale} ({key or 'the weights'} of {args.model}) to {out} "
          f'({os.path.getsize(out) / 2**20:.2f} MiB): opset {opset}, {dtype}, input [batch, {channels}, height, width] '
          f'-> output [batch, {channels}, {scale}·height, {scale}·width], {padding}')
    sizes = args.check_sizes or default_check_sizes(multiple)
    atol = args.atol if args.atol is not None else (2e-2 if args.fp16 else 1e-3)
    rows = check_onnx(out, net, scale, sizes)
    print(f'Check: onnxruntime {onnxruntime.__version__} (CPUExecutionProvider) on {out} vs PyTorch fp32 '
          f'(padded forward) on the same random inputs, batch 2:')
    for h, w, diff in rows:
        print(f'  input {h}x{w} -> {h * scale}x{w * scale}: max abs diff {diff:.3g}')
    return out, rows, atol


def main(argv=None):
    args = parse_args(argv)
    try:
        out, rows, atol = run(args)
    except ImportError as err:
        print(f'error: {err}. ONNX export needs onnx and onnxruntime: pip install -e ".[onnx]"', file=sys.stderr)
        return 2
    except (FileNotFoundError, CheckpointMismatchError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    worst = max(diff for _, _, diff in rows)
    if worst > atol:
        print(f'Check FAILED: max abs diff {worst:.3g} > {atol:g}', file=sys.stderr)
        return 1
    print(f'Check passed: max abs diff {worst:.3g} <= {atol:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
