"""Time per training iteration of each regularizer relative to the baseline, in one run.

Example:
    python scripts/benchmark_regularizers.py --batch 16 --gt_size 128 --iters 10

Every configuration is a full BlindSRModel (SRResNet ×4 by default) built from an options
dict and trained on one fixed batch; an iteration is ``feed_data`` + ``optimize_parameters``
(regularizer hooks, forward, losses, backward, Adam step). With ``--degradation`` the batch is
GT canvases plus blur kernels, degraded in ``feed_data`` by the Real-ESRGAN pipeline as in
training (ECO then replays it); without, it is a ready LR/GT pair (ECO's D is bicubic). The configurations take turns iteration by
iteration, so a slow spell of a shared machine hits all of them alike; the first
``--warmup`` iterations of each are not timed. The ECO teacher is the student's own
initial weights (any frozen network of the same architecture costs the same), and ECO is
timed in its mixing phase (0 < a < 1), where the teacher runs and both pairs are mixed.
The teacher's no_grad forward is timed on its own, in the same rotation.
"""
import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
import torch  # noqa: E402

from basicsr_ext.models.timing_setup import build_training_model  # noqa: E402
from basicsr_ext.utils.device import resolve_device  # noqa: E402
from basicsr_ext.utils.timing import interleaved_steps, ratio_rows  # noqa: E402

NETWORKS = {
    'SRResNet': dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4),
    'RRDB': dict(type='RRDBNetAnyScale', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4),
}

REGULARIZERS = {
    'baseline': [],
    'Dropout': [dict(type='Dropout', p=0.7)],
    'AdaptiveDropout': [dict(type='AdaptiveDropout')],
    'EATS': [dict(type='EATS')],
    'EATS (full 2nd pass)': [dict(type='EATS', reuse_prefix=False)],
    'EATS (awaken 1/2 batch)': [dict(type='EATS', awaken_fraction=0.5)],
    'EATS (awaken 1/4 batch)': [dict(type='EATS', awaken_fraction=0.25)],
    'ECO': [dict(type='ECO', teacher_path='{teacher}')],
    'DropBlock': [dict(type='DropBlock')],
    'DropConnect': [dict(type='DropConnect')],
    'baseline, channels_last': [],
}
TEACHER_ROW = 'ECO teacher forward alone (no_grad)'
# train options of a configuration besides its regularizers
TRAIN_OPTIONS = {'baseline, channels_last': {'channels_last': True}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', choices=sorted(NETWORKS), default='SRResNet', help='network (default SRResNet ×4)')
    parser.add_argument('--batch', type=int, default=16, help='batch size (default 16)')
    parser.add_argument('--gt_size', type=int, default=128, help='GT patch size; LR is gt_size/4 (default 128)')
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per configuration (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations per configuration (default 2)')
    parser.add_argument('--only', nargs='+', choices=sorted(REGULARIZERS), default=None,
                        help='configurations to time besides the baseline (default all)')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (default: torch\'s choice)')
    parser.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda', 'cuda:N' or 'auto'")
    parser.add_argument('--degradation', action='store_true',
                        help='degrade GT canvases on the fly (HighOrderDegradation) inside the timed iteration')
    parser.add_argument('--canvas', type=int, default=400, help='GT canvas size with --degradation (default 400)')
    return parser.parse_args(argv)


def fixed_batch(args, scale):
    if not args.degradation:
        return {'lq': torch.rand(args.batch, 3, args.gt_size // scale, args.gt_size // scale),
                'gt': torch.rand(args.batch, 3, args.gt_size, args.gt_size)}
    # the pipeline's cost does not depend on the kernels' values, only on their size
    taps = torch.exp(-(torch.arange(21.) - 10)**2 / 8)
    kernel = (taps[:, None] * taps[None] / taps.sum()**2).expand(args.batch, 21, 21)
    return {'gt': torch.rand(args.batch, 3, args.canvas, args.canvas), 'kernel1': kernel, 'kernel2': kernel,
            'sinc_kernel': kernel}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    scale = 4
    batch = fixed_batch(args, scale)
    gt_size = args.gt_size if args.degradation else None
    rounds = args.warmup + args.iters
    # ECO's mixing phase: iteration total_iter/2 has a = 0.5
    total_iter = 2 * rounds + 2
    names = ['baseline'] + [n for n in REGULARIZERS if n != 'baseline' and (args.only is None or n in args.only)]

    with tempfile.TemporaryDirectory() as workdir:
        teacher_path = os.path.join(workdir, 'teacher.pth')
        models = {}
        for name in names:
            regs = [{k: (v.format(teacher=teacher_path) if isinstance(v, str) else v)
                     for k, v in r.items()} for r in REGULARIZERS[name]]
            if any(r['type'] == 'ECO' for r in regs) and not os.path.exists(teacher_path):
                torch.save(models['baseline'].network_state(), teacher_path)
            models[name] = build_training_model(NETWORKS[args.arch], workdir, total_iter, regs, gt_size, device=device,
                                                **TRAIN_OPTIONS.get(name, {}))

        def train_step(model):
            def step(r):
                it = total_iter // 2 - rounds // 2 + r
                model.feed_data(batch, it)
                model.optimize_parameters(it)
            return step

        steps = {name: train_step(model) for name, model in models.items()}
        if 'ECO' in models:
            teacher = models['ECO'].regularizers[0].build_teacher(models['ECO'].device)

            def teacher_forward(r):
                with torch.no_grad():
                    teacher(models['baseline'].lq)
            steps[TEACHER_ROW] = teacher_forward

        def progress(r, times):
            print(f'round {r + 1}/{rounds}: ' + ', '.join(f'{n} {t[-1]:.2f}s' for n, t in times.items() if t),
                  file=sys.stderr, flush=True)

        times, _ = interleaved_steps(steps, rounds, args.warmup, device, on_round=progress)

    data = (f'degraded on the fly from {args.canvas}-px canvases' if args.degradation else 'ready LR/GT pairs')
    print(f'{args.arch} x4, batch {args.batch}, GT {args.gt_size}, LR {args.gt_size // scale}, {data}, '
          f'{args.iters} timed iterations (+{args.warmup} warm-up), torch {torch.__version__}, '
          f'{device}, {torch.get_num_threads()} threads')
    print('| configuration | median s/iter | mean s/iter | min s/iter | × baseline (median) | × baseline (mean) |')
    print('|---|---:|---:|---:|---:|---:|')
    for name, med, mean, low, ratio_median, ratio_mean in ratio_rows(times, 'baseline'):
        print(f'| {name} | {med:.3f} | {mean:.3f} | {low:.3f} | {ratio_median:.2f} | {ratio_mean:.2f} |')
    if TEACHER_ROW in times:
        extra = statistics.median(times['ECO']) - statistics.median(times['baseline'])
        print(f'\nECO - baseline = {extra:.3f} s/iter (median); one teacher forward = '
              f'{statistics.median(times[TEACHER_ROW]):.3f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
