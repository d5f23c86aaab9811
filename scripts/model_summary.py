"""Parameters, FLOPs and (optionally) CPU forward time of a network.

The network comes from one of:

* ``-opt options.yml``             the YAML's ``network_g`` section;
* ``--arch NAME --arch_opt k=v``   a registered architecture and its constructor arguments
                                   (values are parsed as YAML: ``depths=[6,6]``, ``img_range=1.``);
* ``--preset NAME [NAME ...]``     reference configurations (``all`` for every one), at ``--scale``.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (``basicsr_ext.utils.flops``) for one forward of a
``1×C×lr_size×lr_size`` input: convolutions and matrix products only, 2 FLOPs per
multiply-accumulate (elementwise ops, softmax and norms are not counted).

Examples::

    python scripts/model_summary.py -opt options/train/x.yml --lr_size 64
    python scripts/model_summary.py --arch HAN --arch_opt num_group=6 num_block=5 num_feat=32
    python scripts/model_summary.py --preset all --time --markdown
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

import yaml

try:
    import basicsr_ext  # noqa: F401  (installs the basicsr compat shim, registers the archs)
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import basicsr_ext  # noqa: F401

import torch

from basicsr_ext.archs import build_network, get_sites, has_sites
from basicsr_ext.archs.han_arch import HAN_PRESETS
from basicsr_ext.archs.swinir_arch import SWINIR_PRESETS
from basicsr_ext.utils.flops import count_flops

# name -> (registered type, constructor arguments, name of the scale argument)
PRESETS = {
    'srresnet': ('MSRResNet', dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16), 'upscale'),
    'rrdb': ('RRDBNetAnyScale', dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32), 'scale'),
    'swinir_classical': ('SwinIR', SWINIR_PRESETS['swinir_classical'], 'upscale'),
    'swinir_light': ('SwinIR', SWINIR_PRESETS['swinir_light'], 'upscale'),
    'han': ('HAN', HAN_PRESETS['han'], 'upscale'),
    'han_lite': ('HAN', HAN_PRESETS['han_lite'], 'upscale'),
}


def preset_options(name, scale=4):
    """The ``network_g`` dict of a preset at the given scale."""
    arch, kwargs, scale_key = PRESETS[name]
    return {'type': arch, **copy.deepcopy(kwargs), scale_key: scale}


def parse_arch_opts(pairs):
    opts = {}
    for pair in pairs or []:
        key, sep, value = pair.partition('=')
        if not sep:
            raise SystemExit(f'--arch_opt expects key=value, got {pair!r}')
        opts[key] = yaml.safe_load(value)
    return opts


def count_params(net):
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for b in net.buffers())
    return trainable, frozen, buffers


def time_forward(net, x, runs, warmup):
    """Median wall and process-CPU seconds of a no-grad forward.

    Warm-up runs are needed because the first calls on a new shape build oneDNN primitives.
    The CPU time is reported too because on a shared machine it is far less sensitive to
    other processes than the wall time (with one thread it is close to the quiet wall time).
    """
    wall, cpu = [], []
    with torch.no_grad():
        for i in range(warmup + runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            net(x)
            if i >= warmup:
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def summarize(name, opt, lr_size, timing=None):
    net = build_network(opt).eval()
    in_ch = opt.get('num_in_ch', opt.get('in_chans', 3))
    x = torch.rand(1, in_ch, *lr_size)
    trainable, frozen, buffers = count_params(net)
    flops, out_shape = count_flops(net, x)
    row = dict(name=name, network_g=opt, params=trainable, frozen_params=frozen, buffer_elements=buffers,
               lr_size=list(lr_size), output_shape=list(out_shape), gflops=flops / 1e9)
    if has_sites(net):
        sites = get_sites(net)
        row['site_summary'] = dict(blocks=len(sites.blocks), convs=len(sites.convs), names=sites.names())
    if timing:
        runs, warmup = timing
        row['cpu_forward_s'], row['cpu_forward_process_s'] = time_forward(net, x, runs, warmup)
        row['threads'] = torch.get_num_threads()
    return row


def print_row(row):
    from basicsr_ext.archs.sites import describe_names
    h, w = row['lr_size']
    print(f"== {row['name']}")
    print(f"network_g: {json.dumps(row['network_g'])}")
    print(f"params (trainable): {row['params']:,}")
    if row['frozen_params']:
        print(f"params (frozen): {row['frozen_params']:,}")
    print(f"buffer elements: {row['buffer_elements']:,}")
    print(f"FLOPs @ LR {h}x{w}: {row['gflops']:.2f} G ({row['gflops'] / 2:.2f} GMAC), "
          f"output {'x'.join(map(str, row['output_shape']))}")
    if 'site_summary' in row:
        s = row['site_summary']
        print(f"sites: {describe_names(s['names'])} ({s['blocks']} blocks, {s['convs']} block convs)")
    if 'cpu_forward_s' in row:
        print(f"CPU forward @ LR {h}x{w}, batch 1: {row['cpu_forward_s']:.3f} s wall, "
              f"{row['cpu_forward_process_s']:.3f} s process CPU (medians, {row['threads']} threads)")


def print_markdown(rows, timed):
    h, w = rows[0]['lr_size']
    head = f'| arch | params | GFLOPs @ {h}×{w} |' + (f' CPU fwd @ {h}×{w} (wall) | process CPU |' if timed else '')
    print(head)
    print('|---|---:|---:|' + ('---:|---:|' if timed else ''))
    for r in rows:
        line = f"| {r['name']} | {r['params']:,} | {r['gflops']:.2f} |"
        if timed:
            line += f" {r['cpu_forward_s']:.3f} s | {r['cpu_forward_process_s']:.3f} s |"
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('-opt', help='options YAML; its network_g section is used')
    src.add_argument('--arch', help='registered architecture name, e.g. HAN, SwinIR, MSRResNet')
    src.add_argument('--preset', nargs='+', choices=[*PRESETS, 'all'], help='reference configuration(s)')
    parser.add_argument('--arch_opt', nargs='*', metavar='KEY=VALUE', help='constructor arguments for --arch '
                        '(or overrides for -opt / --preset)')
    parser.add_argument('--scale', type=int, default=4, help='scale for --preset (default 4)')
    parser.add_argument('--lr_size', default='64', help='LR input size: N or HxW (default 64)')
    parser.add_argument('--time', action='store_true', help='also time a CPU forward')
    parser.add_argument('--runs', type=int, default=5, help='timed runs (default 5)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed warm-up runs (default 2)')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch default)')
    parser.add_argument('--markdown', action='store_true', help='print one markdown table')
    parser.add_argument('--json', action='store_true', help='print the results as JSON')
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    size = [int(v) for v in args.lr_size.lower().split('x')]
    lr_size = (size[0], size[-1])
    overrides = parse_arch_opts(args.arch_opt)

    if args.opt:
        with open(args.opt) as f:
            network_g = (yaml.safe_load(f) or {}).get('network_g')
        if not network_g:
            raise SystemExit(f'{args.opt}: no network_g section')
        configs = [(network_g['type'], {**network_g, **overrides})]
    elif args.arch:
        configs = [(args.arch, {'type': args.arch, **overrides})]
    else:
        names = list(PRESETS) if 'all' in args.preset else args.preset
        configs = [(n, {**preset_options(n, args.scale), **overrides}) for n in names]

    timing = (args.runs, args.warmup) if args.time else None
    rows = [summarize(name, opt, lr_size, timing) for name, opt in configs]
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.markdown:
        print_markdown(rows, args.time)
    else:
        for row in rows:
            print_row(row)


if __name__ == '__main__':
    main()
