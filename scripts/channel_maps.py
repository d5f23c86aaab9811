"""Plot the per-channel responses of trained models at one named site (channel maps).

Examples:
    # the models of a test-options file (the models[] list test.py benchmarks; datasets are not read)
    python scripts/channel_maps.py -opt options/test/benchmark_reflash_x4.yml --site blocks.1 \
        --input datasets/Set5/LR_bicubic/X4

    # without a YAML: one --ckpt per model; --network, --param_key and --name are given once
    # (shared by all models) or once per --ckpt, in the same order
    python scripts/channel_maps.py --site blocks.1 --input photo_lr.png \
        --network options/train/SRResNet/baseline_x4.yml \
        --ckpt experiments/SRResNet_x4_baseline/models/net_g_500000.pth --name Baseline \
        --ckpt experiments/SRResNet_x4_eats/models/net_g_500000.pth --name EATS

    # only HR photos at hand: bicubic (MATLAB imresize) ×1/scale first
    python scripts/channel_maps.py -opt options/test/demo_SRResNet_x4.yml --site last_conv_input \
        --input ../photos --downscale --max_images 10

    # the papers' analysis figures too: channel correlation (EATS Fig. 7-8) and channel ablation
    # (Adaptive Dropout: the PSNR drop when each channel is zeroed), here on Set5 HR made LR by bicubic
    python scripts/channel_maps.py -opt options/test/benchmark_reflash_x4.yml --site blocks.1 \
        --input datasets/Set5/HR --downscale --correlation --ablation

Writes, under <out>/<site>/:
    <model>_maps.png     |activation| maps of the first image, strongest channel first, one shared colour scale
    comparison.png       per-channel mean |activation| sorted descending, one line per model (each normalised to sum 1)
    channel_stats.csv    model, channel, mean_abs, rank, share
  with --correlation:
    correlation.png      cosine similarity of every pair of channel responses, one matrix per model
    correlation.csv      model, channel_a, channel_b, cosine
    correlation_summary.csv  model, arch, site, channels, images, mean_off_diagonal, mean_abs_off_diagonal
  with --ablation (needs ground truth: --downscale, or LR inputs and --gt):
    ablation.png         PSNR drop when each channel is zeroed, sorted, one line per model
    channel_ablation.csv model, channel, psnr, drop, rank
    ablation_summary.csv model, arch, site, channels, images, base_psnr, mean/max/min drop, spread_std, range
and prints model, channels and top-k share (the share of the total response held by the k strongest
channels; see docs/channel_maps.md), and the tables of the options asked for. Sites: head.<j>, blocks.<i>,
blocks.<i>.conv.<j>, tail.<j>, last_conv_input (python scripts/model_summary.py lists them per arch). Relative paths inside a -opt file are taken from the
project root, as test.py does; command-line paths from the current directory. In error messages
models[i] is the i-th model of the file, or of the --ckpt list.
"""
import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr_ext.config import PROJECT_ROOT  # noqa: E402

DEFAULT_OUT = os.path.join(str(PROJECT_ROOT), 'results', 'channel_maps')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 2)[2])
    source = parser.add_argument_group('models (either -opt or --ckpt)')
    source.add_argument('-opt', '--opt', default=None,
                        help='test-options YAML whose models[] are read (the file test.py takes)')
    source.add_argument('--ckpt', action='append', default=[], help='checkpoint (.pth) of one model; repeat per model')
    source.add_argument('--network', action='append', default=[],
                        help='options YAML with the network_g of the checkpoints (once, or once per --ckpt)')
    source.add_argument('--param_key', action='append', default=[], choices=('params', 'params_ema', 'auto'),
                        help="weights in the checkpoint (once, or once per --ckpt; default 'params', as test.py)")
    source.add_argument('--name', action='append', default=[],
                        help='model name in plots and tables (once per --ckpt; default: the experiment folder, '
                        'or the file name)')
    parser.add_argument('--site', required=True, help='site to read, e.g. blocks.1, blocks.1.conv.0, last_conv_input')
    parser.add_argument('-i', '--input', required=True,
                        help='an LR image or a folder of LR images (fed to the networks as they are), or HR '
                        'images with --downscale')
    parser.add_argument('--downscale', action='store_true',
                        help="bicubic-downscale each input by the model's scale first (basicsr's MATLAB imresize)")
    parser.add_argument('--out', default=DEFAULT_OUT, help='output folder; files go to <out>/<site>/ '
                        '(default: results/channel_maps in the project)')
    parser.add_argument('--max_images', type=int, default=None, help='use the first N images of a folder (by name)')
    parser.add_argument('--top_k', type=int, default=8, help='k of the top-k share (default 8)')
    parser.add_argument('--max_channels', type=int, default=64,
                        help='channels in a maps grid, the strongest first (default 64)')
    parser.add_argument('--correlation', action='store_true',
                        help='also write the channel correlation: cosine similarities of the channel responses '
                        '(EATS Fig. 7-8) and their mean off-diagonal value per model')
    parser.add_argument('--ablation', action='store_true',
                        help='also run channel ablation: the PSNR drop when each channel is zeroed in turn '
                        '(Adaptive Dropout), sorted, with the spread per model; needs --downscale or --gt')
    parser.add_argument('--gt', default=None,
                        help='with --ablation and LR inputs: the folder of HR images, paired by file name')
    parser.add_argument('--crop_border', type=int, default=None,
                        help='pixels cut from each border before the ablation PSNR (default: the scale)')
    parser.add_argument('--ablation_batch', type=int, default=8,
                        help='ablated copies of an image run per forward (default 8)')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:N')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads for torch (default: one per core)')
    parser.add_argument('--no_progress', action='store_true', help='hide the progress bar')
    return parser.parse_args(argv)


def _default_name(ckpt):
    # experiments/<name>/models/net_g_<iter>.pth -> <name>
    path = Path(ckpt)
    if path.parent.name == 'models' and re.fullmatch(r'net_g_\d+', path.stem):
        return path.parent.parent.name
    return path.stem


def _per_model(values, flag, count, default):
    if not values:
        return [default] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ValueError(f'{flag} is given {len(values)} times for {count} --ckpt; give it once (shared by all '
                         'models) or once per --ckpt')
    return values


def cli_models(args):
    """models[] entries from the --ckpt form, validated like a test-options file (paths from the CWD)."""
    from basicsr_ext.evaluation.options import validate_models
    if not args.ckpt:
        raise ValueError('give the models: -opt <test options YAML>, or --network <options YAML> --ckpt <.pth> '
                         '(repeat --ckpt per model)')
    if not args.network:
        raise ValueError('--ckpt needs --network: the options YAML with the network_g the checkpoints were '
                         'trained with')
    count = len(args.ckpt)
    if len(args.name) not in (0, count):
        raise ValueError(f'--name is given {len(args.name)} times for {count} --ckpt; give one name per --ckpt')
    networks = _per_model(args.network, '--network', count, None)
    keys = _per_model(args.param_key, '--param_key', count, 'params')
    names = args.name or [_default_name(c) for c in args.ckpt]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ValueError(f"two models would be named '{dup}'; name each with --name")
    models = [{'name': n, 'network_g': net, 'path': c, 'param_key': k}
              for n, net, c, k in zip(names, networks, args.ckpt, keys)]
    return validate_models(models, root=os.getcwd())


def run(args):
    import torch

    from basicsr_ext.evaluation import channel_maps as cm
    from basicsr_ext.utils.device import resolve_device

    if args.opt and (args.ckpt or args.network or args.param_key or args.name):
        raise ValueError('-opt reads the models from the file; leave out --ckpt, --network, --param_key and --name')
    if args.top_k < 1:
        raise ValueError(f'--top_k must be at least 1, got {args.top_k}')
    if args.gt and not args.ablation:
        raise ValueError('--gt is the ground truth of --ablation; add --ablation or leave out --gt')
    if args.ablation and bool(args.gt) == args.downscale:
        raise ValueError('--ablation needs ground truth: HR inputs with --downscale, or LR inputs with --gt '
                         '<folder of HR images of the same names> (not both)')
    if args.ablation_batch < 1:
        raise ValueError(f'--ablation_batch must be at least 1, got {args.ablation_batch}')
    if args.gt and not os.path.isdir(args.gt):
        raise FileNotFoundError(f"--gt folder '{args.gt}' does not exist")
    models = cm.read_models_file(args.opt) if args.opt else cli_models(args)
    files = cm.list_inputs(args.input, args.max_images)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded, skipped = cm.load_models(models, device)
    for name in skipped:
        print(f'{name}: skipped (a bicubic pseudo-model has no features)')
    correlation = None
    if args.correlation:
        from basicsr_ext.evaluation.channel_correlation import CorrelationAccumulator
        correlation = CorrelationAccumulator(args.site)
    stats, first = cm.collect_channel_stats(loaded, args.site, files, args.downscale, progress=not args.no_progress,
                                            on_feature=correlation.add if correlation else None)
    out_dir = os.path.join(args.out, args.site)
    cm.write_channel_maps(out_dir, stats, first, files[0].name, args.top_k, args.max_channels)
    extras = {}
    if correlation:
        from basicsr_ext.evaluation.channel_correlation import write_channel_correlation
        extras['correlation'] = correlation.results()
        write_channel_correlation(out_dir, extras['correlation'])
    if args.ablation:
        from basicsr_ext.evaluation.channel_ablation import ablation_pairs, channel_ablation, write_channel_ablation
        pairs = {}
        extras['ablation'] = []
        for m in loaded:
            if m.scale not in pairs:
                pairs[m.scale] = ablation_pairs(files, m.scale, args.gt, args.downscale)
            extras['ablation'].append(channel_ablation(m, args.site, pairs[m.scale], args.crop_border,
                                                       args.ablation_batch, progress=not args.no_progress))
        write_channel_ablation(out_dir, extras['ablation'])
    return stats, out_dir, extras


def main(argv=None):
    from basicsr_ext.data.image_io import ImageReadError, ImageTooSmallError
    from basicsr_ext.archs.weights import CheckpointMismatchError
    from basicsr_ext.evaluation.channel_ablation import format_ablation_table
    from basicsr_ext.evaluation.channel_correlation import format_correlation_table
    from basicsr_ext.evaluation.channel_maps import format_table
    from basicsr_ext.utils.schema import OptionError
    args = parse_args(argv)
    try:
        stats, out_dir, extras = run(args)
    except (OptionError, FileNotFoundError, ImageReadError, ImageTooSmallError, CheckpointMismatchError,
            ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    images = stats[0].images
    print(f'site {args.site}, {images} image(s)' + (' (downscaled)' if args.downscale else ''))
    print(format_table(stats, args.top_k))
    if 'correlation' in extras:
        print('channel correlation (cosine similarity of channel responses):')
        print(format_correlation_table(extras['correlation']))
    if 'ablation' in extras:
        print('channel ablation (PSNR drop in dB when one channel is zeroed):')
        print(format_ablation_table(extras['ablation']))
    print(f'written to {out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
