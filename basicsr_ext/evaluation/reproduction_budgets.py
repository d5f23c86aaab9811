"""Budgets of a reproduction: how a paper option file is shortened (or not) for one row.

=========== ====================================================== =========================================
budget      training                                               evaluation
=========== ====================================================== =========================================
paper       the option files: 500k iterations, batch 16, GT 128    5 sets × 8 degradations
gpu-proxy   same recipe, shorter: SRResNet 50k, RRDB/HAN-lite 20k,  5 sets × 8 degradations
            SwinIR 10k iterations (about an hour per row on one
            H100-class GPU: an estimate, not yet measured)
proxy       same recipe, 300 iterations (the project's 2-core CPU:  Set5, Set14 × 8 degradations
            about 90 min for T1's three rows, training + eval)
smoke       tiny widths, 4 iterations, batch 2, GT 32, a generated  one generated set × clean, noise
            HR set (the test suite)
=========== ====================================================== =========================================

"Same recipe" means everything but the schedule is the file's: data, degradation, batch, patch,
optimizer, EMA, regularizer. The cosine period, MultiStep milestones, warm-up, AdaptiveDropout's
annealing ``interval`` and ECO's ``schedule_iters`` are scaled by the same factor as ``total_iter``,
so each schedule keeps its shape; checkpoints come often enough that an interrupted row resumes.
The evaluation reports PSNR only (the papers print PSNR; SSIM costs 10× as much on CPU). The channel
correlation and ablation of the report run on the validation set's clean LR: all of Set5, the proxy's
first 2 images, the smoke set's first image.
"""
import copy
from dataclasses import dataclass

from ..utils.schema import OptionError

__all__ = ['Budget', 'BUDGETS', 'get_budget', 'apply_budget', 'TINY_NETWORKS', 'ITERATION_KEYS']


@dataclass(frozen=True)
class Budget:
    name: str
    doc: str
    total_iter: dict = None          # arch folder -> iterations; None: the option file's
    checkpoint_every: int = None     # None: the file's
    val_every: int = None            # None: the file's; 0: at the end only
    print_freq: int = None
    datasets: tuple = ('Set5', 'Set14', 'BSD100', 'Urban100', 'Manga109')
    degradations: tuple = ('clean', 'blur', 'noise', 'jpeg', 'b+n', 'b+j', 'n+j', 'b+n+j')
    workers: int = None              # dataloader workers per GPU; None: the file's
    tiny: bool = False               # tiny widths, batch 2, GT 32, a generated HR set
    analysis_images: int = None      # validation images of the channel correlation/ablation (None: all)

    def iterations(self, arch_dir, file_total):
        if self.total_iter is None:
            return int(file_total)
        return int(self.total_iter.get(arch_dir, self.total_iter.get('*', file_total)))


BUDGETS = {b.name: b for b in (
    Budget('paper', 'the published recipe: the option files as written (500k iterations)'),
    Budget('gpu-proxy', 'the same recipe on a shorter schedule, about an hour per row on one H100-class GPU '
           '(estimated from FLOPs and data loading, not yet measured)',
           total_iter={'SRResNet': 50000, 'RRDB': 20000, 'HAN_lite': 20000, 'SwinIR': 10000},
           checkpoint_every=5000, val_every=5000, print_freq=100),
    Budget('proxy', "the same recipe on 300 iterations, sized for the project's 2-core CPU (T1's three rows in "
           '75 minutes measured, evaluation included)', total_iter={'*': 300}, checkpoint_every=100, val_every=0,
           print_freq=10, datasets=('Set5', 'Set14'), workers=1, analysis_images=2),
    Budget('smoke', 'tiny networks, 4 iterations, one generated set × two degradations: for the test suite',
           total_iter={'*': 4}, checkpoint_every=2, val_every=0, print_freq=1, datasets=('skimage',),
           degradations=('clean', 'noise'), workers=0, tiny=True, analysis_images=1),
)}

#: the smoke budget's widths per architecture (site names stay those of the full networks)
TINY_NETWORKS = {
    'MSRResNet': {'num_feat': 8, 'num_block': 2},
    'RRDBNetAnyScale': {'num_feat': 12, 'num_block': 1, 'num_grow_ch': 12},  # EATS-5filter needs 10 channels
    'HAN': {'num_feat': 8, 'num_group': 2, 'num_block': 1, 'squeeze_factor': 4},
    'SwinIR': {'img_size': 8, 'window_size': 4, 'depths': [1, 1], 'embed_dim': 12, 'num_heads': [2, 2],
               'mlp_ratio': 1, 'drop_path_rate': 0.0},
}
#: regularizer keys counted in iterations, scaled with total_iter
ITERATION_KEYS = {'AdaptiveDropout': ('interval',), 'ECO': ('schedule_iters',)}


def get_budget(name):
    if name not in BUDGETS:
        raise KeyError(f"no budget '{name}'; budgets: {', '.join(BUDGETS)}")
    return BUDGETS[name]


def _scaled(value, factor):
    return max(1, int(round(value * factor)))


def _rescale_schedule(train, old_total, total):
    factor = total / old_total
    sch = train.get('scheduler') or {}
    if 'periods' in sch:
        periods = [_scaled(p, factor) for p in sch['periods']]
        if sum(sch['periods']) == old_total:  # periods that cover the run still cover it exactly
            periods[-1] = max(1, periods[-1] + total - sum(periods))
        sch['periods'] = periods
    if 'milestones' in sch:
        sch['milestones'] = [_scaled(m, factor) for m in sch['milestones']]
    if (train.get('warmup_iter') or -1) > 0:
        train['warmup_iter'] = _scaled(train['warmup_iter'], factor)
    for reg in train.get('regularizers') or []:
        for key in ITERATION_KEYS.get(reg.get('type'), ()):
            if isinstance(reg.get(key), int) and not isinstance(reg.get(key), bool) and reg[key] > 0:
                reg[key] = _scaled(reg[key], factor)


def apply_budget(raw, budget, arch_dir, train_gt=None, val=None, gpus_per_row=1):
    """A copy of a raw option mapping with the budget's schedule, sizes and paths.

    Args:
        raw: the option file's mapping (after the table's and row's changes).
        budget: a :class:`Budget`.
        arch_dir: the option folder's architecture (SRResNet, RRDB, HAN_lite, SwinIR).
        train_gt: a folder of training HR images replacing the file's (its meta_info is dropped).
        val: ``(hr_folder, lr_folder)`` of the validation set, or None to keep the file's.
        gpus_per_row: processes training this row; the batch per GPU is divided so the total stays.
    """
    opt = copy.deepcopy(raw)
    train = opt.setdefault('train', {})
    old_total = int(train.get('total_iter', 0) or 0)
    total = budget.iterations(arch_dir, old_total)
    if old_total <= 0:
        raise OptionError(f"train.total_iter: the option file has {old_total!r}; a positive number is needed")
    if total != old_total:
        train['total_iter'] = total
        _rescale_schedule(train, old_total, total)
    logger = opt.setdefault('logger', {})
    if budget.checkpoint_every:
        logger['save_checkpoint_freq'] = min(budget.checkpoint_every, total)
    if budget.print_freq:
        logger['print_freq'] = budget.print_freq
    if budget.val_every is not None:
        opt.setdefault('val', {})['val_freq'] = budget.val_every or total
    datasets = opt.setdefault('datasets', {})
    tset = datasets.setdefault('train', {})
    if budget.workers is not None:
        tset['num_worker_per_gpu'] = budget.workers
    if train_gt is not None:
        tset['dataroot_gt'] = str(train_gt)
        tset['meta_info'] = None
        tset['io_backend'] = {'type': 'disk'}
    if budget.tiny:
        net = opt.setdefault('network_g', {})
        net.update(TINY_NETWORKS.get(net.get('type'), {}))
        tset.update(batch_size_per_gpu=2, crop_pad_size=64)
        opt.setdefault('degradation', {})['gt_size'] = 32
        opt['num_gpu'] = 0
        logger['plot_curves'] = False  # matplotlib in every child costs more than the 4 iterations
        opt.setdefault('val', {})['pbar'] = False
    if val is not None:
        for key, vset in datasets.items():
            if key.startswith('val'):
                vset.update(dataroot_gt=str(val[0]), dataroot_lq=str(val[1]))
    if gpus_per_row > 1:
        batch = int(tset.get('batch_size_per_gpu', 16))
        if batch % gpus_per_row:
            raise OptionError(f'--gpus_per_row {gpus_per_row}: the batch of {batch} does not divide among '
                              f'{gpus_per_row} GPUs; use a divisor of {batch}')
        tset['batch_size_per_gpu'] = batch // gpus_per_row
    return opt
