"""Benchmark evaluation behind ``python test.py -opt options/test/<name>.yml``.

Models (networks from checkpoints, or the bicubic pseudo-model) are evaluated on
datasets × degradations × scales, and the results are laid out as in the papers: per
dataset a block with one row per model, one column per degradation, and an Improvement
row (see :mod:`basicsr_ext.metrics.report`).

Two protocols (docs/methods.md §1.4-1.5, §2.3, §5):

* ``reflash`` (Reflash Dropout, Adaptive Dropout, EATS): LR sets made with PIL bicubic and
  the 8 test degradations; PSNR on RGB, crop 4.
* ``matlab`` (ECO, classical SR): MATLAB-style ``imresize`` clean LR; PSNR on Y, crop = scale.

Metrics are basicsr's ``calculate_psnr`` / ``calculate_ssim`` on uint8 outputs rounded by
basicsr's ``tensor2img``, as the authors computed them. Missing LR sets are generated with
:mod:`basicsr_ext.data.test_degradations` into ``cache_dir`` and reused afterwards.
"""
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import ARCH_REGISTRY
from PIL import Image
from tqdm import tqdm

from ..data.image_io import ImageTooSmallError, list_images, read_image
from ..data.test_degradations import (DEGRADATIONS, PROTOCOLS, generate_testsets, mod_crop, parse_degradation,
                                      read_hr_image, set_dirname)
from ..utils.inference import (ScaleMismatchError, check_amp, check_input_size, forward_batches, load_network,
                               measure_scale, read_arch_options, resolve_device)
from ..utils.options import PROJECT_ROOT, build_meta_network, read_option_file, validate_kwargs
from ..utils.schema import Field, OptionError, Section, validate

__all__ = ['TEST_SCHEMA', 'MODEL_SCHEMA', 'DATASET_SCHEMA', 'validate_test_options', 'validate_models',
           'load_test_options', 'BicubicModel', 'NetworkModel', 'prepare_dataset', 'evaluate', 'run_benchmark']

logger = logging.getLogger('basicsr_ext.test')

IMPROVEMENT = 'Improvement'

MODEL_SCHEMA = {
    'name': Field(str, doc='row label in the tables (e.g. Original, Dropout, EATS)'),
    'type': Field(str, 'network', choices=('network', 'bicubic'),
                  doc="'network' (a checkpoint) or 'bicubic' (bicubic upsampling, no network)"),
    'network_g': Field((dict, str), None,
                       doc='architecture: {type: <registered arch>, ...kwargs}, or the path of an options YAML '
                       'whose network_g section (or top-level mapping) is used'),
    'path': Field(str, None, doc='checkpoint (.pth) of a network model'),
    'param_key': Field(str, 'params', choices=('params', 'params_ema', 'auto'),
                       doc="weights in the checkpoint; the reflash protocol uses 'params' (non-EMA); "
                       "'auto' = params_ema if present"),
    'scale': Field(int, None, min=1, doc='expected scale; checked against the network (default: what it does)'),
    'strict': Field(bool, True, doc='refuse checkpoints with missing/unexpected keys'),
    'mode': Field(str, 'auto', choices=('auto', 'matlab', 'pil'),
                  doc="bicubic pseudo-model only: 'matlab' (basicsr imresize), 'pil', or 'auto' = by protocol"),
}

DATASET_SCHEMA = {
    'name': Field(str, doc='dataset name (table block title, cache folder)'),
    'dataroot_hr': Field(str, doc='folder of HR images (mod-cropped to the scale here)'),
    'dataroot_lr': Field(dict, None, doc='existing LR folders per degradation, e.g. {clean: path}; '
                         "'{scale}' in a path is replaced by the scale; others are generated"),
}


def _check_device(value, where):
    if value == 'auto':
        return
    try:
        torch.device(value)
    except (RuntimeError, ValueError) as err:
        raise OptionError(f"{where}: '{value}' is not a device ({err}); use auto, cpu, cuda or cuda:N") from err


TEST_SCHEMA = {
    'name': Field(str, doc='run name; results go to results/<name>/'),
    'models': Field(list, doc='models to evaluate (see models[] keys)'),
    'datasets': Field(list, doc='datasets: [{name, dataroot_hr, dataroot_lr}]'),
    'degradations': Field((list, str), 'all', doc="degradation specs ('clean', 'b+n', 'b3+n10+j30', ...) or 'all'"),
    'scales': Field(list, None, item=int, doc='scales to evaluate (default: the models\' scales, or [4])'),
    'protocol': Field(str, 'reflash', choices=PROTOCOLS, doc="'reflash' (PIL bicubic) or 'matlab' (imresize)"),
    'seed': Field(int, 0, doc='noise seed of generated sets (per image, see test_degradations.image_seed)'),
    'cache_dir': Field(str, 'datasets/testsets', doc='generated LR sets: <cache_dir>/<dataset>/x<scale>/<set>/ '
                       '(the layout of scripts/generate_degraded_testsets.py, whose sets are reused)'),
    'workers': Field(int, 1, min=1, doc='processes generating missing LR sets'),
    'results_root': Field(str, None, doc='output folder (default results/<name>)'),
    'metrics': Section({
        'psnr': Field(bool, True, doc='PSNR (basicsr calculate_psnr)'),
        'ssim': Field(bool, True, doc='SSIM (basicsr calculate_ssim)'),
    }, doc='metrics to compute (LPIPS is not offered: it needs downloaded weights)'),
    'crop_border': Field(int, None, min=0, doc='pixels cut from each border before the metrics (default: scale)'),
    'test_y_channel': Field(bool, False, doc='metrics on Y of YCbCr (matlab/ECO) instead of RGB (reflash/EATS)'),
    'save_images': Field(bool, False, doc='write the SR images under results/<name>/visualization/'),
    'tile_size': Field(int, 0, min=0, doc='tiled inference: tile size in LR pixels (0: whole images)'),
    'tile_pad': Field(int, 16, min=0, doc='tiled inference: context around each tile, in LR pixels'),
    'batch_same_size': Field(bool, True, doc='run same-size LR images of a set in one batch'),
    'batch_size': Field(int, 8, min=1, doc='largest batch when batch_same_size is on'),
    'amp': Field((bool, str), False, check=check_amp, doc="autocast on CUDA: false, true (= fp16), 'fp16', 'bf16'"),
    'device': Field(str, 'auto', check=_check_device, doc='auto, cpu, cuda, cuda:N'),
    'num_threads': Field(int, None, min=1, doc='CPU threads of torch (default: torch\'s own, one per core)'),
    'baseline': Field(str, None, doc='model name the Improvement row subtracts'),
    'improvement': Field(str, None, doc='model name of the Improvement row (default: the last model that is '
                         'not the baseline)'),
    'plot': Field(bool, True, doc='write plot_<dataset>_x<scale>.png'),
    'progress': Field(bool, True, doc='show progress bars'),
    'paper_csv': Field(str, None, doc='published table CSV to compare with (columns table,arch,scale,dataset,config,'
                       '<degradations>)'),
    'paper_table': Field(str, None, doc="compare with this table of the CSV only (e.g. 'T1')"),
    'paper_configs': Field(dict, {}, doc='our model name -> the CSV config, e.g. {SRResNet_dropout: Dropout}'),
    'paper_archs': Field(dict, {}, doc='our arch -> the CSV arch (MSRResNet -> SRResNet and RRDBNetAnyScale -> '
                         'RRDBNet are built in)'),
    'paper_datasets': Field(dict, {}, doc='our dataset name -> the CSV dataset name'),
}


# --------------------------------------------------------------------------- option validation
def resolve(path, root=PROJECT_ROOT):
    """Relative option paths are taken from the project root, so results do not depend on the CWD."""
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(str(root), path))


def _require(path, where, kind, root):
    full = resolve(path, root)
    ok = os.path.isdir(full) if kind == 'folder' else os.path.isfile(full)
    if not ok:
        rel = '' if os.path.isabs(os.path.expanduser(str(path))) else \
            f" (relative paths are resolved against the project root '{root}')"
        raise OptionError(f"{where}: {kind} '{path}' does not exist{rel}")
    return full


def _degradation_list(value):
    items = [d.strip() for d in value.split(',')] if isinstance(value, str) else list(value)
    names = []
    for i, spec in enumerate(items):
        if spec == 'all':
            specs = DEGRADATIONS
        else:
            specs = [spec]
        for s in specs:
            try:
                name = parse_degradation(s).name
            except (ValueError, TypeError) as err:
                raise OptionError(f'degradations[{i}]: {err}') from err
            if name not in names:
                names.append(name)
    if not names:
        raise OptionError('degradations: empty list')
    return names


def _network_options(value, where, root):
    if isinstance(value, str):
        value = _require(value, where, 'file', root)
    try:
        net_opt = read_arch_options(value)
    except (ValueError, FileNotFoundError) as err:
        raise OptionError(f'{where}: {err}') from err
    net_opt = validate_kwargs(net_opt, ARCH_REGISTRY.get(net_opt['type']), where)
    try:
        meta = build_meta_network(net_opt)
    except Exception as err:  # the constructor's own message is the useful part
        raise OptionError(f"{where}: cannot build {net_opt['type']}: {err}") from err
    return net_opt, meta


def _validate_model(m, where, root):
    if not isinstance(m, dict):
        raise OptionError(f'{where}: expected a mapping with a name, got {m!r}')
    m = validate(m, MODEL_SCHEMA, where)
    if m['name'] == IMPROVEMENT:
        raise OptionError(f"{where}.name: '{IMPROVEMENT}' is reserved for the improvement row")
    if m['type'] == 'bicubic':
        for key in ('network_g', 'path'):
            if m[key] is not None:
                raise OptionError(f'{where}.{key}: not used by the bicubic pseudo-model (type: bicubic)')
        m['arch'] = 'Bicubic'
        return m
    for key, doc in (('network_g', 'the architecture'), ('path', 'the checkpoint')):
        if m[key] is None:
            raise OptionError(f'{where}.{key}: missing required key ({doc}; or set type: bicubic)')
    m['network_g'], meta = _network_options(m['network_g'], f'{where}.network_g', root)
    m['path'] = _require(m['path'], f'{where}.path', 'file', root)
    m['arch'] = m['network_g']['type']
    built = measure_scale(meta, 'meta')
    if m['scale'] is not None and built is not None and built != m['scale']:
        raise OptionError(f"{where}.scale: {m['scale']}, but network_g builds a ×{built:g} {m['arch']}; "
                          f"set the network's upscale/scale argument to {m['scale']}")
    if m['scale'] is None:
        if built is None or not float(built).is_integer():
            raise OptionError(f'{where}.scale: cannot tell the scale of {m["arch"]} without running it; set scale')
        m['scale'] = int(built)
    return m


def validate_models(models, root=PROJECT_ROOT):
    """Validate a ``models`` list on its own, as test.py does (tools that read models but no datasets)."""
    if not isinstance(models, list):
        raise OptionError(f'models: expected a list of models, got {type(models).__name__}')
    if not models:
        raise OptionError('models: at least one model is needed')
    return [_validate_model(m, f'models[{i}]', root) for i, m in enumerate(models)]


def _validate_dataset(d, where, degradations, scales, root):
    if not isinstance(d, dict):
        raise OptionError(f'{where}: expected a mapping with name and dataroot_hr, got {d!r}')
    d = validate(d, DATASET_SCHEMA, where)
    d['dataroot_hr'] = _require(d['dataroot_hr'], f'{where}.dataroot_hr', 'folder', root)
    if not list_images(d['dataroot_hr']):
        raise OptionError(f"{where}.dataroot_hr: no images in folder '{d['dataroot_hr']}'")
    lr = {}
    for key, path in (d['dataroot_lr'] or {}).items():
        w = f'{where}.dataroot_lr.{key}'
        try:
            name = parse_degradation(str(key)).name
        except ValueError as err:
            raise OptionError(f'{w}: {err}') from err
        if name not in degradations:
            raise OptionError(f'{w}: {name!r} is not among the evaluated degradations {degradations}')
        for scale in scales:
            _require(str(path).replace('{scale}', str(scale)), w, 'folder', root)
        lr[name] = resolve(path, root)
    d['dataroot_lr'] = lr
    return d


def _suggest(name, names, where):
    import difflib
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; models are: {', '.join(names)}"
    return OptionError(f"{where}: no model named '{name}'{hint}")


def validate_test_options(raw, root=PROJECT_ROOT):
    """Validate a raw test-options dict before anything runs; returns it complete, paths resolved."""
    if not isinstance(raw, dict):
        raise OptionError(f'options: expected a mapping at the top level, got {type(raw).__name__}')
    metrics = raw.get('metrics')
    if isinstance(metrics, dict) and 'lpips' in metrics:
        raise OptionError('metrics.lpips: LPIPS is not offered (it needs network weights downloaded at run time); '
                          'see docs/evaluation.md')
    opt = validate(raw, TEST_SCHEMA)
    if '/' in opt['name'] or opt['name'] in ('', '.', '..'):
        raise OptionError(f"name: {opt['name']!r} cannot be a folder name")
    opt['degradations'] = _degradation_list(opt['degradations'])
    opt['models'] = validate_models(opt['models'], root)
    net_scales = sorted({m['scale'] for m in opt['models'] if m['scale'] is not None})
    if opt['scales'] is None:
        opt['scales'] = net_scales or [4]
    if not opt['scales'] or any(s < 1 for s in opt['scales']):
        raise OptionError(f"scales: expected positive integers, got {opt['scales']}")
    for i, m in enumerate(opt['models']):
        if m['scale'] is not None and m['scale'] not in opt['scales']:
            raise OptionError(f"models[{i}] ({m['name']}): a ×{m['scale']} model, but scales is {opt['scales']}; "
                              f"add {m['scale']} to scales or remove the model")
    seen = set()
    for i, m in enumerate(opt['models']):
        for s in ([m['scale']] if m['scale'] is not None else opt['scales']):
            if (m['name'], s) in seen:
                raise OptionError(f"models[{i}].name: '{m['name']}' is used twice at ×{s}")
            seen.add((m['name'], s))
    if not opt['datasets']:
        raise OptionError('datasets: at least one dataset is needed')
    opt['datasets'] = [
        _validate_dataset(d, f'datasets[{i}]', opt['degradations'], opt['scales'], root)
        for i, d in enumerate(opt['datasets'])
    ]
    names = [d['name'] for d in opt['datasets']]
    if len(set(names)) != len(names):
        raise OptionError(f'datasets: names must be unique, got {names}')
    model_names = list(dict.fromkeys(m['name'] for m in opt['models']))
    for key in ('baseline', 'improvement'):
        if opt[key] is not None and opt[key] not in model_names:
            raise _suggest(opt[key], model_names, key)
    if opt['improvement'] is not None and opt['baseline'] is None:
        raise OptionError('improvement: needs a baseline to subtract; set baseline')
    if opt['baseline'] is not None and opt['improvement'] is None:
        others = [n for n in model_names if n != opt['baseline']]
        opt['improvement'] = others[-1] if others else None
    for key in ('paper_configs', ):
        for name in opt[key]:
            if name not in model_names:
                raise _suggest(name, model_names, f'{key}.{name}')
    if opt['paper_csv'] is not None:
        opt['paper_csv'] = _require(opt['paper_csv'], 'paper_csv', 'file', root)
    if opt['amp'] and opt['device'] == 'cpu':
        raise OptionError('amp: mixed precision needs a CUDA device, but device is cpu; set amp: false')
    if opt['device'] != 'auto':
        try:
            resolve_device(opt['device'])
        except ValueError as err:
            raise OptionError(f'device: {err}') from err
    opt['cache_dir'] = resolve(opt['cache_dir'], root)
    opt['results_root'] = resolve(opt['results_root'] or os.path.join('results', opt['name']), root)
    return opt


def load_test_options(path, overrides=None, root=PROJECT_ROOT):
    """Read, override (``key:sub=value`` strings) and validate a test options file."""
    opt = validate_test_options(read_option_file(path, overrides), root)
    opt['opt_path'] = os.path.abspath(path)
    return opt


# --------------------------------------------------------------------------- models
_PIL_BICUBIC = getattr(Image, 'Resampling', Image).BICUBIC


class BicubicModel:
    """Bicubic upsampling of the uint8 LR, as the 'Bicubic' rows of SR papers.

    ``mode='matlab'``: basicsr's MATLAB-compatible ``imresize`` on the [0, 1] float image,
    rounded to uint8 (the textbook Set5 ×4 value, 28.42 dB on Y, comes from this);
    ``mode='pil'``: Pillow's bicubic, the resampler of the reflash protocol.
    """

    def __init__(self, name, mode='matlab'):
        self.name, self.mode, self.arch, self.scale = name, mode, 'Bicubic', None

    def upscale(self, lr, scale):
        h, w = lr.shape[:2]
        if self.mode == 'pil':
            return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), _PIL_BICUBIC))
        out = imresize(lr.astype(np.float32) / 255., scale, antialiasing=True)[:h * scale, :w * scale]
        return np.clip(np.round(out * 255.), 0, 255).astype(np.uint8)

    def run(self, lrs, scale):
        for i, lr in enumerate(lrs):
            yield i, self.upscale(lr, scale)


class NetworkModel:
    """A network loaded from a checkpoint, run with padding/tiling/batching; uint8 RGB in and out."""

    def __init__(self, mopt, device, opt):
        self.name, self.arch, self.scale = mopt['name'], mopt['arch'], mopt['scale']
        self.device, self.opt = device, opt
        self.net, _ = load_network(mopt['network_g'], mopt['path'], mopt['param_key'], mopt['scale'], device,
                                   mopt['strict'])

    def check_size(self, lr, name):
        check_input_size(self.net, lr.shape[0], lr.shape[1], name=name)

    def run(self, lrs, scale):
        tensors = [torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float().div_(255.) for lr in lrs]
        o = self.opt
        batch = o['batch_size'] if o['batch_same_size'] else 1
        for i, out in forward_batches(self.net, tensors, scale, batch, o['tile_size'], o['tile_pad'], self.device,
                                      o['amp']):
            yield i, tensor2img(out, rgb2bgr=False)


def build_models(opt, device):
    models = []
    for i, m in enumerate(opt['models']):
        if m['type'] == 'bicubic':
            mode = m['mode'] if m['mode'] != 'auto' else ('matlab' if opt['protocol'] == 'matlab' else 'pil')
            models.append(BicubicModel(m['name'], mode))
            continue
        try:
            models.append(NetworkModel(m, device, opt))
        except ScaleMismatchError as err:
            raise OptionError(f"models[{i}] ({m['name']}): {err}") from err
        except (ValueError, RuntimeError, FileNotFoundError) as err:  # CheckpointMismatchError is a RuntimeError
            raise OptionError(f"models[{i}] ({m['name']}): {err}") from err
    return models


# --------------------------------------------------------------------------- data
def _stems(folder):
    return {Path(p).stem: os.path.join(folder, p) for p in list_images(folder)}


def _cache_root(opt, dataset):
    suffix = f"_seed{opt['seed']}" if opt['seed'] else ''
    return os.path.join(opt['cache_dir'], dataset['name'] + suffix)


def _set_complete(folder, stems, meta):
    """Is ``folder`` a finished set for these HR images? Our marker says so, or (a set written by
    scripts/generate_degraded_testsets.py, same generator) every file is there."""
    if not all(os.path.isfile(os.path.join(folder, f'{s}.png')) for s in stems):
        return False
    marker = os.path.join(folder, '.complete.json')
    if not os.path.isfile(marker):
        return meta['seed'] == 0
    try:
        with open(marker, encoding='utf-8') as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return info.get('stems') == sorted(stems) and all(info.get(k) == v for k, v in meta.items())


def _mark_complete(folder, stems, meta):
    with open(os.path.join(folder, '.complete.json'), 'w', encoding='utf-8') as f:
        json.dump({'stems': sorted(stems), **meta}, f)


def _match_lr(folder, stem, scale):
    """LR file of ``stem``: same stem, or with the common ``x4`` / ``_x4`` suffixes."""
    files = _stems(folder)
    for cand in (stem, f'{stem}x{scale}', f'{stem}_x{scale}', f'{stem}_X{scale}'):
        if cand in files:
            return files[cand]
    return None


def prepare_dataset(opt, dataset, scale):
    """Make sure every LR set of ``dataset`` at ``scale`` exists; return where the files are.

    Returns:
        (gt, sets): ``gt`` maps stem -> GT source ``(path, kind)`` with kind 'cached' (mod-cropped
        RGB written by the generator) or 'hr' (read and mod-cropped here); ``sets`` maps
        degradation -> {stem: LR path}.
    """
    hr_stems = _stems(dataset['dataroot_hr'])
    user = {d: p.replace('{scale}', str(scale)) for d, p in dataset['dataroot_lr'].items()}
    todo = [d for d in opt['degradations'] if d not in user]
    root = os.path.join(_cache_root(opt, dataset), f'x{scale}')
    meta = {'seed': opt['seed'], 'protocol': opt['protocol'], 'scale': scale, 'hr': dataset['dataroot_hr']}
    missing = [d for d in todo if not _set_complete(os.path.join(root, set_dirname(d, opt['protocol'])), hr_stems, meta)]
    if todo and not _set_complete(os.path.join(root, 'HR'), hr_stems, meta):
        missing = todo
    if missing:
        logger.info(f"{dataset['name']} x{scale}: generating {', '.join(missing)} ({opt['protocol']}) in {root}")
        generate_testsets(dataset['dataroot_hr'], _cache_root(opt, dataset), scale=scale, degradations=missing,
                          seed=opt['seed'], protocol=opt['protocol'], workers=opt['workers'],
                          progress=opt['progress'])
        for d in missing:
            _mark_complete(os.path.join(root, set_dirname(d, opt['protocol'])), hr_stems, meta)
        _mark_complete(os.path.join(root, 'HR'), hr_stems, meta)
    elif todo:
        logger.info(f"{dataset['name']} x{scale}: reusing cached sets in {root}")
    sets = {}
    for d in opt['degradations']:
        if d in user:
            files = {}
            for stem in hr_stems:
                path = _match_lr(user[d], stem, scale)
                if path is None:
                    raise FileNotFoundError(f"{dataset['name']}: no LR image for '{stem}' in '{user[d]}' "
                                            f'(looked for {stem}, {stem}x{scale}, {stem}_x{scale})')
                files[stem] = path
            sets[d] = files
        else:
            folder = os.path.join(root, set_dirname(d, opt['protocol']))
            sets[d] = {stem: os.path.join(folder, f'{stem}.png') for stem in hr_stems}
    gt = {stem: (os.path.join(root, 'HR', f'{stem}.png'), 'cached') if todo else (path, 'hr')
          for stem, path in hr_stems.items()}
    return gt, sets


def _read_gt(source, scale):
    path, kind = source
    if kind == 'cached':
        return read_image(path, float32=False, order='rgb')
    hr = mod_crop(read_hr_image(path), scale)
    return np.repeat(hr[:, :, None], 3, axis=2) if hr.ndim == 2 else hr


def _check_sizes(dataset, stem, gt, lr, scale, crop):
    h, w = gt.shape[:2]
    if lr.shape[0] * scale != h or lr.shape[1] * scale != w:
        raise ValueError(f"{dataset}: LR '{stem}' is {lr.shape[0]}x{lr.shape[1]} but its mod-cropped HR is {h}x{w}; "
                         f'expected {h // scale}x{w // scale} at ×{scale}')
    if min(h, w) <= 2 * crop:
        raise ImageTooSmallError(f"{dataset}: image '{stem}' is {h}x{w} (HxW) at ×{scale}; the metrics with "
                                 f'crop_border {crop} need the HR larger than {2 * crop}x{2 * crop}')


# --------------------------------------------------------------------------- evaluation
def _metrics(sr, gt, opt, crop):
    # basicsr's Y conversion expects BGR; RGB metrics do not depend on channel order
    sr, gt = sr[:, :, ::-1], gt[:, :, ::-1]
    out = {}
    if opt['metrics']['psnr']:
        out['psnr'] = float(calculate_psnr(sr, gt, crop, test_y_channel=opt['test_y_channel']))
    if opt['metrics']['ssim']:
        out['ssim'] = float(calculate_ssim(sr, gt, crop, test_y_channel=opt['test_y_channel']))
    return out


def _save_image(opt, dataset, scale, deg, model, stem, sr):
    import cv2
    folder = os.path.join(opt['results_root'], 'visualization', f'{dataset}_x{scale}', deg, model)
    os.makedirs(folder, exist_ok=True)
    cv2.imwrite(os.path.join(folder, f'{stem}.png'), sr[:, :, ::-1])


def evaluate(opt, models=None, device=None):
    """Run every model on every (dataset, scale, degradation).

    Loop order is dataset -> scale -> degradation -> model, so each LR set is read once.

    Returns:
        (records, timing): one dict per image and model with its metrics; and seconds spent
        preparing sets (generating, reading) and, per model, running it (``inference_s``,
        including the uint8 conversion) and scoring its outputs (``metrics_s``).
    """
    device = device or resolve_device(opt['device'])
    models = models if models is not None else build_models(opt, device)
    records = []
    timing = {'prepare_s': 0.0, 'models': {m.name: {'inference_s': 0.0, 'metrics_s': 0.0, 'images': 0}
                                           for m in models}}
    for dataset in opt['datasets']:
        for scale in opt['scales']:
            active = [m for m in models if m.scale in (None, scale)]
            if not active:
                continue
            crop = scale if opt['crop_border'] is None else opt['crop_border']
            t0 = time.perf_counter()
            gt_src, sets = prepare_dataset(opt, dataset, scale)
            gts = {stem: _read_gt(src, scale) for stem, src in gt_src.items()}
            timing['prepare_s'] += time.perf_counter() - t0
            total = len(gts) * len(sets) * len(active)
            bar = tqdm(total=total, unit='img', desc=f"{dataset['name']} x{scale}", disable=not opt['progress'])
            for deg, files in sets.items():
                t0 = time.perf_counter()
                stems = list(files)
                lrs = [read_image(files[s], float32=False, order='rgb') for s in stems]
                for stem, lr in zip(stems, lrs):
                    _check_sizes(dataset['name'], stem, gts[stem], lr, scale, crop)
                timing['prepare_s'] += time.perf_counter() - t0
                for model in active:
                    if hasattr(model, 'check_size'):
                        for stem, lr in zip(stems, lrs):
                            model.check_size(lr, f"{dataset['name']}/{deg}/{stem}")
                    bar.set_postfix_str(f'{deg} {model.name}')
                    t = timing['models'][model.name]
                    t0 = time.perf_counter()
                    for i, sr in model.run(lrs, scale):
                        t1 = time.perf_counter()
                        t['inference_s'] += t1 - t0
                        stem = stems[i]
                        rec = {'model': model.name, 'arch': model.arch, 'dataset': dataset['name'], 'scale': scale,
                               'degradation': deg, 'image': stem, **_metrics(sr, gts[stem], opt, crop)}
                        records.append(rec)
                        if opt['save_images']:
                            _save_image(opt, dataset['name'], scale, deg, model.name, stem, sr)
                        bar.update()
                        t0 = time.perf_counter()
                        t['metrics_s'] += t0 - t1
                    t['images'] += len(lrs)
            bar.close()
    return records, timing


def run_benchmark(opt):
    """Evaluate, then write the tables, plots and (if ``paper_csv``) the comparison; returns the tables."""
    from . import report
    device = resolve_device(opt['device'])
    if opt['num_threads']:
        torch.set_num_threads(opt['num_threads'])
    if opt['amp'] and device.type != 'cuda':
        logger.warning(f'amp: ignored, the device is {device} (mixed precision is CUDA-only)')
        opt = {**opt, 'amp': False}
    logger.info(f'device: {device}')
    models = build_models(opt, device)
    t0 = time.perf_counter()
    records, timing = evaluate(opt, models, device)
    timing['evaluate_s'] = time.perf_counter() - t0
    timing['device'] = str(device)
    for name, t in timing['models'].items():
        logger.info(f"{name}: {t['images']} images, inference {t['inference_s']:.1f} s "
                    f"({t['images'] / max(t['inference_s'], 1e-9):.2f} img/s), metrics {t['metrics_s']:.1f} s")
    tables = report.write_all(opt, records, timing)
    if opt['paper_csv']:
        from . import paper_compare
        text = paper_compare.compare_files(
            os.path.join(opt['results_root'], 'table.csv'), opt['paper_csv'], table=opt['paper_table'],
            configs=opt['paper_configs'], archs=opt['paper_archs'], datasets=opt['paper_datasets'],
            out_prefix=os.path.join(opt['results_root'], 'paper_comparison'))
        tables['paper_comparison'] = text
    return tables


def describe_options():
    """Rows (key, type, default, doc) of the test-options schema, for the docs."""
    from ..utils.schema import describe
    return describe(TEST_SCHEMA) + describe(MODEL_SCHEMA, 'models[]') + describe(DATASET_SCHEMA, 'datasets[]')
