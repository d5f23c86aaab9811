"""Super-resolve an image or a folder of images with a trained checkpoint.

Examples:
    python scripts/inference.py -i photo.png -o out/ --model experiments/SRResNet_x4_demo/models/net_g_600.pth \
        --arch options/demo/SRResNet_x4_demo.yml
    python scripts/inference.py -i LR/ -o SR/ --model net_g.pth --arch MSRResNet --arch_opt num_feat=32 num_block=8 \
        --scale 4 --tile 256 --tile_pad 16

Writes ``<out>/<name>_out.png`` per image. Gray in -> gray out; an alpha channel is upscaled
with bicubic interpolation and re-attached; 16-bit PNGs give 16-bit PNGs.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr_ext.models.loading import add_network_arguments, network_options  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 2)[2])
    parser.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder (created if missing)')
    add_network_arguments(parser)
    parser.add_argument('--tile', type=int, default=0, help='tile size in LR pixels (0: whole image)')
    parser.add_argument('--tile_pad', type=int, default=16, help='context around each tile, in LR pixels')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:N')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads for torch (default: one per core)')
    parser.add_argument('--amp', default=None, choices=('fp16', 'bf16'), help='mixed precision (CUDA only)')
    parser.add_argument('--suffix', default='out', help="output name suffix (default 'out': <name>_out.png)")
    parser.add_argument('--no_progress', action='store_true', help='hide the progress bar')
    parser.add_argument('--on_bad_image', default='error', choices=('error', 'skip'),
                        help='an unreadable input: stop naming it (default), or skip it and count it')
    return parser.parse_args(argv)


def _inputs(path, suffix):
    from basicsr_ext.data.image_io import list_images
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"input '{path}' does not exist")
    files = [path / p for p in list_images(path) if not Path(p).stem.endswith(f'_{suffix}')]
    if not files:
        raise FileNotFoundError(f"no images in input folder '{path}'")
    return files


def run(args):
    import cv2
    from tqdm import tqdm

    from basicsr_ext.data.image_io import ImageReadError, imread_unchanged
    from basicsr_ext.models.loading import load_network, upscale_array
    from basicsr_ext.utils.device import resolve_device

    files = _inputs(args.input, args.suffix)
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"checkpoint '{args.model}' does not exist")
    net_opt = network_options(args)
    device = resolve_device(args.device)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    net, scale = load_network(net_opt, args.model, args.param_key, args.scale, device)
    os.makedirs(args.output, exist_ok=True)
    written, skipped = [], []
    for path in tqdm(files, unit='img', desc=f'×{scale}', disable=args.no_progress):
        try:
            img = imread_unchanged(path)
        except ImageReadError as err:
            if args.on_bad_image == 'error':
                raise
            print(f'skipped: {err}', file=sys.stderr)
            skipped.append(str(path))
            continue
        out = upscale_array(net, img, scale, args.tile, args.tile_pad, device, args.amp or False, name=str(path))
        dst = os.path.join(args.output, f'{path.stem}_{args.suffix}.png')
        if not cv2.imwrite(dst, out):
            raise OSError(f"could not write '{dst}'")
        written.append(dst)
    return written, skipped


def main(argv=None):
    from basicsr_ext.data.image_io import ImageReadError, ImageTooSmallError
    from basicsr_ext.archs.weights import CheckpointMismatchError
    args = parse_args(argv)
    try:
        written, skipped = run(args)
    except (FileNotFoundError, ImageReadError, ImageTooSmallError, CheckpointMismatchError, ValueError) as err:
        hint = ' (--on_bad_image skip skips unreadable inputs)' if isinstance(err, ImageReadError) else ''
        print(f'error: {err}{hint}', file=sys.stderr)
        return 2
    print(f'{len(written)} image(s) written to {args.output}'
          + (f'; {len(skipped)} unreadable image(s) skipped' if skipped else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
