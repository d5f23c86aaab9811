"""Typed options: validated option dicts as frozen objects with the defaults filled in."""
import copy
import dataclasses
import pickle
from pathlib import Path

import pytest
from conftest import REPO

from basicsr_ext.config import (FrozenMapping, OptionError, TrainingOptions, load_options, read_option_file, set_paths,
                                typed, typed_training_options, validate_options, yaml_load)
from basicsr_ext.evaluation.options import DATASET_SCHEMA, MODEL_SCHEMA, TEST_SCHEMA
from basicsr_ext.utils.schema import Field, Section, validate

DEMO = REPO / 'options' / 'demo' / 'SRResNet_x4_demo.yml'
TRAINING_FILES = sorted((REPO / 'options' / 'train').rglob('*.yml')) + [DEMO]
TEST_FILES = sorted((REPO / 'options' / 'test').glob('*.yml'))


def _ids(paths):
    return [str(Path(p).relative_to(REPO / 'options')) for p in paths]


@pytest.fixture(scope='module')
def demo():
    return typed_training_options(validate_options(yaml_load(DEMO)))


def test_defaults_are_filled(demo):
    assert isinstance(demo, TrainingOptions)
    # none of these keys is in the demo file
    assert demo.train.check_finite is True and demo.train.grad_clip == 0.0 and demo.train.warmup_iter == -1
    assert demo.val.tile_size == 0 and demo.val.tile_pad == 16
    assert demo.logger.keep_checkpoints == 0 and demo.logger.plot_curves is True
    assert demo.dist_params.port == 29500 and demo.find_unused_parameters is False
    assert demo.val.metrics['psnr'].better == 'higher' and demo.val.metrics['psnr'].input_order == 'HWC'
    # keys the loader and train.py add, with their single-process defaults
    assert demo.is_train is True and demo.rank == 0 and demo.world_size == 1 and demo.dist is False


def test_nested_access_and_containers(demo):
    assert demo.name == 'SRResNet_x4_demo' and demo.scale == 4
    assert demo.logger.print_freq == 50
    assert demo.datasets['train'].gt_size == 96 and demo.datasets['train'].phase == 'train'
    assert demo.datasets['val'].scale == 4
    assert demo.network_g['type'] == 'MSRResNet' and isinstance(demo.network_g, FrozenMapping)
    assert demo.train.optim_g['betas'] == (0.9, 0.99)  # lists become tuples
    assert demo.train.regularizers == () and demo.degradation.gt_size == 64 and demo.degradation.gt_usm is False


def test_frozen(demo):
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo.train.grad_clip = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo.scale = 2
    with pytest.raises(TypeError):
        demo.network_g['num_feat'] = 8
    with pytest.raises(AttributeError):
        demo.network_g._data = {}
    assert copy.deepcopy(demo) == demo and hash(copy.deepcopy(demo)) == hash(demo)
    assert pickle.loads(pickle.dumps(demo.network_g)) == demo.network_g


def test_as_dict_gives_the_loaded_dict_back():
    opt = load_options(str(DEMO))
    plain = typed_training_options(opt).as_dict()
    assert plain == {'rank': 0, 'world_size': 1, 'local_rank': 0, 'dist': False, **opt}
    assert plain['path']['models'] == opt['path']['models']  # the folders set_paths adds are typed too
    assert typed_training_options({**opt, 'rank': 3}).rank == 3


def test_regularizer_entries_are_typed_by_their_options():
    raw = yaml_load(DEMO)
    raw['train']['regularizers'] = [{'type': 'Dropout', 'p': 0.7}]
    raw['degradation'] = {'type': 'HighOrderDegradation', 'gt_size': 64}
    opt = typed_training_options(validate_options(raw))
    dropout = opt.train.regularizers[0]
    assert type(dropout).__name__ == 'DropoutOptions'
    assert dropout.type == 'Dropout' and dropout.p == 0.7
    assert dropout.channel_wise is True and dropout.sites == ('last_conv_input', )  # defaults of Dropout.OPTIONS
    assert opt.degradation.gt_size == 64 and opt.degradation.gt_usm is True


def test_generic_typed_and_its_errors():
    schema = {'a': Field(int, 1), 'b': Field(list, [1, 2]), 'sub': Section({'x': Field(str, 'y')}),
              'free': Section({'type': Field(str, 'disk')}, open=True), 'need': Field(int)}
    obj = typed({'need': 3, 'free': {'any': 1}}, schema, 'Example')
    assert (obj.a, obj.b, obj.sub.x, obj.need) == (1, (1, 2), 'y', 3)
    assert obj.free == {'type': 'disk', 'any': 1}
    with pytest.raises(OptionError, match="^sub.xx: unknown key; did you mean 'x'\\?"):
        typed({'need': 3, 'sub': {'xx': 1}}, schema)
    with pytest.raises(OptionError, match='^need: missing required key'):
        typed({}, schema)


def test_an_empty_option_file_says_so(tmp_path):
    path = tmp_path / 'empty.yml'
    path.write_text('# nothing yet\n')
    with pytest.raises(OptionError, match=f'^{path}: the option file is empty$'):
        read_option_file(str(path))


def _stand_ins(raw, tmp_path):
    """Every dataroot / meta file / teacher path of a shipped file replaced by one that exists."""
    (tmp_path / 'images').mkdir(exist_ok=True)
    (tmp_path / 'meta_info.txt').write_text('')
    (tmp_path / 'teacher.pth').write_bytes(b'')
    for dopt in raw['datasets'].values():
        for key in list(dopt):
            if key.startswith('dataroot'):
                dopt[key] = str(tmp_path / 'images')
            elif key.startswith('meta_info'):
                dopt[key] = str(tmp_path / 'meta_info.txt')
    for reg in raw['train'].get('regularizers') or []:
        if 'teacher_path' in reg:
            reg['teacher_path'] = str(tmp_path / 'teacher.pth')
    if raw.get('path', {}).get('pretrain_network_g'):
        raw['path']['pretrain_network_g'] = str(tmp_path / 'teacher.pth')
    if raw['train'].get('perceptual_opt'):  # the GAN files' VGG19 weights
        raw['path']['pretrained_vgg'] = str(tmp_path / 'teacher.pth')
    return raw


@pytest.mark.parametrize('path', TRAINING_FILES, ids=_ids(TRAINING_FILES))
def test_every_shipped_training_file_converts(path, tmp_path):
    opt = set_paths(validate_options(_stand_ins(yaml_load(path), tmp_path)))
    typed_opt = typed_training_options(opt)
    assert typed_opt.scale == opt['scale']
    assert [r.type for r in typed_opt.train.regularizers] == [r['type'] for r in opt['train']['regularizers']]
    assert {k: v for k, v in typed_opt.as_dict().items() if k in opt} == opt


@pytest.mark.parametrize('path', TEST_FILES, ids=_ids(TEST_FILES))
def test_every_shipped_test_file_converts(path):
    raw = validate(yaml_load(path), TEST_SCHEMA)
    def items(schema, name):
        return lambda v, w: tuple(typed(x, schema, name, f'{w}[{i}]') for i, x in enumerate(v))

    converters = {'models': items(MODEL_SCHEMA, 'ModelOptions'), 'datasets': items(DATASET_SCHEMA, 'DatasetOptions')}
    opt = typed(raw, TEST_SCHEMA, 'TestOptions', converters=converters)
    assert opt.models[0].name == raw['models'][0]['name'] and opt.tile_pad == raw['tile_pad']
    # the items of the lists get their defaults too
    assert opt.as_dict() == {**raw, 'models': [validate(m, MODEL_SCHEMA) for m in raw['models']],
                             'datasets': [validate(d, DATASET_SCHEMA) for d in raw['datasets']]}


# ------------------------------------------------------------------- components type their own options (utils.typed)
def _one_image_folder(tmp_path):
    import cv2
    import numpy as np
    root = tmp_path / 'gt'
    root.mkdir()
    cv2.imwrite(str(root / 'a.png'), np.random.default_rng(0).integers(0, 256, (64, 72, 3), dtype=np.uint8))
    return root


def test_a_dataset_built_from_a_partial_dict_holds_frozen_options_with_the_defaults(tmp_path):
    from basicsr_ext.data.gt_only_dataset import GTOnlyDataset, GTOnlyDatasetOptions
    ds = GTOnlyDataset({'dataroot_gt': str(_one_image_folder(tmp_path)), 'crop_pad_size': 96})
    assert isinstance(ds.opt, GTOnlyDatasetOptions)
    assert ds.opt.crop_pad_size == 96 and ds.opt.small_image == 'pad' and ds.opt.on_bad_image == 'error'
    assert ds.opt.io_backend['type'] == 'disk' and ds.opt.kernel_list[0] == 'iso'
    assert ds.kernels.opt.final_sinc_prob == GTOnlyDataset.OPTIONS['final_sinc_prob'].default == 0.8
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.opt.crop_pad_size = 10
    assert ds[0]['gt'].shape == (3, 96, 96)


def test_a_dataset_checks_a_dict_handed_to_it_as_an_option_file_would(tmp_path):
    from basicsr_ext.data.gt_only_dataset import GTOnlyDataset
    from basicsr_ext.data.paired_dataset import PairedDataset
    root = str(_one_image_folder(tmp_path))
    with pytest.raises(OptionError, match=r"^crop_pad_sise: unknown key; did you mean 'crop_pad_size'\?"):
        GTOnlyDataset({'dataroot_gt': root, 'crop_pad_sise': 96})
    with pytest.raises(OptionError, match=r'^dataroot_lq: missing required key'):
        PairedDataset({'dataroot_gt': root})
    with pytest.raises(OptionError, match=r"^small_image: 'crop' is not one of \['pad', 'error'\]"):
        GTOnlyDataset({'dataroot_gt': root, 'small_image': 'crop'})


def test_typed_dataset_options_pickle_for_spawned_loader_workers(tmp_path):
    import numpy as np
    import random
    import torch
    from basicsr_ext.data.skimage_photos_dataset import SkimagePhotosDataset
    ds = SkimagePhotosDataset({'photos': ['astronaut'], 'gt_size': 32, 'kernels': True, 'blur_kernel_size': 9})
    copy_ = pickle.loads(pickle.dumps(ds))
    assert copy_.opt == ds.opt and type(copy_.opt) is type(ds.opt) and copy_.kernels.opt == ds.kernels.opt
    items = []
    for d in (ds, copy_):
        random.seed(3)
        np.random.seed(3)
        items.append(d[0])
    assert all(torch.equal(items[0][k], items[1][k]) for k in ('gt', 'kernel1', 'kernel2', 'sinc_kernel'))


def test_kernel_options_take_their_keys_only_and_check_the_pairs():
    from basicsr_ext.data.gt_only_dataset import KERNEL_OPTIONS, RealESRGANKernels
    kernels = RealESRGANKernels({'gt_size': 64, 'sinc_prob2': 0.5})  # other keys of a dataset are ignored
    assert kernels.opt.sinc_prob2 == 0.5 and kernels.opt.blur_sigma2 == tuple(KERNEL_OPTIONS['blur_sigma2'].default)
    with pytest.raises(OptionError, match=r'^kernel_prob2: 2 weights for 6 kernel_list2 entries'):
        RealESRGANKernels({'kernel_prob2': [0.5, 0.5]})


@pytest.mark.filterwarnings('ignore:This DataLoader will create')  # no worker starts: the loader is not iterated
def test_the_train_loader_fills_absent_loader_keys_from_the_schema():
    from basicsr_ext.data import LOADER_OPTIONS, build_train_loader
    from basicsr_ext.data.skimage_photos_dataset import SkimagePhotosDataset
    ds = SkimagePhotosDataset({'photos': ['astronaut'], 'gt_size': 32})
    loader, sampler = build_train_loader(ds, {'batch_size_per_gpu': 2, 'pin_memory': None}, seed=0)
    assert loader.batch_size == 2 and loader.num_workers == LOADER_OPTIONS['num_worker_per_gpu'].default == 4
    assert loader.pin_memory is False and loader.persistent_workers is False
    with pytest.raises(OptionError, match=r'^batch_size_per_gpu: 0 is below the minimum 1'):
        build_train_loader(ds, {'batch_size_per_gpu': 0}, seed=0)


def test_a_regularizer_holds_frozen_options_with_the_defaults():
    from basicsr.archs.srresnet_arch import MSRResNet
    from basicsr_ext.archs import get_sites
    from basicsr_ext.regularizers import REGULARIZER_REGISTRY
    from basicsr_ext.regularizers.adaptive_dropout import AdaptiveDropout
    sites = get_sites(MSRResNet(num_feat=8, num_block=2, upscale=4))
    dropout = REGULARIZER_REGISTRY.get('Dropout')({'p': 0.3}, sites, 100)
    assert dropout.opt.p == 0.3 and dropout.opt.sites == ('last_conv_input', ) and dropout.opt.channel_wise is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        dropout.opt.p = 0.5
    ad = AdaptiveDropout({'type': 'AdaptiveDropout', 'interval': 'auto'}, sites, 1000)  # 'type' is not an option
    assert ad.opt.final == AdaptiveDropout.OPTIONS['final'].default and ad.interval >= 1
    with pytest.raises(OptionError, match=r"^Dropout\.pp: unknown key; did you mean 'p'\?"):
        REGULARIZER_REGISTRY.get('Dropout')({'pp': 0.3}, sites, 100)


def test_the_degradation_holds_frozen_options_that_pickle():
    from basicsr_ext.data.degradation import HighOrderDegradation
    from basicsr_ext.data.degradation.pipeline import DegradationOptions
    deg = HighOrderDegradation({'gt_size': 64, 'debug_grid': {'every': 5}}, 4)
    assert isinstance(deg.opt, DegradationOptions)
    assert deg.opt.gt_size == 64 and deg.opt.resize_range == (0.15, 1.5) and deg.opt.queue_size == 0
    assert deg.opt.debug_grid.every == 5 and deg.opt.debug_grid.num == 8
    assert pickle.loads(pickle.dumps(deg.opt)) == deg.opt
    with pytest.raises(OptionError, match=r"^degradation\.gt_sise: unknown key; did you mean 'gt_size'\?"):
        HighOrderDegradation({'gt_sise': 64}, 4)


def test_loader_settings_type_a_sections_loader_keys_only():
    from basicsr_ext.data import loader_settings
    settings = loader_settings({'type': 'PairedImageDataset', 'dataroot_gt': 'x', 'prefetch_mode': 'cuda'})
    assert settings.prefetch_mode == 'cuda' and settings.batch_size_per_gpu == 16 and settings.pin_memory is None
    assert loader_settings({}).prefetch_mode is None
    with pytest.raises(OptionError, match=r"^prefetch_mode: 'gpu' is not one of \[None, 'cpu', 'cuda'\]"):
        loader_settings({'prefetch_mode': 'gpu'})
