"""NIQE (NaN with a note where basicsr's fails), LPIPS and DISTS (backbones from local files only), and the
training validation accepting them by their registered names."""
import copy

import numpy as np
import pytest
import skimage.data
import torch
import torchvision
from basicsr.metrics import calculate_metric
from basicsr.metrics.niqe import calculate_niqe
from torchvision.models import vgg as tv_vgg

from basicsr_ext.config import OptionError, validate_options, yaml_load
from basicsr_ext.metrics import (BackboneWeightsNotFound, calculate_dists, calculate_lpips, calculate_niqe_or_nan,
                                 metric_better, niqe_with_note)
from basicsr_ext.utils import pretrained
from basicsr_ext.metrics.dists import build_dists
from basicsr_ext.metrics.lpips import build_lpips
from conftest import REPO


def photo(size=64):
    """A crop of scikit-image's astronaut, BGR uint8 as basicsr's metrics take it."""
    return np.ascontiguousarray(skimage.data.astronaut()[120:120 + size, 180:180 + size, ::-1])


def noisy(img, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(img + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)


@pytest.fixture
def no_local_weights(tmp_path, monkeypatch):
    """Neither experiments/pretrained_models nor TORCH_HOME holds a backbone file."""
    monkeypatch.setattr(pretrained, 'PRETRAINED_DIR', tmp_path / 'pretrained_models')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    return tmp_path


# ---------------------------------------------------------------- NIQE
def test_niqe_is_basicsr_niqe_on_a_photo():
    img = np.ascontiguousarray(skimage.data.coffee()[::-1, :, ::-1][:240, :320])
    expected = calculate_niqe(img, 4)
    assert np.isfinite(expected)
    assert calculate_niqe_or_nan(img, crop_border=4) == expected
    assert niqe_with_note(img, 4) == (expected, None)
    # by its registered name, as the training validation calls it (img2 is ignored: no reference)
    assert calculate_metric({'img': img, 'img2': img}, {'type': 'calculate_niqe_or_nan', 'crop_border': 4}) == expected


@pytest.mark.filterwarnings('ignore::RuntimeWarning')  # basicsr's own NIQE warns before it fails
def test_niqe_of_a_noise_image_is_nan_with_a_note():
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    with pytest.raises(np.linalg.LinAlgError, match='SVD did not converge'):
        calculate_niqe(noise, 0)  # basicsr's own stops the run
    value, note = niqe_with_note(noise, 0)
    assert np.isnan(value)
    assert note == ('NIQE: SVD did not converge (the image is 128x128 after the crop; NIQE needs at least '
                    '192x192)')
    assert np.isnan(calculate_metric({'img': noise, 'img2': noise}, {'type': 'calculate_niqe_or_nan',
                                                                       'crop_border': 0}))
    flat = np.full((200, 200, 3), 77, np.uint8)
    value, note = niqe_with_note(flat, 0)
    assert np.isnan(value) and note.endswith('(a flat or noise-like image: too few 96x96 blocks with finite NIQE '
                                             'features)')


# ---------------------------------------------------------------- LPIPS and DISTS, random backbones
@pytest.mark.parametrize('metric', [lambda a, b: calculate_lpips(a, b, weights='random'),
                                    lambda a, b: calculate_lpips(a, b, net='vgg', weights='random'),
                                    lambda a, b: calculate_dists(a, b, weights='random')],
                         ids=['lpips_alex', 'lpips_vgg', 'dists'])
def test_identical_images_give_zero_and_noise_increases_the_distance(metric):
    img = photo()
    assert metric(img, img) == pytest.approx(0.0, abs=1e-6)
    values = [metric(noisy(img, sigma), img) for sigma in (4, 16, 48)]
    assert 0 < values[0] < values[1] < values[2], values
    assert metric(img, noisy(img, 16)) == pytest.approx(values[1], rel=1e-4)  # symmetric


def test_metric_directions():
    assert [metric_better(n) for n in ('calculate_lpips', 'calculate_dists', 'calculate_niqe_or_nan',
                                       'calculate_niqe', 'calculate_psnr', 'calculate_ssim')] == \
        ['lower'] * 4 + ['higher'] * 2


def test_crop_and_channel_options():
    img, other = photo(72), noisy(photo(72), 20)
    cropped = calculate_lpips(img[4:-4, 4:-4], other[4:-4, 4:-4], weights='random')
    assert calculate_lpips(img, other, crop_border=4, weights='random') == pytest.approx(cropped, rel=1e-5)
    chw = calculate_lpips(img.transpose(2, 0, 1), other.transpose(2, 0, 1), input_order='CHW', weights='random')
    assert chw == pytest.approx(calculate_lpips(img, other, weights='random'), rel=1e-5)
    with pytest.raises(ValueError, match='^LPIPS compares RGB images; set test_y_channel: false for it$'):
        calculate_lpips(img, other, test_y_channel=True, weights='random')
    with pytest.raises(ValueError, match=r"^LPIPS net 'squeeze' is not one of alex, vgg$"):
        calculate_lpips(img, other, net='squeeze', weights='random')


# ---------------------------------------------------------------- backbone weights: local files only
def test_missing_weights_name_the_expected_file(no_local_weights):
    img = photo()
    hub = no_local_weights / 'torch_home' / 'hub' / 'checkpoints'
    with pytest.raises(BackboneWeightsNotFound) as err:
        calculate_lpips(img, img)
    assert str(err.value).startswith(f"LPIPS (alex) needs alexnet-owt-7be5be79.pth (torchvision's ImageNet alexnet "
                                     'weights (233.1 MB, https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)'
                                     f'), found neither in {no_local_weights}/pretrained_models/ nor in {hub}/ '
                                     '($TORCH_HOME/hub/checkpoints).')
    for call, name in ((lambda: calculate_lpips(img, img, net='vgg'), 'vgg16-397923af.pth'),
                       (lambda: calculate_dists(img, img), 'vgg16-397923af.pth')):
        with pytest.raises(FileNotFoundError, match=f'needs {name} '):
            call()
    with pytest.raises(BackboneWeightsNotFound) as err:
        calculate_dists(img, img, weights=str(no_local_weights))  # a folder without the file
    assert str(err.value).startswith(f"DISTS: '{no_local_weights}/vgg16-397923af.pth' does not exist: it should be "
                                     "vgg16-397923af.pth, torchvision's ImageNet vgg16 weights")


def test_backbones_load_from_torch_home(no_local_weights):
    """A torchvision state dict in $TORCH_HOME/hub/checkpoints is what the metric's backbone holds."""
    hub = no_local_weights / 'torch_home' / 'hub' / 'checkpoints'
    hub.mkdir(parents=True)
    torch.manual_seed(1)
    alex = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(alex, hub / 'alexnet-owt-7be5be79.pth')
    lpips = build_lpips('alex', device='cpu')
    torch.testing.assert_close(lpips.net.slice1[0].weight, alex['features.0.weight'])
    torch.testing.assert_close(lpips.net.slice5.get_submodule('10').bias, alex['features.10.bias'])
    vgg = {f'features.{k}': v for k, v in tv_vgg.make_layers(tv_vgg.cfgs['D']).state_dict().items()}
    torch.save(vgg, hub / 'vgg16-397923af.pth')
    dists = build_dists(device='cpu')
    torch.testing.assert_close(dists.stage1[0].weight, vgg['features.0.weight'])
    torch.testing.assert_close(dists.stage5.get_submodule('28').weight, vgg['features.28.weight'])
    img = photo()
    assert calculate_dists(img, img) == pytest.approx(0.0, abs=1e-6)
    assert calculate_dists(noisy(img, 30), img) > 0
    # a file of another network is refused with its name
    torch.save(alex, hub / 'vgg16-397923af.pth')
    with pytest.raises(ValueError, match=r"^DISTS: '.*vgg16-397923af.pth' is not torchvision's vgg16 state dict"):
        build_dists(weights=str(hub), device='cpu')


# ---------------------------------------------------------------- training validation
def test_training_validation_accepts_the_metrics():
    raw = yaml_load(REPO / 'options' / 'demo' / 'SRResNet_x4_demo.yml')
    raw['val']['metrics'] = {
        'lpips': {'type': 'calculate_lpips', 'net': 'vgg', 'weights': 'random', 'crop_border': 4},
        'dists': {'type': 'calculate_dists', 'weights': 'random'},
        'niqe': {'type': 'calculate_niqe_or_nan', 'crop_border': 4},
        'psnr': {'type': 'calculate_psnr', 'crop_border': 4},
    }
    metrics = validate_options(copy.deepcopy(raw))['val']['metrics']
    assert {k: m['better'] for k, m in metrics.items()} == {'lpips': 'lower', 'dists': 'lower', 'niqe': 'lower',
                                                            'psnr': 'higher'}
    assert metrics['lpips']['net'] == 'vgg' and metrics['dists']['device'] is None
    # what models/validation.py passes to basicsr's calculate_metric
    img = photo()
    for name in ('lpips', 'dists'):
        mopt = {k: v for k, v in metrics[name].items() if k != 'better'}
        assert calculate_metric({'img': img, 'img2': img}, mopt) == pytest.approx(0.0, abs=1e-6)
    bad = copy.deepcopy(raw)
    bad['val']['metrics'] = {'lpips': {'type': 'calculate_lpips', 'nett': 'vgg'}}
    with pytest.raises(OptionError, match=r"^val.metrics.lpips.nett: unknown key; did you mean 'net'\?"):
        validate_options(bad)
    bad['val']['metrics'] = {'psnr': {'type': 'calculate_psnr', 'net': 'vgg'}}
    with pytest.raises(OptionError, match=r'^val.metrics.psnr.net: unknown key'):
        validate_options(bad)


def test_weight_files_are_looked_for_in_the_project_first_then_torch_home(tmp_path, monkeypatch):
    """One search serves the perceptual loss's VGG and the metrics' backbones (utils/pretrained.py)."""
    from basicsr_ext.losses.vgg_weights import find_vgg_weights
    from basicsr_ext.metrics.backbones import find_backbone_weights
    monkeypatch.setattr(pretrained, 'PRETRAINED_DIR', tmp_path / 'project')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    for name, find in (('vgg19-dcbb9e9d.pth', lambda: find_vgg_weights('vgg19')),
                       ('alexnet-owt-7be5be79.pth', lambda: find_backbone_weights('alexnet'))):
        project, hub = tmp_path / 'project' / name, tmp_path / 'torch_home' / 'hub' / 'checkpoints' / name
        assert pretrained.search_paths(name) == [str(project), str(hub)]
        assert pretrained.first_existing(pretrained.search_paths(name)) is None
        hub.parent.mkdir(parents=True, exist_ok=True)
        hub.write_bytes(b'')
        assert find() == str(hub)
        project.parent.mkdir(parents=True, exist_ok=True)
        project.write_bytes(b'')
        assert find() == str(project)
    # a folder named in the options stands for the file inside it, for both
    folder = tmp_path / 'weights'
    folder.mkdir()
    (folder / 'vgg19-dcbb9e9d.pth').write_bytes(b'')
    assert find_vgg_weights('vgg19', folder) == str(folder / 'vgg19-dcbb9e9d.pth')
    with pytest.raises(FileNotFoundError, match=r"'.*alexnet-owt-7be5be79\.pth' does not exist"):
        find_backbone_weights('alexnet', folder)
