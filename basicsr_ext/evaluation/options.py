"""Test options of ``python test.py -opt options/test/<name>.yml``: schema, validation, JSON Schema.

Everything is checked before anything runs: unknown keys (with suggestions), missing folders and
checkpoints, architecture arguments (against the constructor), the scale each network builds,
model names used by the report. Relative paths are taken from the project root.
"""
import os

import torch
from basicsr.utils.registry import ARCH_REGISTRY

from ..archs.forward import measure_scale
from ..archs.meta import build_meta_network
from ..config import read_option_file, validate_kwargs
from ..config.json_schema import DRAFT, GENERATED, network_schema, refine, section_schema
from ..data.eval_degradations import DEGRADATIONS, PROTOCOLS, parse_degradation
from ..data.image_io import list_images
from ..data.skimage_photos_dataset import PHOTOS
from ..models.loading import read_arch_options
from ..utils.amp import check_amp
from ..utils.device import resolve_device
from ..utils.misc import did_you_mean
from ..utils.paths import PROJECT_ROOT
from ..utils.schema import Field, OptionError, describe, validate
from .real_sets import REAL_DATASET_FIELDS, check_synthetic_keys, validate_real_dataset
from .report import IMPROVEMENT
from .scoring import METRICS_SECTION, validate_metrics

__all__ = ['TEST_SCHEMA', 'MODEL_SCHEMA', 'DATASET_SCHEMA', 'resolve', 'validate_models', 'validate_test_options',
           'load_test_options', 'describe_options', 'test_options_json_schema']

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
    'dataroot_hr': Field(str, None, doc='folder of HR images (mod-cropped to the scale here); required except '
                         'for lr_only sets and synthetic sets with skimage_photos'),
    'skimage_photos': Field(list, None, item=Field(str, choices=PHOTOS),
                            doc='instead of dataroot_hr: these photos that scikit-image ships in its package (no '
                            'download, no data set), e.g. [chelsea, ihc]; copied to <cache_dir>/<name>/skimage_HR'),
    'dataroot_lr': Field((dict, str), None, doc='synthetic: existing LR folders per degradation, e.g. {clean: path}, '
                         "others are generated; paired / lr_only: the folder of captured LR images; '{scale}' in a "
                         'path is replaced by the scale'),
    **REAL_DATASET_FIELDS,
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
    'metrics': METRICS_SECTION,
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
                       '<degradations>); default: the numbers shipped in basicsr_ext/evaluation/paper_tables. The '
                       'comparison runs when paper_csv, paper_table or paper_configs is set'),
    'paper_table': Field(str, None, doc="compare with this table of the CSV only (e.g. 'T1')"),
    'paper_configs': Field(dict, {}, doc='our model name -> the CSV config, e.g. {SRResNet_dropout: Dropout}'),
    'paper_archs': Field(dict, {}, doc='our arch -> the CSV arch (MSRResNet -> SRResNet and RRDBNetAnyScale -> '
                         'RRDBNet are built in)'),
    'paper_datasets': Field(dict, {}, doc='our dataset name -> the CSV dataset name'),
}


# --------------------------------------------------------------------------- paths
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


# --------------------------------------------------------------------------- parts
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


def _folder_per_scale(path, where, scales, root):
    """A folder where '{scale}' stands for the scale: it must exist at every scale; resolved, '{scale}' kept."""
    for scale in scales:
        _require(str(path).replace('{scale}', str(scale)), where, 'folder', root)
    return resolve(path, root)


def _validate_dataset(d, where, degradations, scales, root, cache_dir):
    if not isinstance(d, dict):
        raise OptionError(f'{where}: expected a mapping with name and dataroot_hr, got {d!r}')
    d = validate(d, DATASET_SCHEMA, where)
    if d['type'] != 'synthetic':
        return validate_real_dataset(d, where, lambda path, w: _folder_per_scale(path, w, scales, root))
    check_synthetic_keys(d, where)
    if (d['dataroot_hr'] is None) == (d['skimage_photos'] is None):
        raise OptionError(f"{where}: give dataroot_hr (a folder of HR images) or skimage_photos (photos that "
                          f"scikit-image ships), not {'both' if d['dataroot_hr'] is not None else 'neither'}")
    if d['skimage_photos'] is not None:
        if not d['skimage_photos']:
            raise OptionError(f'{where}.skimage_photos: empty list; name photos among {", ".join(PHOTOS)}')
        d['dataroot_hr'] = os.path.join(cache_dir, d['name'], 'skimage_HR')  # testsets.prepare_dataset fills it
    else:
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
        lr[name] = _folder_per_scale(path, w, scales, root)
    d['dataroot_lr'] = lr
    return d


def _no_such_model(name, names, where):
    hint = did_you_mean(name, names) or f"; models are: {', '.join(names)}"
    return OptionError(f"{where}: no model named '{name}'{hint}")


# --------------------------------------------------------------------------- whole files
def validate_test_options(raw, root=PROJECT_ROOT):
    """Validate a raw test-options dict before anything runs; returns it complete, paths resolved."""
    if not isinstance(raw, dict):
        raise OptionError(f'options: expected a mapping at the top level, got {type(raw).__name__}')
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
    opt['cache_dir'] = resolve(opt['cache_dir'], root)
    opt['datasets'] = [
        _validate_dataset(d, f'datasets[{i}]', opt['degradations'], opt['scales'], root, opt['cache_dir'])
        for i, d in enumerate(opt['datasets'])
    ]
    names = [d['name'] for d in opt['datasets']]
    if len(set(names)) != len(names):
        raise OptionError(f'datasets: names must be unique, got {names}')
    validate_metrics(opt, lambda path: resolve(path, root))
    model_names = list(dict.fromkeys(m['name'] for m in opt['models']))
    for key in ('baseline', 'improvement'):
        if opt[key] is not None and opt[key] not in model_names:
            raise _no_such_model(opt[key], model_names, key)
    if opt['improvement'] is not None and opt['baseline'] is None:
        raise OptionError('improvement: needs a baseline to subtract; set baseline')
    if opt['baseline'] is not None and opt['improvement'] is None:
        others = [n for n in model_names if n != opt['baseline']]
        opt['improvement'] = others[-1] if others else None
    for key in ('paper_configs', ):
        for name in opt[key]:
            if name not in model_names:
                raise _no_such_model(name, model_names, f'{key}.{name}')
    if opt['paper_csv'] is not None:
        opt['paper_csv'] = _require(opt['paper_csv'], 'paper_csv', 'file', root)
    if opt['amp'] and opt['device'] == 'cpu':
        raise OptionError('amp: mixed precision needs a CUDA device, but device is cpu; set amp: false')
    if opt['device'] != 'auto':
        try:
            resolve_device(opt['device'])
        except ValueError as err:
            raise OptionError(f'device: {err}') from err
    opt['results_root'] = resolve(opt['results_root'] or os.path.join('results', opt['name']), root)
    return opt


def load_test_options(path, overrides=None, root=PROJECT_ROOT):
    """Read, override (``key:sub=value`` strings) and validate a test options file."""
    opt = validate_test_options(read_option_file(path, overrides), root)
    opt['opt_path'] = os.path.abspath(path)
    return opt


# --------------------------------------------------------------------------- documentation
def describe_options():
    """Rows (key, type, default, doc) of the test-options schema, for the docs."""
    return describe(TEST_SCHEMA) + describe(MODEL_SCHEMA, 'models[]') + describe(DATASET_SCHEMA, 'datasets[]')


def test_options_json_schema(archs):
    """The JSON Schema (draft-07) of test.py option files (options/test): models × datasets × degradations.

    ``archs``: the architectures whose constructor arguments are spelled out under ``models[].network_g``;
    other registered archs are accepted by name with any keys.
    """
    root = section_schema(TEST_SCHEMA)
    props = root['properties']
    model = section_schema(MODEL_SCHEMA)
    # network_g is a mapping or the path of an options file; the mapping keywords ignore strings and null
    model['properties']['network_g'] = refine(model['properties']['network_g'], **network_schema(archs))
    # validate_test_options refuses empty lists
    props['models'] = refine(props['models'], items=model, minItems=1)
    props['datasets'] = refine(props['datasets'], items=section_schema(DATASET_SCHEMA), minItems=1)
    return {
        '$schema': DRAFT,
        '$comment': GENERATED,
        'title': 'basicsr_ext test options',
        'description': 'Option file of test.py (benchmark tables); see docs/evaluation.md.',
        **root,
    }


test_options_json_schema.__test__ = False  # not a pytest test, whatever its name, when a test module imports it
