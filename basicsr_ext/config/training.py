"""Validation of whole training option files, and where their outputs go.

Everything is checked before any data is read: unknown keys (with the closest valid key),
missing required keys, wrong types, missing dataroots, architecture arguments (against the
arch's constructor), optimizer/scheduler/loss arguments, regularizer sites and pairings,
and that the network really upsamples by ``scale``.
"""
import importlib.util
import inspect
import os

import torch
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from ..archs import arch_spec, get_sites, has_sites
from ..archs.meta import build_meta_network
from ..data import DEGRADATION_TYPES
from ..metrics import metric_better
from ..regularizers import REGULARIZER_REGISTRY, combination_error
from ..utils.amp import check_amp
from ..utils.paths import PROJECT_ROOT
from ..utils.schema import Field, OptionError, Section, check_path, join, validate
from .files import read_option_file
from .gan import (GAN_PATH_FIELDS, GAN_TOP_FIELDS, GAN_TRAIN_FIELDS, VGG_PATH_FIELD, resolve_vgg_weights,
                  validate_gan_options)
from .kwargs import (OPTIMIZERS, dict_registry, field_from_default, registered, scheduler_classes, typed_section,
                     validate_kwargs)

__all__ = ['METRIC_SCHEMA', 'TOP_SCHEMA', 'load_options', 'resolve_num_gpu', 'set_paths', 'validate_options']


def _check_compile(value, where):
    if value not in (False, True, 'default', 'reduce-overhead', 'max-autotune'):
        raise OptionError(f"{where}: expected false, true, 'default', 'reduce-overhead' or 'max-autotune', "
                          f'got {value!r}')


def _check_wandb_installed(value, where):
    if value is not None and importlib.util.find_spec('wandb') is None:
        raise OptionError(f'{where}: {value!r} asks for wandb logging, but the wandb package is not installed: '
                          'pip install wandb (or set it to null)')


def _check_num_gpu(value, where):
    if value != 'auto' and not (isinstance(value, int) and value >= 0):
        raise OptionError(f"{where}: expected 'auto' or an integer >= 0, got {value!r}")


TOP_SCHEMA = {
    'name': Field(str, doc='experiment name; outputs go to experiments/<name>'),
    'model_type': Field(str, 'BlindSRModel', doc='registered model class'),
    'scale': Field(int, choices=(1, 2, 3, 4), doc='upscaling factor'),
    'num_gpu': Field((int, str), 'auto', doc="GPUs per process; 0 = CPU, 'auto' = CUDA if available",
                     check=_check_num_gpu),
    'manual_seed': Field(int, 0, doc='global seed (rank r uses seed + r for model-side randomness)'),
    'cudnn_benchmark': Field(bool, False, doc='torch.backends.cudnn.benchmark'),
    'deterministic': Field(bool, False, doc='torch.use_deterministic_algorithms(True)'),
    'find_unused_parameters': Field(bool, False, doc='DDP find_unused_parameters'),
    'datasets': Field(dict, doc='train / val* / test* datasets'),
    'network_g': Field(dict, doc='architecture: {type: <registered arch>, **constructor kwargs}'),
    'degradation': Field(dict, None, doc='model-side training degradation: {type: HighOrderDegradation, ...}'),
    **GAN_TOP_FIELDS,
    'path': Section({
        'pretrain_network_g': Field(str, None, kind='file', doc='initial weights (.pth)'),
        'param_key_g': Field(str, 'params', doc="key inside the .pth: 'params' or 'params_ema'"),
        'strict_load_g': Field(bool, True, doc='strict state-dict loading'),
        **GAN_PATH_FIELDS,
        **VGG_PATH_FIELD,
        'resume_state': Field(str, None, kind='file', doc='training state (.state) to resume from'),
        'experiments_root': Field(str, None, doc='output folder (default: <project>/experiments/<name>)'),
        'results_root': Field(str, None, doc='test output folder (default: <project>/results/<name>)'),
    }, doc='paths'),
    'train': Section({
        'total_iter': Field(int, min=1, doc='number of training iterations'),
        'warmup_iter': Field(int, -1, doc='linear LR warm-up iterations (-1: none)'),
        'ema_decay': Field(float, 0.0, min=0.0, max=1.0, doc='EMA decay of net_g_ema (0 disables EMA)'),
        'optim_g': Field(dict, doc='optimizer: {type: Adam|AdamW|SGD|..., lr, betas, weight_decay}'),
        'scheduler': Field(dict, doc='{type: MultiStepLR|CosineAnnealingRestartLR, ...}'),
        'pixel_opt': Field(dict, None, doc='pixel loss: {type: L1Loss|MSELoss|CharbonnierLoss, loss_weight, reduction}'),
        'perceptual_opt': Field(dict, None, doc='basicsr PerceptualLoss options (VGG weights: path.pretrained_vgg)'),
        **GAN_TRAIN_FIELDS,
        'regularizers': Field(list, [], doc='list of {type: <regularizer>, ...}; empty = baseline'),
        'grad_clip': Field(float, 0.0, min=0.0, doc='clip the gradient norm to this value (0: off)'),
        'accumulate': Field(int, 1, min=1, doc='micro-batches per optimizer step (gradient accumulation): the '
                            'effective batch is batch_size_per_gpu × processes × accumulate; total_iter counts steps'),
        'channels_last': Field(bool, False, doc='train in the channels-last memory layout (NHWC), which tensor-core GPUs '
                               'prefer; checkpoints are unchanged'),
        'check_finite': Field(bool, True, doc='stop (exit code 1, no checkpoint written) when a loss becomes NaN or '
                              'infinite; checked on the device, read at each log line and checkpoint'),
        'amp': Field((bool, str), False, check=check_amp,
                     doc="mixed precision: false, true (= fp16, with loss scaling), 'fp16' or 'bf16'; CUDA "
                     'recommended (CPU autocast is far slower than fp32 without bf16 units)'),
        'compile': Field((bool, str), False, check=_check_compile,
                         doc="torch.compile the network for training: false, true (= 'default'), 'default', "
                         "'reduce-overhead' (CUDA graphs) or 'max-autotune'; validation runs eagerly and "
                         'checkpoints are unchanged. The first steps take longer while it compiles'),
        'compile_backend': Field(str, 'inductor', doc="torch.compile backend: 'inductor' (generates kernels; needs "
                                 "a C++ compiler on CPU), or e.g. 'aot_eager' (traces only, to debug a graph)"),
    }, doc='training'),
    'val': Section({
        'val_freq': Field((int, float), 5000, doc='validate every N iterations'),
        'save_img': Field(bool, False, doc='save SR images of validation'),
        'pbar': Field(bool, True, doc='progress bar during validation'),
        'suffix': Field(str, None, doc='suffix of saved images'),
        'metrics': Field(dict, {}, doc='{name: {type: calculate_psnr|calculate_ssim, crop_border, test_y_channel}}'),
        'tile_size': Field(int, 0, min=0, doc='tiled inference tile size in LR pixels (0: whole image)'),
        'tile_pad': Field(int, 16, min=0, doc='overlap of tiles in LR pixels'),
    }, doc='validation'),
    'logger': Section({
        'print_freq': Field(int, 100, min=1, doc='log every N iterations'),
        'save_checkpoint_freq': Field((int, float), 5000, doc='checkpoint every N iterations'),
        'keep_checkpoints': Field(int, 0, min=0, doc='keep only the newest N checkpoints (0: keep all)'),
        'use_tb_logger': Field(bool, False, doc='write tensorboard events'),
        'plot_curves': Field(bool, True, doc='redraw curves.png in the experiment folder (losses, learning rate, '
                             'validation metrics) after each validation, at each checkpoint and at the end; '
                             'history.jsonl beside it is written either way'),
        'save_safetensors': Field(bool, False, doc='also write net_g_<iter>.safetensors beside each net_g_<iter>.pth: '
                                  'the inference weights (params_ema if kept, else params) with the network options '
                                  'and scale as metadata, for other tools (docs/interchange.md)'),
        'wandb': Section({
            'project': Field(str, None, check=_check_wandb_installed,
                             doc='Weights & Biases project: set it to log the losses, learning rate, it/s and '
                             'validation metrics to wandb (null: no wandb)'),
            'entity': Field(str, None, doc='wandb team or user (default: your default entity)'),
            'name': Field(str, None, doc='wandb run name (default: the experiment name)'),
            'tags': Field(list, [], item=str, doc='wandb run tags'),
            'resume_id': Field(str, None, doc='continue this wandb run (default: the run id stored in the resumed '
                               '.state file; a new run otherwise)'),
        }, doc='Weights & Biases logging (the wandb package; WANDB_MODE=offline logs to disk only)'),
    }, doc='logging'),
    'dist_params': Section({
        'backend': Field(str, None, doc="'nccl' (CUDA) or 'gloo' (CPU); default by device"),
        'port': Field(int, 29500, doc='master port for SLURM launches'),
        'timeout': Field(int, 600, min=1,
                         doc='seconds before a stuck collective fails: a failed peer ends every rank by then'),
    }, doc='distributed'),
}

METRIC_SCHEMA = {
    'type': Field(str, doc='a basicsr metric: calculate_psnr, calculate_ssim, ...'),
    'crop_border': Field(int, 0, min=0, doc='pixels cropped from each border before measuring'),
    'test_y_channel': Field(bool, False, doc='measure on the Y channel of YCbCr (else RGB)'),
    'input_order': Field(str, 'HWC', choices=('HWC', 'CHW')),
    'better': Field(str, None, choices=('higher', 'lower'),
                    doc="which direction is better, for best tracking (default: the metric's own: lower for NIQE, "
                    'LPIPS and DISTS, else higher)'),
}
_METRIC_COMMON = ('img', 'img2', 'crop_border', 'input_order', 'test_y_channel')


def _metric_schema(fn):
    """METRIC_SCHEMA plus the metric function's own keyword arguments (e.g. calculate_lpips' net, weights)."""
    own = {name: field_from_default(p.default) for name, p in inspect.signature(fn).parameters.items()
           if name not in _METRIC_COMMON and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {**own, **METRIC_SCHEMA}


def _validate_metrics(metrics, where):
    out = {}
    for name, m in (metrics or {}).items():
        mw = join(where, name)
        if not isinstance(m, dict) or 'type' not in m:
            raise OptionError(f'{mw}.type: missing required key')
        fn = registered(METRIC_REGISTRY, m['type'], f'{mw}.type', 'metric')
        checked = validate(m, _metric_schema(fn), mw)
        checked['better'] = checked['better'] or metric_better(checked['type'])
        out[name] = checked
    return out


def _validate_dataset(name, dopt, opt, where):
    if not isinstance(dopt, dict) or 'type' not in dopt:
        raise OptionError(f'{where}.type: missing required key')
    dopt = dict(dopt)
    phase = 'train' if name == 'train' else ('test' if name.startswith('test') else 'val')
    dopt.setdefault('name', name)
    dopt['phase'] = phase
    dopt['scale'] = opt['scale']
    cls = registered(DATASET_REGISTRY, dopt['type'], f'{where}.type', 'dataset type')
    schema = getattr(cls, 'OPTIONS', None)
    if schema is not None:
        rest = {k: v for k, v in dopt.items() if k != 'type'}
        dopt = {'type': dopt['type'], **validate(rest, schema, where)}
    else:  # a basicsr dataset without a schema: check what can be checked (its raw keys, no defaults here)
        lmdb = dopt.get('io_backend', {}).get('type') == 'lmdb'
        for key, value in dopt.items():
            if key.startswith('dataroot') and value is not None:
                check_path(value, join(where, key), 'dir' if lmdb else 'path')
    return dopt


def _check_network(opt):
    where = 'network_g'
    net_opt = opt['network_g']
    if 'type' not in net_opt:
        raise OptionError('network_g.type: missing required key')
    cls = registered(ARCH_REGISTRY, net_opt['type'], 'network_g.type', 'architecture')
    net_opt = validate_kwargs(net_opt, cls, where)
    try:
        net = build_meta_network(net_opt)
    except Exception as err:  # the constructor's own message is the useful part
        raise OptionError(f"{where}: cannot build {net_opt['type']}: {err}") from err
    spec = arch_spec(net)
    size = max(spec.input_multiple(net), 8) * 2
    device = next(net.parameters()).device
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, spec.in_channels(net), size, size, device=device))
    except Exception:  # some archs cannot run on meta tensors; the real run checks the shape again
        return net_opt, net
    if out.shape[-1] != size * opt['scale']:
        got = out.shape[-1] / size
        raise OptionError(f"scale: network_g ({net_opt['type']}) upsamples ×{got:g} but scale is "
                          f"{opt['scale']}; set the network's scale argument (upscale/scale) to {opt['scale']}")
    return net_opt, net


def _validate_regularizers(regs, net, opt):
    out = []
    names = []
    for i, entry in enumerate(regs):
        where = f'train.regularizers[{i}]'
        if not isinstance(entry, dict) or 'type' not in entry:
            raise OptionError(f'{where}.type: missing required key')
        cls = registered(REGULARIZER_REGISTRY, entry['type'], f'{where}.type', 'regularizer')
        rest = {k: v for k, v in entry.items() if k != 'type'}
        checked = {'type': entry['type'], **validate(rest, cls.OPTIONS, where)}
        if not has_sites(net):
            raise OptionError(f"{where}: {entry['type']} needs regularizer sites, but {type(net).__name__} "
                              'declares none')
        cls.check_sites(checked, get_sites(net), where)
        cls.check_options(checked, opt, where)
        for j, other in enumerate(names):
            # same type twice, INCOMPATIBLE pairs, or two feature dropouts on overlapping sites
            reason = combination_error(cls, checked, REGULARIZER_REGISTRY.get(other), out[j], get_sites(net))
            if reason:
                raise OptionError(f'{where}: {reason} (train.regularizers[{j}])')
        names.append(entry['type'])
        out.append(checked)
    return out


def _validate_compile(t):
    """``train.compile``: normalised to a mode or False; every regularizer must support it."""
    if t['compile'] is True:
        t['compile'] = 'default'
    if not t['compile']:
        return
    # torch._dynamo is slow to import; only files that compile need its list of backends
    import torch._dynamo
    backends = torch._dynamo.list_backends(exclude_tags=())
    if t['compile_backend'] not in backends:
        raise OptionError(f"train.compile_backend: {t['compile_backend']!r} is not a torch.compile backend; "
                          f"available: {', '.join(sorted(backends))}")
    if t['compile_backend'] != 'inductor' and t['compile'] != 'default':
        raise OptionError(f"train.compile: mode {t['compile']!r} is an inductor mode, but compile_backend is "
                          f"{t['compile_backend']!r}; use compile: default with that backend")
    for i, entry in enumerate(t['regularizers']):
        REGULARIZER_REGISTRY.get(entry['type']).check_compile(entry, f'train.regularizers[{i}]')


def validate_options(raw, is_train=True):
    """Validate a raw option dict; return the complete option dict with defaults."""
    if not isinstance(raw, dict):
        raise OptionError(f'options: expected a mapping at the top level, got {type(raw).__name__}')
    schema = dict(TOP_SCHEMA)
    if is_train:
        schema['train'] = Section(TOP_SCHEMA['train'].fields, required=True, doc='training')
    else:  # a test file may carry its training section along; it is not used
        schema['train'] = Section(TOP_SCHEMA['train'].fields, open=True)
        schema['datasets'] = Field(dict, {})
    opt = validate(raw, schema)
    opt['is_train'] = is_train
    registered(MODEL_REGISTRY, opt['model_type'], 'model_type', 'model type')

    opt['network_g'], meta_net = _check_network(opt)

    datasets = {}
    for name, dopt in opt['datasets'].items():
        if not (name == 'train' or name.startswith('val') or name.startswith('test')):
            raise OptionError(f"datasets.{name}: dataset keys must be 'train', 'val*' or 'test*'")
        datasets[name] = _validate_dataset(name, dopt, opt, f'datasets.{name}')
    if is_train and 'train' not in datasets:
        raise OptionError('datasets.train: missing required key')
    opt['datasets'] = datasets

    if opt['degradation'] is not None:
        opt['degradation'] = typed_section(opt['degradation'], 'degradation', dict_registry(DEGRADATION_TYPES),
                                           'degradation type')

    if is_train:
        t = opt['train']
        t['optim_g'] = typed_section(t['optim_g'], 'train.optim_g', dict_registry(OPTIMIZERS), 'optimizer',
                                     skip=('params', ))
        t['scheduler'] = typed_section(t['scheduler'], 'train.scheduler', dict_registry(scheduler_classes()),
                                       'scheduler', skip=('optimizer', 'last_epoch'))
        for key in ('pixel_opt', 'perceptual_opt'):
            if t[key] is not None:
                t[key] = typed_section(t[key], f'train.{key}', LOSS_REGISTRY, 'loss')
        if t['pixel_opt'] is None and t['perceptual_opt'] is None:
            raise OptionError('train.pixel_opt: missing required key (a pixel or perceptual loss is needed)')
        t['regularizers'] = _validate_regularizers(t['regularizers'], meta_net, opt)
        _validate_compile(t)
        resolve_vgg_weights(opt)
        validate_gan_options(raw, opt, MODEL_REGISTRY.get(opt['model_type']), meta_net)
    opt['val']['metrics'] = _validate_metrics(opt['val']['metrics'], 'val.metrics')
    return opt


# --------------------------------------------------------------------------- paths, devices
def resolve_num_gpu(opt):
    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    elif opt['num_gpu'] > 0 and not torch.cuda.is_available():
        raise OptionError(f"num_gpu: {opt['num_gpu']} GPUs requested but CUDA is not available; "
                          "use num_gpu: 0 or 'auto'")
    train = opt['datasets'].get('train')
    if train is not None and train.get('pin_memory', False) is None:  # null: pin when the batches go to a GPU
        train['pin_memory'] = opt['num_gpu'] > 0
    return opt


def set_paths(opt, root=PROJECT_ROOT):
    path = opt['path']
    if opt['is_train']:
        exp = path['experiments_root'] or os.path.join(root, 'experiments', opt['name'])
        exp = exp if os.path.isabs(exp) else os.path.join(root, exp)
        path['experiments_root'] = exp
        path['models'] = os.path.join(exp, 'models')
        path['training_states'] = os.path.join(exp, 'training_states')
        path['log'] = exp
        path['visualization'] = os.path.join(exp, 'visualization')
        path['tb_logger'] = os.path.join(exp, 'tb_logger')
    else:
        res = path['results_root'] or os.path.join(root, 'results', opt['name'])
        res = res if os.path.isabs(res) else os.path.join(root, res)
        path['results_root'] = res
        path['log'] = res
        path['visualization'] = os.path.join(res, 'visualization')
    return opt


def load_options(opt_path, is_train=True, overrides=None, debug=False):
    """Read, override and validate a training option file. Raises OptionError on any problem."""
    raw = read_option_file(opt_path, overrides)
    if debug and is_train:
        raw['name'] = 'debug_' + str(raw.get('name', ''))
        raw.setdefault('val', {})['val_freq'] = 8
        raw.setdefault('logger', {}).update(print_freq=1, save_checkpoint_freq=8)
    opt = validate_options(raw, is_train=is_train)
    opt['opt_path'] = os.path.abspath(opt_path)
    return set_paths(opt)
