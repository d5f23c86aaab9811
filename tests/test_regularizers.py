"""Regularizers, one by one: statistics, schedules, train/eval behaviour, EATS's prefix reuse, ECO's pairs.

Everything runs on tiny networks (16 features, 2 blocks) and 8-16 px LR inputs.
"""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.utils.matlab_functions import imresize
from torch import nn

from basicsr_ext.archs import get_sites
from basicsr_ext.archs.rrdbnet_arch import RRDBNetAnyScale
from basicsr_ext.models import build_model
from basicsr_ext.regularizers import REGULARIZER_REGISTRY, build_regularizers
from basicsr_ext.regularizers.eco import matlab_bicubic_resize, real_pair_weight
from basicsr_ext.config import validate_options
from basicsr_ext.utils.schema import OptionError, validate
from conftest import step_context


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    # with the cores shared, OpenMP threads spin against each other: one thread is ~50x faster here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_srresnet():
    torch.manual_seed(0)
    return MSRResNet(num_feat=16, num_block=2, upscale=4)


def tiny_rrdb():
    torch.manual_seed(0)
    return RRDBNetAnyScale(num_feat=16, num_block=2, num_grow_ch=8, scale=4)


def attach(net, *entries, total_iter=100):
    """Build regularizers from option entries (defaults filled in) and attach them as the model does."""
    full = []
    for entry in entries:
        cls = REGULARIZER_REGISTRY.get(entry['type'])
        rest = {k: v for k, v in entry.items() if k != 'type'}
        full.append({'type': entry['type'], **validate(rest, cls.OPTIONS, 'reg')})
    regs = build_regularizers(full, get_sites(net), total_iter)
    net.add_module('regularizers', nn.ModuleList(regs))
    return regs


def options(net_opt, regularizers, tmp_path, total_iter=20, **train):
    return {
        'name': 'reg_test', 'model_type': 'BlindSRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {'type': 'SkimagePhotosDataset', 'photos': ['astronaut'], 'gt_size': 32}},
        'network_g': net_opt, 'path': {'experiments_root': str(tmp_path)},
        'train': {
            'total_iter': total_iter,
            'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [10000], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
            'regularizers': regularizers, **train,
        },
    }


def make_model(raw):
    opt = validate_options(raw)
    opt.update(dist=False, rank=0, world_size=1)
    return build_model(opt)


TINY_SRRESNET = dict(type='MSRResNet', num_feat=16, num_block=2, upscale=4)


# ----------------------------------------------------------------------------- Dropout
def test_dropout_channel_statistics_and_scaling():
    net = tiny_srresnet()
    drop, = attach(net, {'type': 'Dropout', 'p': 0.7})
    torch.manual_seed(1)
    x = torch.rand(64, 64, 4, 4) + 0.5
    y = drop.transform(x, 0)
    per_channel = (y / x).flatten(2)
    # every feature map is either all zero or all scaled by 1/(1-p)
    assert torch.allclose(per_channel.amin(-1), per_channel.amax(-1), atol=1e-5)
    scales = per_channel[..., 0]
    dropped = (scales == 0).float().mean().item()
    assert abs(dropped - 0.7) < 0.03
    assert torch.allclose(scales[scales > 0], torch.tensor(1 / 0.3), rtol=1e-5)


def test_dropout_element_wise_statistics():
    net = tiny_srresnet()
    drop, = attach(net, {'type': 'Dropout', 'p': 0.5, 'channel_wise': False})
    torch.manual_seed(2)
    y = drop.transform(torch.ones(16, 16, 16, 16), 0)
    assert abs((y == 0).float().mean().item() - 0.5) < 0.02
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    # element-wise: channels are not dropped as a whole
    assert (y.flatten(2).amax(-1) > 0).float().mean() > 0.99


def test_dropout_eval_identity_and_train_effect():
    plain = tiny_srresnet()
    net = copy.deepcopy(plain)
    attach(net, {'type': 'Dropout', 'p': 0.7})
    x = torch.rand(2, 3, 8, 8)
    net.eval()
    assert torch.equal(net(x), plain.eval()(x))
    net.train()
    assert not torch.allclose(net(x), plain(x))


# ----------------------------------------------------------------------------- AdaptiveDropout
def test_adaptive_dropout_sites_are_shallow_to_deep():
    net = tiny_srresnet()
    ad, = attach(net, {'type': 'AdaptiveDropout'})
    assert [s.name for s in ad.sites] == ['blocks.0.conv.0', 'blocks.1.conv.0', 'last_conv_input']
    assert ad.sites[0].module is net.body[0].conv1 and ad.sites[-1].module is net.conv_last


@pytest.mark.parametrize('anneal_last', [True, False])
def test_adaptive_dropout_annealing_schedule_and_resume(anneal_last):
    net = tiny_srresnet()
    ad, = attach(net, {'type': 'AdaptiveDropout', 'interval': 10, 'anneal_last': anneal_last})
    expected_switch = [10, 20, 30 if anneal_last else None]
    for it in (1, 9, 10, 11, 19, 20, 29, 30, 31, 1000):
        ad.on_iter_start(it)
        for k, switch in enumerate(expected_switch):
            w = ad.site_weight(k).item()
            assert w == pytest.approx(1.0 if switch is not None and it >= switch else 0.3), (it, k)
        # a freshly built module (a resumed run) gives the same w at the same iteration
        fresh, = attach(tiny_srresnet(), {'type': 'AdaptiveDropout', 'interval': 10, 'anneal_last': anneal_last})
        fresh.on_iter_start(it)
        assert [fresh.site_weight(k).item() for k in range(3)] == [ad.site_weight(k).item() for k in range(3)]


def test_adaptive_dropout_variance_is_scaled_by_one_minus_w_squared():
    net = tiny_srresnet()
    ad, = attach(net, {'type': 'AdaptiveDropout', 'p': 0.5, 'w_init': 0.3})
    drop, = attach(tiny_srresnet(), {'type': 'Dropout', 'p': 0.5})
    ad.on_iter_start(1)
    torch.manual_seed(3)
    x = torch.randn(256, 64, 4, 4)
    var_ad = (ad.transform(x, 0) - x).var().item()
    var_drop = (drop.transform(x, 0) - x).var().item()
    assert var_ad / var_drop == pytest.approx(0.7**2, rel=0.05)
    # unbiased: E[f(x)] = x
    mean_shift = torch.stack([ad.transform(x, 0) - x for _ in range(20)]).mean().item()
    assert abs(mean_shift) < 0.01


def test_adaptive_dropout_eval_identity():
    plain = tiny_srresnet()
    net = copy.deepcopy(plain)
    attach(net, {'type': 'AdaptiveDropout', 'implicit': True, 'w_mode': 'vector'})
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(net.eval()(x), plain.eval()(x))


@pytest.mark.parametrize('w_mode, shapes', [('value', [(), (), ()]), ('vector', [(16, ), (16, ), (16, )])])
def test_adaptive_dropout_implicit_weights_learn_and_stay_in_unit_interval(w_mode, shapes):
    net = tiny_srresnet()
    ad, = attach(net, {'type': 'AdaptiveDropout', 'implicit': True, 'w_mode': w_mode, 'interval': 3})
    assert [tuple(p.shape) for p in ad.w_logits] == shapes
    assert all(p is q for p, q in zip(ad.w_logits, [p for n, p in net.named_parameters() if 'w_logits' in n]))
    before = [torch.sigmoid(p).detach().clone() for p in ad.w_logits]
    assert all(torch.allclose(b, torch.tensor(0.3)) for b in before)
    optim = torch.optim.Adam(net.parameters(), lr=0.05)
    torch.manual_seed(4)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    for it in range(1, 5):
        ad.on_iter_start(it)
        optim.zero_grad()
        F.l1_loss(net(x), y).backward()
        if it >= 3:  # the first site is annealed: in the graph, but with zero gradient
            assert ad.w_logits[0].grad is not None and torch.all(ad.w_logits[0].grad == 0)
        optim.step()
    after = [torch.sigmoid(p).detach() for p in ad.w_logits]
    assert any(not torch.allclose(a, b) for a, b in zip(after, before))
    assert all(((a > 0) & (a < 1)).all() for a in after)
    ad.on_iter_start(3)
    assert torch.all(ad.site_weight(0) == 1) and ad.site_weight(1).shape == shapes[1]


# ----------------------------------------------------------------------------- EATS
def capture_sites(net, sites):
    """Clones of every site's feature on the next forwards, as {name: [tensor per forward]}."""
    seen = {s.name: [] for s in sites}
    handles = []
    for site in sites:
        def grab(feat, name=site.name):
            seen[name].append(feat.detach().clone())
            return feat
        handles.append(site.register_transform(grab))
    return seen, handles


def test_eats_draws_are_seeded_distinct_and_respect_layer_ratio():
    net = tiny_rrdb()
    eats, = attach(net, {'type': 'EATS', 'layer_ratio': 0.5, 'num_pairs': 3})
    # all layers by default: head.0, 2 x 15 RDB convs, 4 tail convs = 35; the shallowest ceil(35 / 2) = 18
    assert [s.name for s in eats.layers] == ['head.0'] + [f'blocks.0.conv.{j}' for j in range(15)] + [
        'blocks.1.conv.0', 'blocks.1.conv.1']
    draws = {it: eats.draw_pairs(it) for it in range(1000)}
    assert draws[7] == eats.draw_pairs(7)  # a function of the iteration: ranks and resumes agree
    pairs = [p for ps in draws.values() for p in ps]
    assert all(len(e) == len(d) == 1 and e[0] != d[0] for _, e, d in pairs)
    assert {layer for layer, _, _ in pairs} == set(range(18))
    assert eats.channels[:6] == [16, 8, 8, 8, 8, 16]  # conv_first 16; RDB convs 1-4 grow 8 channels, conv5 gives 16
    assert all(0 <= e[0] < eats.channels[layer] and 0 <= d[0] < eats.channels[layer] for layer, e, d in pairs)
    assert {e[0] for layer, e, _ in pairs if layer == 5} == set(range(16))


def test_eats_num_filters_draws_distinct_channels_in_one_layer():
    eats, = attach(tiny_srresnet(), {'type': 'EATS', 'num_filters': 5, 'num_pairs': 2})
    for it in range(200):
        draws = eats.draw_pairs(it)
        assert len(draws) == 2
        for layer, erased, disruptors in draws:
            assert len(erased) == len(disruptors) == 5
            assert len(set(erased) | set(disruptors)) == 10  # no erased channel is a disruptor
            assert all(0 <= c < eats.channels[layer] for c in erased + disruptors)
    # one filter draws what the single-pair draw always drew: e uniform, d uniform among the others
    one, = attach(tiny_srresnet(), {'type': 'EATS'})
    assert all(len(e) == 1 for _, e, _ in one.draw_pairs(3))


def test_eats_disrupted_pass_changes_only_the_erased_channel_and_downstream():
    net = tiny_srresnet().train()
    eats, = attach(net, {'type': 'EATS'})
    sites = get_sites(net).all()
    x = torch.rand(2, 3, 8, 8)
    layer, erased, disruptor = 3, 5, 11  # blocks.1.conv.0 (after head.0, blocks.0.conv.0, blocks.0.conv.1)
    seen, handles = capture_sites(net, sites)
    # the erase hook runs after the capture hooks, so read the erased feature where the next conv takes it
    consumer_inputs = []
    handles.append(net.body[1].conv2.register_forward_pre_hook(lambda m, a: consumer_inputs.append(a[0].clone())))
    net(x)
    eats.disrupted_forward(net, x, layer, erased, disruptor, replay=False)
    for h in handles:
        h.remove()
    names = [s.name for s in sites]
    chosen = names.index(eats.layers[layer].name)
    assert eats.layers[layer].module is net.body[1].conv1
    for name in names[:chosen + 1]:
        assert torch.equal(seen[name][0], seen[name][1]), name
    first, second = consumer_inputs  # relu(conv1(.)): channel-wise, so the copy survives it
    keep = [c for c in range(first.shape[1]) if c != erased]
    assert torch.equal(second[:, keep], first[:, keep])
    assert torch.equal(second[:, erased], first[:, disruptor])
    assert not torch.equal(second[:, erased], first[:, erased])
    for name in names[chosen + 1:]:
        assert not torch.allclose(seen[name][0], seen[name][1]), name


def eats_step(net, eats, x, pair, main_loss, target, replay, keep=None, on_disrupted_pass=lambda: None):
    """One normal + disrupted pass and backward; returns the disrupted output and the weight gradients.

    With ``replay`` the disrupted pass reuses the recorded prefix (on the first ``keep`` samples);
    without, it is a plain forward of the disrupted network on ``x[:keep]``.
    """
    net.zero_grad()
    eats.pairs = [pair]
    if replay:
        eats._start_recording(net)
    out = net(x)
    eats.tape.stop()
    on_disrupted_pass()
    if replay:
        disrupted = eats.disrupted_forward(net, x, *pair, replay=True, keep=keep)
    else:
        disrupted = eats.disrupted_forward(net, x[:keep], *pair, replay=False)
    eats._release()
    (main_loss(out) + F.l1_loss(disrupted, target)).backward()
    return disrupted.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize('make_net', [tiny_srresnet, tiny_rrdb], ids=['SRResNet', 'RRDB'])
def test_eats_prefix_reuse_equals_full_second_pass(make_net):
    torch.manual_seed(5)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    net = make_net().train()
    eats, = attach(net, {'type': 'EATS'})
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    executed = []
    for conv in convs:
        conv.register_forward_hook(lambda m, a, o: executed.append(m))
    n_layers = len(eats.layers)
    target = F.interpolate(x, scale_factor=4, mode='bicubic')
    for layer in sorted({0, 3, n_layers // 2, n_layers - 1}):
        results = []
        for replay in (True, False):
            disrupted, grads = eats_step(net, eats, x, (layer, 1, 4), lambda out: F.l1_loss(out, y), target,
                                         replay, on_disrupted_pass=executed.clear)
            results.append((disrupted, grads, len(executed)))
        (out_reuse, grads_reuse, run_reuse), (out_full, grads_full, run_full) = results
        assert torch.allclose(out_reuse, out_full, atol=1e-6)
        for a, b in zip(grads_reuse, grads_full):
            assert torch.allclose(a, b, atol=1e-6)
        assert not eats.tape.diverged
        assert run_full == len(convs)
        if layer > 0:
            assert run_reuse < run_full, (layer, run_reuse, run_full)


@pytest.mark.filterwarnings('ignore:torch.meshgrid')
@pytest.mark.parametrize('arch', ['SRResNet', 'RRDB', 'SwinIR', 'HAN'])
def test_eats_awaken_fraction_equals_a_full_disrupted_pass_on_the_first_samples(arch):
    from basicsr.archs import build_network
    from test_regularizer_matrix import ARCHS
    torch.manual_seed(7)
    x = torch.rand(4, 3, 8, 8)
    net = build_network(dict(ARCHS[arch])).train()
    eats, = attach(net, {'type': 'EATS', 'awaken_fraction': 0.4})
    keep = eats.awakened_samples(len(x))
    assert keep == 2  # ceil(0.4 · 4)
    target = F.interpolate(x[:keep], scale_factor=4, mode='bicubic', align_corners=False).clamp(0, 1)
    for layer in sorted({1, len(eats.layers) // 2, len(eats.layers) - 1}):
        # the reference is an independent full forward of the disrupted net on the kept samples
        out_reuse, grads_reuse = eats_step(net, eats, x, (layer, 0, 1), lambda out: out.abs().mean(), target,
                                           True, keep=keep)
        replayed = eats.tape.replayed
        out_full, grads_full = eats_step(net, eats, x, (layer, 0, 1), lambda out: out.abs().mean(), target,
                                         False, keep=keep)
        assert out_reuse.shape == (keep, 3, 32, 32)
        assert torch.allclose(out_reuse, out_full, atol=1e-5), (arch, layer)
        for a, b in zip(grads_reuse, grads_full):
            assert torch.allclose(a, b, atol=1e-5), (arch, layer)
        assert replayed > 0 and not eats.tape.diverged


def test_eats_awaken_fraction_loss_and_cut_of_recorded_outputs(tmp_path):
    from basicsr_ext.regularizers.eats import _first_samples
    batch = torch.rand(4, 2)
    assert torch.equal(_first_samples(batch, 3, 4), batch[:3])
    assert _first_samples(torch.rand(8, 2), 3, 4) is None  # e.g. attention windows, B·nW first: recomputed
    cut = _first_samples((batch, None, 5), 1, 4)
    assert isinstance(cut, tuple) and torch.equal(cut[0], batch[:1]) and cut[1:] == (None, 5)
    assert _first_samples([batch, torch.rand(3)], 1, 4) is None

    model = make_model(options(TINY_SRRESNET, [{'type': 'EATS', 'awaken_fraction': 0.25}], tmp_path))
    net, eats = model.net_g, model.regularizers[0]
    torch.manual_seed(8)
    x = torch.rand(8, 3, 8, 8)
    eats.train()
    eats.transform_batch(step_context(model, x, None, 3))
    pair = eats.pairs[0]
    output = net(x)
    l_awa = eats.extra_losses(step_context(model, x, None, 3), output)['l_awa']
    expected = F.l1_loss(eats.disrupted_forward(net, x[:2], *pair, replay=False),
                         F.interpolate(x[:2], scale_factor=4, mode='bicubic', align_corners=False).clamp(0, 1))
    assert torch.allclose(l_awa, expected, atol=1e-6)
    with pytest.raises(OptionError) as err:
        validate_options(options(TINY_SRRESNET, [{'type': 'EATS', 'awaken_fraction': 0.0}], tmp_path))
    assert str(err.value) == 'train.regularizers[0].awaken_fraction: 0.0 must be in (0, 1]'


def test_eats_leaves_first_pass_and_eval_untouched(tmp_path):
    plain = tiny_srresnet()
    net = copy.deepcopy(plain).train()
    eats, = attach(net, {'type': 'EATS'})
    x = torch.rand(2, 3, 8, 8)
    eats.pairs = eats.draw_pairs(1)
    eats._start_recording(net)
    recorded = net(x)
    eats._release()
    assert torch.equal(recorded, plain(x))
    assert all(type(m).__call__ is nn.Module.__call__ for m in net.modules())  # the tape is detached
    assert torch.equal(net.eval()(x), plain.eval()(x))
    assert eats.extra_losses(SimpleNamespace(net=net, lq=x, iteration=1), recorded) == {}  # eval mode: no awakening loss


def test_eats_gradients_reach_weights_through_both_losses(tmp_path):
    model = make_model(options(TINY_SRRESNET, [{'type': 'EATS'}], tmp_path))
    net, eats = model.get_bare_model(model.net_g), model.regularizers[0]
    torch.manual_seed(6)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    eats.transform_batch(step_context(model, x, y, 1))
    layer = eats.pairs[0][0]
    out = net(x)
    l_awa = eats.extra_losses(step_context(model, x, y, 1), out)['l_awa']
    erased_conv = eats.layers[layer].module
    grads = {}
    for name, loss in (('pix', F.l1_loss(out, y)), ('awa', l_awa)):
        net.zero_grad()
        loss.backward(retain_graph=True)
        grads[name] = {n: p.grad.abs().sum().item() for n, p in net.named_parameters()}
    prefix = 'conv_first.weight'  # upstream of every body conv: reached through the reused prefix
    assert grads['pix'][prefix] > 0 and grads['awa'][prefix] > 0
    assert grads['pix']['conv_last.weight'] > 0 and grads['awa']['conv_last.weight'] > 0
    assert erased_conv.weight.grad is not None


def test_eats_through_the_model_draws_the_same_pairs_per_iteration(tmp_path):
    model = make_model(options(TINY_SRRESNET, [{'type': 'EATS', 'num_pairs': 2}], tmp_path))
    eats = model.regularizers[0]
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    model.feed_data({'lq': x, 'gt': y}, 3)
    model.optimize_parameters(3)
    assert set(model.log_dict) == {'l_pix', 'l_awa'} and model.log_dict['l_awa'] > 0
    assert eats.draw_pairs(3) == make_model(options(TINY_SRRESNET, [{'type': 'EATS', 'num_pairs': 2}],
                                                    tmp_path)).regularizers[0].draw_pairs(3)
    assert all(type(m).__call__ is nn.Module.__call__ for m in model.net_g.modules())


# ----------------------------------------------------------------------------- ECO
def test_eco_schedule_values():
    expected = {0.0: 0.0, 0.26: 0.0, 0.3: 0.0431, 0.4: 0.2227, 0.5: 0.5, 0.6: 0.7773, 0.74: 1.0, 1.0: 1.0}
    for t, a in expected.items():
        assert real_pair_weight(t, 'sigmoid') == pytest.approx(a, abs=1e-3), t
    for t in (0.0, 0.26, 0.5, 0.74, 1.0):
        assert real_pair_weight(t, 'linear') == pytest.approx(t)
    assert real_pair_weight(1.5) == 1.0 and real_pair_weight(-1) == 0.0


@pytest.mark.parametrize('scale, shape', [(1 / 4, (3, 32, 40)), (1 / 2, (3, 17, 23)), (1 / 3, (3, 30, 27)),
                                          (2, (3, 9, 11))])
def test_matlab_bicubic_resize_matches_basicsr_imresize(scale, shape):
    torch.manual_seed(7)
    img = torch.rand(shape)
    ours = matlab_bicubic_resize(img.unsqueeze(0), scale)[0]
    assert torch.allclose(ours, imresize(img, scale), atol=2e-6)


def save_teacher(tmp_path, net_opt, key='params_ema'):
    from basicsr_ext.archs import build_network
    torch.manual_seed(123)
    teacher = build_network(net_opt)
    path = tmp_path / 'teacher.pth'
    torch.save({key: teacher.state_dict()}, path)
    return str(path), teacher


def test_eco_teacher_is_frozen_and_outside_the_student(tmp_path):
    path, _ = save_teacher(tmp_path, TINY_SRRESNET)
    model = make_model(options(TINY_SRRESNET, [{'type': 'ECO', 'teacher_path': path, 'schedule_iters': 8}], tmp_path))
    eco = model.regularizers[0]
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    for it in range(1, 5):
        model.feed_data({'lq': x, 'gt': y}, it)
        model.optimize_parameters(it)
    teacher = eco.teacher
    reference = torch.load(path)['params_ema']
    assert all(torch.equal(v, reference[k]) for k, v in teacher.state_dict().items())
    assert not teacher.training and not any(p.requires_grad or p.grad is not None for p in teacher.parameters())
    student_params = {id(p) for p in model.net_g.parameters()}
    assert not any(id(p) in student_params for p in teacher.parameters())
    assert not any(k.startswith('regularizers') for k in model.network_state()['params'])
    assert 'params_regularizers' not in model.network_state()
    model.net_g.eval()
    assert not teacher.training
    model.net_g.train()
    assert not teacher.training


def test_eco_pairs_at_both_ends_of_the_schedule(tmp_path):
    path, teacher = save_teacher(tmp_path, TINY_SRRESNET, key='params')  # falls back to 'params'
    model = make_model(options(TINY_SRRESNET, [{'type': 'ECO', 'teacher_path': path}], tmp_path, total_iter=100))
    eco = model.regularizers[0]
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    lq, gt = eco.transform_batch(step_context(model, x, y, 74))
    assert lq is x and gt is y and eco.teacher is None  # a = 1: the real batch, no teacher run
    lq, gt = eco.transform_batch(step_context(model, x, y, 10))
    with torch.no_grad():
        mu = teacher.eval()(x).clamp(0, 1)
    assert torch.allclose(gt, mu, atol=1e-6)
    assert torch.allclose(lq, matlab_bicubic_resize(mu, 1 / 4), atol=1e-6)
    a = real_pair_weight(0.5)
    lq, gt = eco.transform_batch(step_context(model, x, y, 50))
    assert torch.allclose(gt, (1 - a) * mu + a * y, atol=1e-6)


def test_eco_teacher_cache_skips_repeated_patches(tmp_path):
    path, _ = save_teacher(tmp_path, TINY_SRRESNET)
    model = make_model(options(TINY_SRRESNET, [{'type': 'ECO', 'teacher_path': path, 'cache_teacher': True}],
                               tmp_path, total_iter=100))
    eco = model.regularizers[0]
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    model.feed_data({'lq': x, 'gt': y, 'lq_path': ['a.png', 'b.png']}, 1)
    first = eco.transform_batch(step_context(model, x, y, 1))
    second = eco.transform_batch(step_context(model, x, y, 2))
    assert eco.teacher_forwards == 1 and len(eco.cache) == 2
    assert torch.equal(first[1], second[1])
    x2 = x.clone()
    x2[1] = torch.rand(3, 8, 8)
    eco.transform_batch(step_context(model, x2, y, 3))
    assert eco.teacher_forwards == 2 and len(eco.cache) == 3


def check_replay(model, eco, batch, current_iter, exact=True):
    """D(real target) replayed is the real LR; the degradation's stream is left where the real call left it."""
    model.feed_data(batch, current_iter)
    real_lq, real_gt = model.lq, model.gt
    state_after = model.degradation.state_dict()['generator']
    replayed = model.redegrade(real_gt)
    if exact:
        assert torch.equal(replayed, real_lq)
    else:  # the canvas is sharpened whole instead of by window: float sums may round one level apart
        assert (replayed - real_lq).abs().max() <= 1 / 255 + 1e-6
        assert (replayed != real_lq).float().mean() < 0.01
    assert torch.equal(model.degradation.state_dict()['generator'], state_after)
    mu = eco.teacher_output(real_lq, batch)
    lq, gt = eco.transform_batch(step_context(model, real_lq, real_gt, current_iter))
    assert torch.allclose(gt, mu) and torch.allclose(lq, model.redegrade(mu))
    assert not torch.allclose(lq, real_lq)
    assert torch.equal(model.degradation.state_dict()['generator'], state_after)


@pytest.mark.parametrize('gt_usm', [False, True])
def test_eco_replays_the_high_order_degradation(tmp_path, gt_usm):
    degradation = pytest.importorskip('basicsr_ext.data.degradation')
    path, _ = save_teacher(tmp_path, TINY_SRRESNET)
    model = make_model(options(TINY_SRRESNET, [{'type': 'ECO', 'teacher_path': path}], tmp_path, total_iter=100))
    model.degradation = degradation.HighOrderDegradation({'gt_size': 32, 'context': 8, 'gt_usm': gt_usm}, 4,
                                                         torch.device('cpu'))
    model.degradation.seed(3)
    torch.manual_seed(10)
    gauss = torch.exp(-(torch.arange(21.) - 10)**2 / 8)
    blur = (gauss[:, None] * gauss[None]) / gauss.sum()**2
    delta = torch.zeros(21, 21)
    delta[10, 10] = 1
    batch = {'gt': torch.rand(2, 3, 160, 160), 'kernel1': blur.expand(2, 21, 21),
             'kernel2': blur.expand(2, 21, 21), 'sinc_kernel': delta.expand(2, 21, 21)}
    check_replay(model, model.regularizers[0], batch, 5, exact=not gt_usm)
    assert model.degradation.opt.gt_usm == gt_usm


def test_eco_rejects_a_training_pair_queue():
    cls = REGULARIZER_REGISTRY.get('ECO')
    with pytest.raises(OptionError, match='queue_size'):
        cls.check_options({'cache_teacher': False}, {'degradation': {'type': 'HighOrderDegradation', 'queue_size': 16}},
                          'train.regularizers[0]')
    with pytest.raises(OptionError, match='cache_teacher'):
        cls.check_options({'cache_teacher': True}, {'degradation': {'type': 'HighOrderDegradation'}},
                          'train.regularizers[0]')


# ----------------------------------------------------------------------------- DropBlock, DropConnect
def test_dropblock_statistics_blocks_and_eval():
    plain = tiny_srresnet()
    net = copy.deepcopy(plain)
    block, = attach(net, {'type': 'DropBlock', 'drop_rate': 0.1, 'block_size': 3})
    torch.manual_seed(8)
    mask = block.block_mask(torch.ones(32, 16, 32, 32))
    assert abs(mask.mean().item() - 0.1) < 0.02
    # every dropped pixel lies in a fully dropped 3×3 square: the mask equals its morphological opening
    eroded = 1 - F.max_pool2d(1 - mask, 3, stride=1)
    opened = F.max_pool2d(F.pad(eroded, (2, 2, 2, 2)), 3, stride=1)
    assert torch.equal(opened, mask)
    x = torch.rand(4, 16, 32, 32) + 0.5
    y = block.transform(x, 0)
    ratio = y / x
    kept = ratio[ratio > 0]
    assert torch.allclose(kept, kept[0].expand_as(kept)) and kept[0] > 1
    assert torch.allclose(y.mean(), x.mean(), rtol=0.05)
    lr = torch.rand(2, 3, 8, 8)
    assert torch.equal(net.eval()(lr), plain.eval()(lr))


def test_dropconnect_masks_weights_then_restores_them():
    plain = tiny_srresnet()
    net = copy.deepcopy(plain).train()
    attach(net, {'type': 'DropConnect', 'p': 0.5, 'sites': ['blocks.*.conv.*', 'last_conv_input']})
    conv = net.conv_last
    param = conv.weight
    seen = []
    conv.register_forward_pre_hook(lambda m, a: seen.append(m.weight.detach().clone()))  # runs after the mask
    torch.manual_seed(9)
    x = torch.rand(2, 3, 8, 8)
    out = net(x)
    assert conv.weight is param and isinstance(conv.weight, nn.Parameter)
    effective = seen[0]
    dropped = (effective == 0).float().mean().item()
    assert abs(dropped - 0.5) < 0.08
    assert torch.allclose(effective[effective != 0], param.detach()[effective != 0] * 2)
    out.mean().backward()
    assert param.grad is not None and (param.grad[effective == 0] == 0).all()
    assert param.grad.abs().sum() > 0
    assert set(dict(net.named_parameters())) >= set(dict(plain.named_parameters()))
    assert torch.equal(net.eval()(x), plain.eval()(x))


# ----------------------------------------------------------------------------- option validation
@pytest.mark.parametrize('regularizers, message', [
    ([{'type': 'Dropout', 'sites': ['blocks.9']}],
     "train.regularizers[0].sites: Dropout needs site 'blocks.9', which MSRResNet lacks; MSRResNet has: "
     'head.0, blocks.0..1, blocks.<i>.conv.0..1, tail.0..2, last_conv_input'),
    ([{'type': 'EATS', 'layers': ['blocks.*.conv.2']}],
     "train.regularizers[0].layers: EATS needs site 'blocks.*.conv.2', which MSRResNet lacks; MSRResNet has: "
     'head.0, blocks.0..1, blocks.<i>.conv.0..1, tail.0..2, last_conv_input'),
    ([{'type': 'DropBlock'}, {'type': 'EATS'}, {'type': 'Dropout'}],
     "train.regularizers[2]: Dropout and DropBlock both drop features at MSRResNet site 'last_conv_input'; two "
     'dropouts on one feature are a different method from either, so give them disjoint sites '
     '(train.regularizers[0])'),
    ([{'type': 'EATS'}, {'type': 'EATS'}], 'train.regularizers[1]: EATS cannot be combined with EATS '
     '(train.regularizers[0])'),
    ([{'type': 'Dropout', 'pp': 0.5}], "train.regularizers[0].pp: unknown key; did you mean 'p'?"),
    ([{'type': 'AdaptiveDropout', 'w_int': 0.5}], "train.regularizers[0].w_int: unknown key; did you mean 'w_init'?"),
    ([{'type': 'Dropout', 'p': 1.0}], 'train.regularizers[0].p: 1.0 must be in [0, 1)'),
    ([{'type': 'Dropuot'}], "train.regularizers[0].type: unknown regularizer 'Dropuot'; did you mean 'Dropout'?"),
    ([{'type': 'DropConnect', 'sites': ['blocks.0']}],
     "train.regularizers[0].sites: DropConnect masks conv weights, but site 'blocks.0' of MSRResNet is a "
     'ResidualBlockNoBN, not a Conv2d; use conv sites (head.*, blocks.*.conv.*, tail.*) or last_conv_input'),
    ([{'type': 'AdaptiveDropout', 'implicit': True, 'w_init': 1.0}],
     'train.regularizers[0].w_init: 1.0 must be in (0, 1) with implicit: true (w is a sigmoid, which never '
     'reaches 0 or 1)'),
])
def test_option_errors(tmp_path, regularizers, message):
    with pytest.raises(OptionError) as err:
        validate_options(options(TINY_SRRESNET, regularizers, tmp_path))
    assert str(err.value) == message


def test_option_defaults_are_filled(tmp_path):
    opt = validate_options(options(TINY_SRRESNET, [{'type': 'AdaptiveDropout'}, {'type': 'EATS'}], tmp_path))
    ad, eats = opt['train']['regularizers']
    assert ad == {'type': 'AdaptiveDropout', 'p': 0.5, 'w_init': 0.3, 'interval': 20000, 'anneal_end': 0.68,
                  'anneal_last': True, 'final': 'adaptive', 'final_p': None, 'w_mode': 'value', 'implicit': False,
                  'sites': ['blocks.*.conv.0', 'last_conv_input']}
    assert eats == {'type': 'EATS', 'layers': ['head.*', 'blocks.*.conv.*', 'tail.*'], 'layer_ratio': 1.0,
                    'num_pairs': 1, 'num_filters': 1, 'loss_weight': 1.0, 'reuse_prefix': True,
                    'awaken_fraction': 1.0}


# ----------------------------------------------------------------------------- fidelity options (issue 12)
def test_adaptive_dropout_vector_w_needs_implicit(tmp_path):
    with pytest.raises(OptionError) as err:
        validate_options(options(TINY_SRRESNET, [{'type': 'AdaptiveDropout', 'w_mode': 'vector'}], tmp_path))
    assert str(err.value) == ("train.regularizers[0].w_mode: 'vector' needs implicit: true; with a fixed w every "
                              'channel of a site gets w_init and the same schedule (annealing is per layer), which is '
                              "w_mode: 'value'")
    ok = validate_options(options(TINY_SRRESNET, [{'type': 'AdaptiveDropout', 'w_mode': 'vector', 'implicit': True}],
                                  tmp_path))
    assert ok['train']['regularizers'][0]['w_mode'] == 'vector'


@pytest.mark.parametrize('implicit', [False, True])
def test_adaptive_dropout_final_standard_keeps_plain_dropout(implicit):
    net = tiny_srresnet()
    ad, = attach(net, {'type': 'AdaptiveDropout', 'final': 'standard', 'final_p': 0.7, 'interval': 10,
                       'implicit': implicit})
    assert [s.name for s in ad.sites] == ['blocks.0.conv.0', 'blocks.1.conv.0', 'last_conv_input']
    if implicit:  # no w for the final site: every parameter takes part in the loss (DDP)
        assert len(ad.w_logits) == 2
    x = torch.rand(128, 16, 4, 4) + 0.5
    for it in (1, 15, 25, 10**6):
        ad.on_iter_start(it)
        assert [ad.annealed(k, it) for k in range(3)] == [it >= 10, it >= 20, False]
        torch.manual_seed(it)
        ratio = (ad.transform(x, 2) / x).flatten(2)
        # plain Dropout2d(p = final_p): each channel of a sample is all 0 or all 1/(1 - 0.7), at every iteration
        assert torch.allclose(ratio.amin(-1), ratio.amax(-1), atol=1e-5)
        scales = ratio[..., 0]
        assert torch.allclose(scales[scales > 0], torch.tensor(1 / 0.3), rtol=1e-5)
        assert abs((scales == 0).float().mean().item() - 0.7) < 0.04
    with pytest.raises(ValueError, match='keeps plain dropout'):
        ad.site_weight(2)
    # final_p defaults to p, and an annealed blend site is the identity
    ad2, = attach(tiny_srresnet(), {'type': 'AdaptiveDropout', 'final': 'standard', 'p': 0.4, 'interval': 10})
    assert ad2.final_p == 0.4
    ad2.on_iter_start(100)
    assert torch.equal(ad2.transform(x, 0), x)
    # the blended sites are unchanged by the final site's mode
    adaptive, = attach(tiny_srresnet(), {'type': 'AdaptiveDropout', 'p': 0.4, 'interval': 10})
    for it in (1, 15):
        adaptive.on_iter_start(it)
        ad2.on_iter_start(it)
        torch.manual_seed(0)
        a = adaptive.transform(x, 1)
        torch.manual_seed(0)
        assert torch.equal(a, ad2.transform(x, 1))


def test_adaptive_dropout_interval_auto():
    from basicsr_ext.regularizers.adaptive_dropout import auto_interval
    # the official setting: 17 sites, 500k iterations -> the code's 20k (last switch at 340k)
    assert auto_interval(500000, 17) == 20000
    assert auto_interval(500000, 7) == 48571  # SwinIR / HAN-lite: 6 blocks + last, finishing at 340k too
    assert auto_interval(10, 17) == 1 and auto_interval(100, 0) == 0
    for final, anneal_last, annealed in (('adaptive', True, 3), ('adaptive', False, 2), ('standard', True, 2)):
        ad, = attach(tiny_srresnet(), {'type': 'AdaptiveDropout', 'interval': 'auto', 'final': final,
                                       'anneal_last': anneal_last}, total_iter=1000)
        assert ad.num_annealed == annealed
        assert ad.interval == int(0.68 * 1000 / annealed)  # 226 or 340
        switches = [min(it for it in range(1001) if ad.annealed(k, it)) if k < annealed else None for k in range(3)]
        assert switches == [ad.interval * (k + 1) if k < annealed else None for k in range(3)]
        assert switches[annealed - 1] <= 680
    ad, = attach(tiny_srresnet(), {'type': 'AdaptiveDropout', 'interval': 'auto', 'anneal_end': 0.5}, total_iter=600)
    assert ad.interval == 100


def test_adaptive_dropout_interval_rejects_other_strings(tmp_path):
    with pytest.raises(OptionError) as err:
        validate_options(options(TINY_SRRESNET, [{'type': 'AdaptiveDropout', 'interval': 'fast'}], tmp_path))
    assert str(err.value) == "train.regularizers[0].interval: 'fast' must be an integer >= 0 or 'auto'"


def test_dropout_and_adaptive_dropout_on_disjoint_sites(tmp_path):
    regs = [{'type': 'AdaptiveDropout', 'sites': ['blocks.*.conv.0']}, {'type': 'Dropout', 'p': 0.7}]
    model = make_model(options(TINY_SRRESNET, regs, tmp_path))
    ad, drop = model.regularizers
    assert [s.name for s in ad.sites] == ['blocks.0.conv.0', 'blocks.1.conv.0']
    assert [s.name for s in drop.sites] == ['last_conv_input']
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 32, 32)}, 1)
    model.optimize_parameters(1)
    assert model.log_dict['l_pix'] > 0
    for overlapping, site in (([{'type': 'Dropout', 'p': 0.7}, {'type': 'AdaptiveDropout'}], " 'last_conv_input'"),
                              ([{'type': 'Dropout', 'sites': ['blocks.*.conv.0']},
                                {'type': 'AdaptiveDropout', 'sites': ['blocks.*.conv.*']}],
                               "s 'blocks.0.conv.0', 'blocks.1.conv.0'")):
        with pytest.raises(OptionError) as err:
            validate_options(options(TINY_SRRESNET, overlapping, tmp_path))
        assert str(err.value) == (f'train.regularizers[1]: AdaptiveDropout and Dropout both drop features at '
                                  f'MSRResNet site{site}; two dropouts on one feature are a different method from '
                                  'either, so give them disjoint sites (train.regularizers[0])')


@pytest.mark.filterwarnings('ignore:torch.meshgrid')
@pytest.mark.parametrize('arch', ['SRResNet', 'RRDB', 'SwinIR', 'HAN'])
def test_eats_default_is_every_layer(arch):
    from basicsr.archs import build_network
    from test_regularizer_matrix import ARCHS
    net = build_network(dict(ARCHS[arch]))
    sites = get_sites(net)
    eats, = attach(net, {'type': 'EATS'})
    expected = sites.head + sites.convs + sites.tail
    assert [(s.name, s.module) for s in eats.layers] == [(s.name, s.module) for s in expected]
    assert eats.layers[0].module is net.conv_first and eats.layers[-1].module is sites.tail[-1].module
    assert len(sites.tail) >= 1 and sites.last_conv_input.module not in [s.module for s in eats.layers]
    body, = attach(build_network(dict(ARCHS[arch])), {'type': 'EATS', 'layers': ['blocks.*.conv.*']})
    assert [s.name for s in body.layers] == [s.name for s in sites.convs]


def erased_by_weight_copy(plain, net, site, erased, disruptors):
    """An independent disrupted network: a copy of ``plain`` in which the conv of ``site`` (a site of ``net``,
    ``plain``'s twin) has filters ``erased`` replaced by filters ``disruptors`` (kernel and bias)."""
    path = next(name for name, m in net.named_modules() if m is site.module)
    twin = copy.deepcopy(plain)
    conv = twin.get_submodule(path)
    with torch.no_grad():
        for e, d in zip(erased, disruptors):
            conv.weight[e] = conv.weight[d]
            conv.bias[e] = conv.bias[d]
    return twin


@pytest.mark.parametrize('make_net', [tiny_srresnet, tiny_rrdb], ids=['SRResNet', 'RRDB'])
def test_eats_k_filters_in_one_pass_equal_an_independent_forward(make_net):
    torch.manual_seed(11)
    x = torch.rand(2, 3, 8, 8)
    net = make_net().train()
    with torch.no_grad():  # larger weights than the 0.1-scaled init, so every erase visibly changes the output
        for param in net.parameters():
            param.normal_(0, 0.2)
    plain = copy.deepcopy(net)
    eats, = attach(net, {'type': 'EATS', 'num_filters': 3})
    last_calls = []
    net.conv_last.register_forward_hook(lambda m, a, o: last_calls.append(1))
    names = [s.name for s in eats.layers]
    for layer in (0, names.index('blocks.1.conv.0'), len(names) - 1):  # head, body, tail
        erased, disruptors = (1, 4, 6), (0, 7, 2)
        twin = erased_by_weight_copy(plain, net, eats.layers[layer], erased, disruptors)
        with torch.no_grad():
            expected = twin(x)
            full = eats.disrupted_forward(net, x, layer, erased, disruptors, replay=False)
            eats.pairs = [(layer, erased, disruptors)]
            eats._start_recording(net)
            net(x)
            eats.tape.stop()
            replayed = eats.disrupted_forward(net, x, layer, erased, disruptors, replay=True)
            eats._release()
        assert torch.allclose(full, expected, atol=1e-6), names[layer]
        assert torch.allclose(replayed, expected, atol=1e-6), names[layer]
        assert (expected - plain(x)).abs().max() > 1e-3, names[layer]
    # through the regularizer: one disrupted pass per iteration, whatever the filter count
    eats.seed = 0
    ctx = SimpleNamespace(net=net, lq=x, gt=None, iteration=5, seed=0)
    eats.transform_batch(ctx)
    (layer, erased, disruptors), = eats.pairs
    assert len(erased) == 3
    last_calls.clear()
    out = net(x)
    l_awa = eats.extra_losses(ctx, out)['l_awa']
    assert len(last_calls) == 2  # the normal pass and a single disrupted pass
    twin = erased_by_weight_copy(plain, net, eats.layers[layer], erased, disruptors)
    target = F.interpolate(x, scale_factor=4, mode='bicubic', align_corners=False).clamp(0, 1)
    assert torch.allclose(l_awa, F.l1_loss(twin(x), target), atol=1e-6)


def test_eats_num_filters_needs_enough_channels(tmp_path):
    with pytest.raises(OptionError) as err:
        validate_options(options(TINY_SRRESNET, [{'type': 'EATS', 'num_filters': 9}], tmp_path))
    assert str(err.value) == ("train.regularizers[0].layers: EATS with num_filters 9 needs 18 channels per layer, "
                              "but MSRResNet's 'head.0' has 16")
