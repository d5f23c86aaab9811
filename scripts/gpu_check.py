"""One GPU check: every CUDA path of the framework against stock BasicSR, in one table, within 5 minutes on one GPU.

Examples::

    python scripts/gpu_check.py                         # the GPU check (CUDA), prints the table, exit 1 on a failure
    python scripts/gpu_check.py --json gpu_check.json   # also write the rows as JSON
    python scripts/gpu_check.py --device cpu --smoke --threads 1   # tiny sizes on the CPU, a few steps (in the tests)

Rows (docs/benchmarks.md, "GPU check"), in the order they run (correctness first, compile last):

* ``degradation``: the training degradation on the GPU against the CPU path, as distributions (not bytes):
  per-sample mean and std of the LR and of the residual LR − area-downsampled GT over many draws from the
  same canvases and kernels, compared by two-sample Kolmogorov-Smirnov tests (pass: every p > 0.001).
* ``test.py``: ``amp: bf16`` with 32-pixel tiles against fp32 whole images (random weights, the SRResNet
  recipe network, a scikit-image photo × 2 test degradations); passes when PSNRs agree within 0.1 dB.
* ``nccl``: ``torchrun --standalone --nproc_per_node=1 train.py ... --launcher pytorch`` on a tiny config
  with the NCCL backend; passes when it exits 0 with its last checkpoint written.
* ``speed``: training it/s of SRResNet, RRDB, SwinIR and HAN-lite ×4 in the paper recipe (the ``network_g``,
  optimizer, scheduler, L1 loss and EMA 0.999 of ``options/train/<Arch>/baseline_x4.yml``; batch 16, GT 128,
  ready LR/GT pairs on the GPU) in fp32, bf16 and bf16 + channels_last, with the MFU of the bf16 rows; and
  stock basicsr 1.4.2's ``SRModel`` (its ``feed_data`` + ``optimize_parameters``) on the same network,
  optimizer, scheduler, loss and EMA. The variants of one arch take turns block by block (5 steps each,
  synchronised at block ends), so a slow spell hits all alike.
* ``data``: the share of the step that data costs with the high-order degradation on the GPU: the loop's
  steps (GTOnlyDataset reading 480² PNG sub-images, as ``extract_subimages.py`` makes of DIV2K, cut here from
  the photos scikit-image ships; the recipe's 4 workers; prefetcher; degradation; step) against the same
  steps on a ready batch, share = 1 − t_ready / t_loop; with ``prefetch_mode: cuda`` and, for comparison,
  without.
* ``eats``: exact EATS (``reuse_prefix: true``, the whole batch) against the baseline, SRResNet recipe.
* ``speed`` (compile): bf16 + channels_last + ``train.compile: default`` of each arch, interleaved with
  bf16 + channels_last, after its compilation (timed and reported on its own).
* ``goal``: the goals below, from the rates measured above.

Goals (PASS/FAIL rows): training it/s ≥ 2× stock basicsr for SRResNet and RRDB (our fastest variant); RRDB ≥
35 % MFU in bf16; data < 5 % of the step (prefetcher rows); exact EATS ≤ 1.5× the baseline. MFU = training
FLOPs per step (``basicsr_ext.utils.flops``, the model summary's counter, forward + backward) ÷ seconds per
step ÷ the device's dense bf16 peak (a table of known GPUs; an unknown GPU is reported as such, not failed).

The process exits 1 when any row fails (a goal missed, a check failed or raised, the ``--budget`` spent
before a section started), else 0. ``--smoke`` runs everything at tiny sizes for a few steps: rows that need
CUDA (bf16, NCCL) are skipped with the reason, compile is timed on SRResNet only (backend ``aot_eager`` on
the CPU, where inductor compiles C++ for minutes), and goals are not judged.
"""
import argparse
import contextlib
import copy
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

from basicsr_ext.archs import build_network  # noqa: E402
from basicsr_ext.config import validate_options, yaml_load  # noqa: E402
from basicsr_ext.data import build_dataset, build_degradation, build_train_loader  # noqa: E402
from basicsr_ext.data.prefetch import Prefetcher  # noqa: E402
from basicsr_ext.models import build_model  # noqa: E402
from basicsr_ext.models.timing_setup import training_options  # noqa: E402
from basicsr_ext.utils.device import resolve_device  # noqa: E402
from basicsr_ext.utils.flops import peak_bf16_flops, training_step_flops  # noqa: E402
from basicsr_ext.utils.timing import interleaved_steps  # noqa: E402

ARCHS = ('SRResNet', 'RRDB', 'SwinIR', 'HAN_lite')
SMOKE_NETS = {
    'SRResNet': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
    'RRDB': {'type': 'RRDBNetAnyScale', 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4, 'scale': 4},
    'SwinIR': {'type': 'SwinIR', 'upscale': 4, 'img_size': 8, 'window_size': 4, 'embed_dim': 12, 'depths': [1],
               'num_heads': [2], 'mlp_ratio': 1, 'upsampler': 'pixelshuffle'},
    'HAN_lite': {'type': 'HAN', 'upscale': 4, 'num_feat': 8, 'num_group': 1, 'num_block': 1, 'squeeze_factor': 4},
}
VARIANTS = {
    'fp32': {},
    'bf16': {'amp': 'bf16'},
    'bf16+channels_last': {'amp': 'bf16', 'channels_last': True},
    'bf16+channels_last+compile': {'amp': 'bf16', 'channels_last': True, 'compile': 'default'},
}
# on the CPU: no bf16 (emulated, far slower than fp32), compile traced by aot_eager (inductor builds C++ for minutes)
CPU_VARIANTS = {
    'fp32': {},
    'channels_last': {'channels_last': True},
    'channels_last+compile': {'channels_last': True, 'compile': 'default', 'compile_backend': 'aot_eager'},
}
GOAL_SPEEDUP, GOAL_MFU, GOAL_DATA, GOAL_EATS, GOAL_PSNR_DB, GOAL_KS_P = 2.0, 0.35, 0.05, 1.5, 0.1, 1e-3
# the photos cut into the sub-images of the data sections (each has at least one 480² tile)
CANVAS_PHOTOS = ['astronaut', 'hubble_deep_field', 'ihc', 'motorcycle_left', 'retina']


class Sizes:

    def __init__(self, smoke):
        self.batch = 2 if smoke else 16
        self.gt = 32 if smoke else 128  # GT patch; LR = gt / 4
        self.block = 1 if smoke else 5  # consecutive steps per timed block
        self.rounds = 2 if smoke else 6
        self.warmup = 1 if smoke else 2  # untimed blocks (compilation happens in the first)
        self.canvas = 64 if smoke else 400
        self.workers = 0 if smoke else 4  # the recipes' num_worker_per_gpu
        self.data_steps = 3 if smoke else 40
        self.data_warmup = 1 if smoke else 10
        self.dist_batches = 2 if smoke else 32  # degradation draws: batches × batch samples per device
        self.dist_canvas = 64 if smoke else 256


class Report:
    """The one table: rows of (check, configuration, result, goal, status)."""

    def __init__(self):
        self.rows = []

    def add(self, check, config, result, goal='', status='ok'):
        row = {'check': check, 'configuration': config, 'result': result, 'goal': goal, 'status': status}
        self.rows.append(row)
        print(f'[{status}] {check} | {config} | {result}' + (f' | goal {goal}' if goal else ''), file=sys.stderr,
              flush=True)
        return row

    def goal(self, check, config, value, text, goal, passed, judge):
        """A goal's row; ``value`` (the measured number) is kept in the JSON rows."""
        status = ('PASS' if passed else 'FAIL') if judge else 'n/a (smoke)'
        row = self.add(check, config, text, goal, status)
        row['value'] = value
        return row

    @property
    def failed(self):
        return [r for r in self.rows if r['status'] == 'FAIL']

    def table(self, header):
        lines = [header, '', '| check | configuration | result | goal | status |', '|---|---|---|---|---|']
        for r in self.rows:
            lines.append(f"| {r['check']} | {r['configuration']} | {r['result']} | {r['goal']} | {r['status']} |")
        return '\n'.join(lines)


class Check:
    """What every section needs: device, sizes, the report, a work folder and the time budget."""

    def __init__(self, args, workdir):
        self.device = resolve_device(args.device)
        self.cuda = self.device.type == 'cuda'
        self.smoke = args.smoke
        self.sizes = Sizes(args.smoke)
        self.report = Report()
        self.workdir = workdir
        self.deadline = time.monotonic() + args.budget
        self.budget = args.budget
        self.archs = args.archs
        self.rates = {}  # arch -> {variant or 'basicsr': it/s}
        self.flops = {}  # arch -> training FLOPs per step
        self.peak = peak_bf16_flops(torch.cuda.get_device_name(self.device)) if self.cuda else None

    def network(self, arch):
        return copy.deepcopy(SMOKE_NETS[arch]) if self.smoke else recipe(arch)['network_g']

    def variants(self):
        return VARIANTS if self.cuda else CPU_VARIANTS

    def model(self, arch, regularizers=(), gt_size=None, dataset=None, **train):
        """A BlindSRModel of ``arch`` in the paper recipe (plus ``train`` options), validated like a file."""
        opt = training_options(self.network(arch), self.workdir, 10**6, regularizers, gt_size,
                               **recipe_training(arch), **train)
        opt['num_gpu'] = 1 if self.cuda else 0
        if dataset is not None:
            opt['datasets']['train'] = dataset
        opt = validate_options(opt)
        opt.update(dist=False, rank=0, world_size=1)
        return build_model(opt), opt

    def ready_batch(self, seed=0):
        gen = torch.Generator().manual_seed(seed)
        s = self.sizes
        batch = {'lq': torch.rand(s.batch, 3, s.gt // 4, s.gt // 4, generator=gen),
                 'gt': torch.rand(s.batch, 3, s.gt, s.gt, generator=gen)}
        return {k: v.to(self.device) for k, v in batch.items()}

    def left(self):
        return self.deadline - time.monotonic()

    def over_budget(self, what):
        """True (and a failed row) when the budget is spent before ``what`` starts."""
        if self.left() > 0:
            return False
        self.report.add(what, 'not run', f'the --budget of {self.budget:g} s was spent before it started',
                        status='FAIL')
        return True

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def free(self):
        if self.cuda:
            torch.cuda.empty_cache()


def recipe(arch):
    return yaml_load(str(ROOT / 'options' / 'train' / arch / 'baseline_x4.yml'))


def recipe_training(arch):
    """The recipe's optimizer, scheduler, pixel loss and EMA."""
    train = recipe(arch)['train']
    return {k: copy.deepcopy(train[k]) for k in ('optim_g', 'scheduler', 'pixel_opt', 'ema_decay')}


def training_steps(model, batch, block, stock=False):
    """A callable running ``block`` consecutive training steps of ``model`` on ``batch`` (round r)."""

    def steps(r):
        for i in range(block):
            it = r * block + i + 1
            model.update_learning_rate(it)
            if stock:
                model.feed_data(batch)
            else:
                model.feed_data(batch, it)
            model.optimize_parameters(it)

    return steps


def stock_basicsr_model(check, arch):
    """basicsr 1.4.2's own SRModel (not ours) with the recipe's network, optimizer, scheduler, loss and EMA."""
    from basicsr.models.sr_model import SRModel  # the stock class, not the registry's name lookup
    opt = {'num_gpu': 1 if check.cuda else 0, 'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1,
           'network_g': check.network(arch), 'path': {}, 'train': recipe_training(arch)}
    return SRModel(opt)


def per_step(times, block):
    return statistics.median(times) / block


# ------------------------------------------------------------------------------------------ sections
def compiled_variant(name):
    return 'compile' in name


def time_variants(check, arch, variants, stock=False):
    """Interleaved training steps of ``arch`` in ``variants`` ({name: train options}) and optionally stock
    basicsr; returns ({name: it/s}, {name: peak bytes or None})."""
    s = check.sizes
    batch = check.ready_batch()
    steps = {}
    for name, train in variants.items():
        torch.manual_seed(0)
        model, _ = check.model(arch, **train)
        steps[name] = training_steps(model, batch, s.block)
        if compiled_variant(name):  # the first step compiles: timed on its own, outside the rounds
            t0 = time.perf_counter()
            steps[name](s.warmup + s.rounds)
            check.sync()
            check.report.add('speed', f'{arch} {name}', f'compiled in {time.perf_counter() - t0:.0f} s '
                             f'(its first {s.block} step(s), untimed below)')
    if stock:
        torch.manual_seed(0)
        steps['basicsr'] = training_steps(stock_basicsr_model(check, arch), batch, s.block, stock=True)

    def progress(r, times):
        done = ', '.join(f'{n} {t[-1] / s.block * 1e3:.1f} ms' for n, t in times.items() if t)
        print(f'speed {arch} round {r + 1}/{s.warmup + s.rounds}: {done}', file=sys.stderr, flush=True)

    times, peaks = interleaved_steps(steps, s.warmup + s.rounds, s.warmup, check.device, on_round=progress)
    del steps, batch
    check.free()
    return {n: 1 / per_step(t, s.block) for n, t in times.items()}, peaks


def report_rates(check, arch, rates, peaks, names):
    flops, peak = check.flops.get(arch), check.peak
    for name in names:
        text = f'{rates[name]:.2f} it/s ({rates[name] * check.sizes.batch:.1f} samples/s)'
        if 'bf16' in name:
            text += f', MFU {100 * flops * rates[name] / peak:.1f} %' if peak else ', MFU n/a (peak unknown)'
        if peaks.get(name):
            text += f', peak {peaks[name] / 2**30:.2f} GiB'
        check.report.add('speed', f'{arch} {name}', text)


def check_speed(check):
    """Every variant but compile (timed last, by check_compile: its compilation time is unknown in advance)."""
    variants = {n: t for n, t in check.variants().items() if not compiled_variant(n)}
    for arch in check.archs:
        if check.over_budget(f'speed {arch}'):
            continue
        net = build_network(check.network(arch)).to(check.device)
        check.flops[arch] = training_step_flops(net, check.ready_batch()['lq'])
        del net
        rates, peaks = time_variants(check, arch, variants, stock=True)
        check.rates.setdefault(arch, {}).update(rates)
        report_rates(check, arch, rates, peaks, list(variants))
        check.report.add('speed', f'{arch} stock basicsr SRModel (fp32)', f"{rates['basicsr']:.2f} it/s")
        if not any('bf16' in n for n in variants):
            check.report.add('speed', f'{arch} bf16 variants', 'not run: bf16 autocast on a CPU is emulated, far '
                             'slower than fp32 (CUDA only)', status='skip')


def check_compile(check):
    """The compile variant of each arch, interleaved with the same variant without compile."""
    variants = check.variants()
    for arch in check.archs:
        name = next(n for n in variants if compiled_variant(n))
        reference = name.replace('+compile', '')
        if check.smoke and arch != 'SRResNet':
            check.report.add('speed', f'{arch} {name}', 'not run: --smoke times compile on SRResNet only',
                             status='skip')
            continue
        if check.over_budget(f'speed {arch} {name}'):
            continue
        rates, peaks = time_variants(check, arch, {reference: variants[reference], name: variants[name]})
        check.rates.setdefault(arch, {})[name] = rates[name]
        report_rates(check, arch, rates, peaks, [name])
        check.report.add('speed', f'{arch} {name} / {reference}', f'{rates[name] / rates[reference]:.2f}× '
                         '(interleaved in one run)')


def check_goals(check):
    """The speed goals from the rates measured by check_speed and check_compile."""
    for arch in ('SRResNet', 'RRDB'):
        rates = dict(check.rates.get(arch, {}))
        stock = rates.pop('basicsr', None)
        if stock is None or not rates:
            check.report.add('goal', f'{arch} ours / stock basicsr', 'not measured (speed did not run)',
                             f'≥ {GOAL_SPEEDUP:g}×', 'FAIL')
            continue
        best = max(rates, key=rates.get)
        ratio = rates[best] / stock
        check.report.goal('goal', f'{arch} ours ({best}) / stock basicsr', ratio, f'{ratio:.2f}×',
                          f'≥ {GOAL_SPEEDUP:g}×', ratio >= GOAL_SPEEDUP, not check.smoke)
    bf16 = {n: r for n, r in check.rates.get('RRDB', {}).items() if 'bf16' in n}
    goal = f'≥ {GOAL_MFU:.0%}'
    if not check.cuda:
        check.report.add('goal', 'RRDB MFU in bf16', 'not measured: no bf16 on the CPU', goal, 'skip')
    elif check.peak is None:
        check.report.add('goal', 'RRDB MFU in bf16', f'n/a: the bf16 peak of {torch.cuda.get_device_name(check.device)}'
                         ' is not in the table (basicsr_ext/utils/flops.py)', goal, 'n/a')
    elif not bf16:
        check.report.add('goal', 'RRDB MFU in bf16', 'not measured (speed did not run)', goal, 'FAIL')
    else:
        top = max(bf16, key=bf16.get)
        flops = check.flops['RRDB']
        mfu = flops * bf16[top] / check.peak
        check.report.goal('goal', f'RRDB MFU in bf16 ({top}, {flops / 1e9:.0f} GFLOP per step, peak '
                          f'{check.peak / 1e12:.0f} TFLOP/s)', mfu, f'{100 * mfu:.1f} %', goal, mfu >= GOAL_MFU,
                          not check.smoke)


def subimage_folder(check):
    """480² PNG sub-images of the photos scikit-image ships (as extract_subimages makes of DIV2K), written once."""
    folder = Path(check.workdir) / 'subimages'
    if not folder.is_dir():
        import cv2  # writing the PNGs
        from basicsr_ext.data.skimage_photos_dataset import load_photo
        folder.mkdir()
        size = 80 if check.smoke else 480
        for name in CANVAS_PHOTOS:
            img = load_photo(name)
            for top in range(0, img.shape[0] - size + 1, size // 2):
                for left in range(0, img.shape[1] - size + 1, size // 2):
                    crop = img[top:top + size, left:left + size]
                    cv2.imwrite(str(folder / f'{name}_{top}_{left}.png'), (crop * 255).round().astype('uint8'))
    return str(folder)


def gt_only_dataset(check, canvas, prefetch=None):
    """The recipes' training set: GTOnlyDataset on PNG sub-images from disk, canvases of ``canvas``² + kernels."""
    s = check.sizes
    return {'name': 'subimages', 'type': 'GTOnlyDataset', 'dataroot_gt': subimage_folder(check),
            'crop_pad_size': canvas, 'use_hflip': True, 'use_rot': False, 'dataset_enlarge_ratio': 100,
            'batch_size_per_gpu': s.batch, 'num_worker_per_gpu': s.workers, 'pin_memory': check.cuda,
            'prefetch_mode': prefetch}


def loop_step_time(check, model, opt, prefetch):
    """Seconds per step of the training loop's data path + step, and the loop's own wait for batches."""
    s = check.sizes
    train_opt = opt['datasets']['train']
    loader, sampler = build_train_loader(build_dataset(train_opt), train_opt, opt['manual_seed'])
    batches = Prefetcher(model.device, model.prepare_batch) if prefetch == 'cuda' else iter
    it = batches(iter(loader))
    waited, start = 0.0, None
    for step in range(1, s.data_warmup + s.data_steps + 1):
        if step == s.data_warmup + 1:
            check.sync()
            start, waited = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        data = next(it)
        waited += time.perf_counter() - t0
        model.update_learning_rate(step)
        model.feed_data(data, step)
        model.optimize_parameters(step)
    check.sync()
    return (time.perf_counter() - start) / s.data_steps, waited / s.data_steps


def ready_step_time(check, model):
    s = check.sizes
    batch = {'lq': model.lq.detach().clone(), 'gt': model.gt.detach().clone()}
    model.degradation, saved = None, model.degradation  # the pair as it is: no degradation in feed_data
    try:
        for step in range(1, s.data_warmup + s.data_steps + 1):
            if step == s.data_warmup + 1:
                check.sync()
                start = time.perf_counter()
            model.update_learning_rate(step)
            model.feed_data(batch, step)
            model.optimize_parameters(step)
        check.sync()
    finally:
        model.degradation = saved
    return (time.perf_counter() - start) / s.data_steps


def check_data(check):
    s = check.sizes
    variant = 'bf16+channels_last' if check.cuda else 'channels_last'
    cases = [('SRResNet', 'cuda'), ('SRResNet', None)] + ([] if check.smoke else [('RRDB', 'cuda')])
    for arch, prefetch in cases:
        if arch not in check.archs or check.over_budget(f'data {arch}'):
            continue
        torch.manual_seed(0)
        model, opt = check.model(arch, gt_size=s.gt, dataset=gt_only_dataset(check, s.canvas, prefetch),
                                 **check.variants()[variant])
        t_loop, t_wait = loop_step_time(check, model, opt, prefetch)
        t_ready = ready_step_time(check, model)
        share = max(0.0, 1 - t_ready / t_loop)
        config = (f"{arch} {variant}, GTOnlyDataset (PNG sub-images), batch {s.batch}, canvas {s.canvas}² → GT "
                  f"{s.gt}, {s.workers} workers, prefetch_mode: {prefetch or 'null'}")
        text = (f'{100 * share:.1f} % (step {1e3 * t_loop:.1f} ms in the loop, {1e3 * t_ready:.1f} ms on a ready '
                f'batch; the loop waited {1e3 * t_wait:.1f} ms per batch)')
        if prefetch == 'cuda':
            check.report.goal('data', config, share, text, f'< {GOAL_DATA:.0%}', share < GOAL_DATA, not check.smoke)
        else:
            check.report.add('data', config, text)
        del model
        check.free()


def check_eats(check):
    if check.over_budget('eats'):
        return
    s = check.sizes
    variant = check.variants()['bf16+channels_last' if check.cuda else 'channels_last']
    eats = [{'type': 'EATS', **recipe_eats()}]
    batch = check.ready_batch()
    steps = {}
    for name, regs in (('baseline', []), ('EATS', eats)):
        torch.manual_seed(0)
        model, _ = check.model('SRResNet', regs, **variant)
        steps[name] = training_steps(model, batch, s.block)
    times, _ = interleaved_steps(steps, s.warmup + s.rounds, s.warmup, check.device)
    t_eats, t_base = per_step(times['EATS'], s.block), per_step(times['baseline'], s.block)
    ratio = t_eats / t_base
    config = f"SRResNet {'bf16+channels_last' if check.cuda else 'channels_last'}, exact (reuse_prefix, whole batch)"
    check.report.goal('eats', config, ratio, f"{ratio:.2f}× the baseline's step ({1e3 * t_eats:.1f} ms vs "
                      f'{1e3 * t_base:.1f} ms)', f'≤ {GOAL_EATS:g}×', ratio <= GOAL_EATS, not check.smoke)
    del steps, model
    check.free()


def recipe_eats():
    regs = yaml_load(str(ROOT / 'options' / 'train' / 'SRResNet' / 'eats_x4.yml'))['train']['regularizers']
    return {k: v for k, v in regs[0].items() if k != 'type'}


def nccl_options(exp, total):
    """The tiny training file of the NCCL row: SRResNet on a scikit-image photo, one GPU per process."""
    return {'name': 'gpu_check_nccl', 'scale': 4, 'num_gpu': 1, 'manual_seed': 0,
            'datasets': {'train': {'name': 'photos', 'type': 'SkimagePhotosDataset', 'photos': ['astronaut'],
                                   'gt_size': 64, 'patches_per_image': 64, 'batch_size_per_gpu': 4,
                                   'num_worker_per_gpu': 2}},
            'network_g': copy.deepcopy(SMOKE_NETS['SRResNet']), 'path': {'experiments_root': str(exp)},
            'train': {'total_iter': total, 'optim_g': {'type': 'Adam', 'lr': 2e-4},
                      'scheduler': {'type': 'MultiStepLR', 'milestones': [total]}, 'pixel_opt': {'type': 'L1Loss'}},
            'logger': {'print_freq': 10, 'save_checkpoint_freq': total, 'plot_curves': False},
            'dist_params': {'backend': 'nccl'}}


def check_nccl(check):
    if not check.cuda:
        check.report.add('nccl', '1-process torchrun, --launcher pytorch', 'not run: NCCL needs CUDA', status='skip')
        return
    if check.over_budget('nccl'):
        return
    exp = Path(check.workdir) / 'nccl'
    total = 20
    opt = nccl_options(exp, total)
    path = Path(check.workdir) / 'nccl.yml'
    path.write_text(yaml.safe_dump(opt))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1',
           str(ROOT / 'train.py'), '-opt', str(path), '--launcher', 'pytorch']
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(30, check.left()))
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-400:]
    except subprocess.TimeoutExpired:
        rc, tail = 'timeout', ''
    ckpt = exp / 'models' / f'net_g_{total}.pth'
    ok = rc == 0 and ckpt.is_file()
    text = f'exit {rc}, {total} iterations in {time.perf_counter() - t0:.0f} s, checkpoint ' + (
        'written' if ckpt.is_file() else 'missing')
    if not ok:
        text += ': ' + ' '.join(tail.split())[-300:]
    check.report.add('nccl', '1-process torchrun, --launcher pytorch, backend nccl', text, 'exit 0 + checkpoint',
                     'PASS' if ok else 'FAIL')


def check_test_py(check):
    if check.over_budget('test.py'):
        return
    from basicsr_ext.test import main as test_main  # the entry point's pipeline, run in this process
    net_opt = check.network('SRResNet')
    torch.manual_seed(0)
    ckpt = Path(check.workdir) / 'random_srresnet.pth'
    torch.save({'params': build_network(net_opt).state_dict()}, ckpt)
    psnr = {}
    amp = 'bf16' if check.cuda else False  # test.py refuses amp on a CPU
    for label, amp, tile in (('bf16_tiles', amp, 32), ('fp32_whole', False, 0)):
        opt = {'name': f'gpu_check_{label}', 'models': [{'name': 'net', 'network_g': net_opt, 'path': str(ckpt)}],
               'datasets': [{'name': 'photos', 'skimage_photos': ['chelsea']}], 'degradations': ['clean', 'b+n'],
               'scales': [4], 'metrics': {'psnr': True, 'ssim': False}, 'amp': amp, 'tile_size': tile, 'tile_pad': 8,
               'device': str(check.device), 'cache_dir': str(Path(check.workdir) / 'testsets'),
               'results_root': str(Path(check.workdir) / label), 'plot': False, 'progress': False}
        path = Path(check.workdir) / f'{label}.yml'
        path.write_text(yaml.safe_dump(opt))
        rc = test_main(['-opt', str(path), '--no_progress'])
        if rc != 0:
            check.report.add('test.py', f'amp {amp}, tile_size {tile}', f'exit {rc}', 'exit 0', 'FAIL')
            return
        with open(Path(check.workdir) / label / 'per_image.csv', newline='') as f:
            psnr[label] = {(r['degradation'], r['image']): float(r['psnr']) for r in csv.DictReader(f)}
    diff = max(abs(psnr['bf16_tiles'][k] - v) for k, v in psnr['fp32_whole'].items())
    config = 'amp: bf16, tile_size 32 vs fp32 whole images (SRResNet, random weights, chelsea × clean, b+n)'
    if not check.cuda:
        config = 'tile_size 32 vs whole images, fp32 (amp: bf16 needs CUDA; SRResNet, random weights, chelsea)'
    check.report.add('test.py', config, f'largest PSNR difference {diff:.4f} dB over {len(psnr["fp32_whole"])} images',
                     f'≤ {GOAL_PSNR_DB:g} dB', 'PASS' if diff <= GOAL_PSNR_DB else 'FAIL')


def degradation_statistics(device, batches, seed, gt_size):
    """Per-sample (LR mean, LR std, residual mean |r|, residual std) of the degradation of ``batches`` on ``device``."""
    deg = build_degradation({'type': 'HighOrderDegradation', 'gt_size': gt_size}, 4, device)
    deg.seed(seed)
    rows = []
    for batch in batches:
        out = deg({k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()})
        lq, gt = out['lq'].float(), out['gt'].float()
        residual = lq - F.interpolate(gt, scale_factor=0.25, mode='area')
        rows.append(torch.stack([lq.mean((1, 2, 3)), lq.std((1, 2, 3)), residual.abs().mean((1, 2, 3)),
                                 residual.std((1, 2, 3))], 1).cpu())
    return torch.cat(rows).double()


def check_degradation(check):
    if check.over_budget('degradation'):
        return
    from scipy.stats import ks_2samp  # scipy: the two-sample test
    s = check.sizes
    raw = training_options(SMOKE_NETS['SRResNet'], check.workdir, 1)
    raw['datasets']['train'] = gt_only_dataset(check, s.dist_canvas)
    dataset = validate_options(raw)['datasets']['train']
    loader, _ = build_train_loader(build_dataset(dataset), dataset, seed=0)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == s.dist_batches:
            break
    other = check.device if check.cuda else torch.device('cpu')
    a = degradation_statistics(torch.device('cpu'), batches, 1, s.gt)
    b = degradation_statistics(other, batches, 2, s.gt)
    names = ('LR mean', 'LR std', 'mean abs(LR − ↓GT)', 'std(LR − ↓GT)')
    ps = [ks_2samp(a[:, i].numpy(), b[:, i].numpy()).pvalue for i in range(4)]
    text = '; '.join(f'{n}: {a[:, i].mean():.4f} vs {b[:, i].mean():.4f} (KS p {p:.3f})'
                     for i, (n, p) in enumerate(zip(names, ps)))
    where = 'GPU' if check.cuda else 'CPU (another seed: no GPU)'
    check.report.add('degradation', f'CPU vs {where}, {len(a)} draws each, canvas {s.dist_canvas}² → GT {s.gt}',
                     text, f'every p > {GOAL_KS_P:g}', 'PASS' if min(ps) > GOAL_KS_P else 'FAIL')


# correctness first, then speed; compile last of the timings (its compilation time is not known in advance)
SECTIONS = {'degradation': check_degradation, 'test.py': check_test_py, 'nccl': check_nccl, 'speed': check_speed,
            'data': check_data, 'eats': check_eats, 'compile': check_compile, 'goals': check_goals}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', help="'cuda', 'cuda:N' or 'cpu' (default cuda)")
    parser.add_argument('--smoke', action='store_true', help='tiny sizes, a few steps; goals are not judged')
    parser.add_argument('--archs', nargs='+', choices=ARCHS, default=list(ARCHS), help='architectures (default all)')
    parser.add_argument('--only', nargs='+', choices=list(SECTIONS), default=list(SECTIONS), help='sections to run')
    parser.add_argument('--budget', type=float, default=300, help='seconds; a section not started by then fails '
                        '(default 300)')
    parser.add_argument('--json', default=None, help='also write the rows to this JSON file')
    parser.add_argument('--threads', type=int, default=0, help="torch CPU threads (default: torch's choice; 1 on a "
                        'shared CPU, where tiny networks wait on their own threads)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        check = Check(args, workdir)
        if check.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        for name in args.only:
            t0 = time.perf_counter()
            try:
                # the sections' own output (test.py's tables, loggers) goes to stderr: stdout is the table
                with contextlib.redirect_stdout(sys.stderr):
                    SECTIONS[name](check)
            except Exception as err:  # one failing section must not hide the others' rows
                import traceback  # the traceback of a failed section, for the log
                traceback.print_exc()
                check.report.add(name, 'raised', f'{type(err).__name__}: {" ".join(str(err).split())[:300]}',
                                 status='FAIL')
            check.free()
            print(f'section {name}: {time.perf_counter() - t0:.1f} s', file=sys.stderr, flush=True)
    where = (f'{torch.cuda.get_device_name(check.device)}, CUDA {torch.version.cuda}' if check.cuda else
             f"CPU, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}")
    header = (f"gpu_check{' --smoke' if args.smoke else ''}: {where}, torch {torch.__version__}, "
              f'{time.perf_counter() - start:.0f} s')
    print(check.report.table(header))
    failed = check.report.failed
    print(f'\n{len(failed)} failure(s)' if failed else '\nall checks passed' + (
        ' (smoke: goals not judged)' if args.smoke else ''))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'header': header, 'rows': check.report.rows}, f, indent=1, ensure_ascii=False)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
