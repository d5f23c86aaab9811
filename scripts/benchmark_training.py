"""Training throughput of each architecture with each speed flag, as ratios against its default, in one run.

Example (the table the SR frameworks do not publish; run it on the GPU you train on):
    python scripts/benchmark_training.py --device cuda --batch 16 --gt_size 128 --iters 20
    python scripts/benchmark_training.py --archs SRResNet HAN_lite --batch 4 --iters 3   # CPU

Each architecture is the ``network_g`` of its shipped baseline options
(``options/train/<Arch>/baseline_x4.yml``). A step is ``feed_data`` + ``optimize_parameters`` on
one fixed batch (forward, L1 loss, backward, Adam step), as in training with ready LR/GT pairs.
The variants of one architecture take turns step by step, so a slow spell of the machine hits
all of them alike, and each is reported against that architecture's ``default`` variant:
median s/step, samples/s, the ratio, and on CUDA the peak memory of a step.

Variants: ``default``; ``channels_last`` (``train.channels_last``); ``amp_bf16`` / ``amp_fp16``
(``train.amp``); ``channels_last+amp_bf16``; ``compile`` and ``channels_last+amp_bf16+compile``
(``train.compile: default``, inductor; keep ``--warmup`` ≥ 1: the first step compiles). Mixed precision
and compile are left out on CPU by default: CPUs without bf16 units emulate it at a fraction of fp32's
speed, and inductor spends minutes compiling C++ kernels there (name ``--variants default compile`` to
measure it).
"""
import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
import torch  # noqa: E402

from basicsr_ext.models.timing_setup import build_training_model  # noqa: E402
from basicsr_ext.utils.device import resolve_device  # noqa: E402
from basicsr_ext.utils.timing import interleaved_steps, ratio_rows  # noqa: E402
from basicsr_ext.config import yaml_load  # noqa: E402

ARCH_OPTIONS = {name: ROOT / 'options' / 'train' / name / 'baseline_x4.yml'
                for name in ('SRResNet', 'RRDB', 'SwinIR', 'HAN_lite')}
VARIANTS = {
    'default': {},
    'channels_last': {'channels_last': True},
    'amp_bf16': {'amp': 'bf16'},
    'amp_fp16': {'amp': 'fp16'},
    'channels_last+amp_bf16': {'channels_last': True, 'amp': 'bf16'},
    'compile': {'compile': 'default'},  # train.compile; its first step (a warm-up one) compiles
    'channels_last+amp_bf16+compile': {'channels_last': True, 'amp': 'bf16', 'compile': 'default'},
}
CPU_VARIANTS = ('default', 'channels_last')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--archs', nargs='+', choices=sorted(ARCH_OPTIONS), default=sorted(ARCH_OPTIONS),
                        help='architectures (default all four)')
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=None,
                        help=f"speed flags to compare (default: all on CUDA, {' and '.join(CPU_VARIANTS)} on CPU)")
    parser.add_argument('--batch', type=int, default=16, help='batch size (default 16)')
    parser.add_argument('--gt_size', type=int, default=128, help='GT patch size; LR is gt_size/4 (default 128)')
    parser.add_argument('--iters', type=int, default=10, help='timed steps per variant (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per variant (default 2)')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda' or 'cuda:N' (default auto)")
    parser.add_argument('--threads', type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--csv', default=None, help='also write the rows to this CSV file')
    args = parser.parse_args(argv)
    if args.gt_size % 4:
        parser.error(f'--gt_size {args.gt_size} must be a multiple of the scale 4')
    return args


def network_of(arch):
    return yaml_load(str(ARCH_OPTIONS[arch]))['network_g']


def benchmark_arch(arch, variants, args, device, workdir):
    network = network_of(arch)
    lr = args.gt_size // 4
    gen = torch.Generator().manual_seed(0)
    batch = {'lq': torch.rand(args.batch, 3, lr, lr, generator=gen),
             'gt': torch.rand(args.batch, 3, args.gt_size, args.gt_size, generator=gen)}
    rounds = args.warmup + args.iters
    steps = {}
    for variant in variants:
        torch.manual_seed(0)
        model = build_training_model(network, workdir, rounds + 1, device=device, **VARIANTS[variant])

        def step(r, model=model):
            model.feed_data(batch, r + 1)
            model.optimize_parameters(r + 1)
        steps[variant] = step

    def progress(r, times):
        print(f'{arch} round {r + 1}/{rounds}: ' + ', '.join(f'{n} {t[-1]:.3f}s' for n, t in times.items() if t),
              file=sys.stderr, flush=True)

    times, peaks = interleaved_steps(steps, rounds, args.warmup, device, on_round=progress)
    params = sum(p.numel() for p in model.net_g.parameters())
    return [(arch, params, name, med, args.batch / med, ratio, peaks[name])
            for name, med, _, _, ratio, _ in ratio_rows(times, variants[0])]


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    variants = args.variants or (list(VARIANTS) if device.type == 'cuda' else list(CPU_VARIANTS))
    if 'default' in variants:  # the reference comes first
        variants = ['default'] + [v for v in variants if v != 'default']
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.archs:
            rows += benchmark_arch(arch, variants, args, device, workdir)

    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'x4 training steps, batch {args.batch}, GT {args.gt_size}, LR {args.gt_size // 4}, {args.iters} timed '
          f'steps (+{args.warmup} warm-up) per variant, {where}, torch {torch.__version__}')
    print(f'| arch | parameters | variant | median s/step | samples/s | × {variants[0]} | peak memory |')
    print('|---|---:|---|---:|---:|---:|---:|')
    for arch, params, variant, med, rate, ratio, peak in rows:
        memory = f'{peak / 2**30:.2f} GiB' if peak is not None else '–'
        print(f'| {arch} | {params:,d} | {variant} | {med:.4f} | {rate:.1f} | {ratio:.2f} | {memory} |')
    if args.csv:
        import csv
        with open(args.csv, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            writer.writerow(['arch', 'parameters', 'variant', 'median_s_per_step', 'samples_per_s',
                             f'ratio_to_{variants[0]}', 'peak_memory_bytes'])
            for arch, params, variant, med, rate, ratio, peak in rows:
                writer.writerow([arch, params, variant, f'{med:.6f}', f'{rate:.3f}', f'{ratio:.4f}',
                                 '' if peak is None else peak])
    return 0


if __name__ == '__main__':
    sys.exit(main())
