"""train.compile: the same training as eager for every regularizer that supports it, the same checkpoints, eager
validation, and clear errors for what cannot be compiled.

torch.compile runs here with backend 'aot_eager' (dynamo's tracing and AOTAutograd's joint graph, executed by
eager kernels): inductor on a CPU first builds C++ kernels, which takes minutes for even a tiny network on
the project's 2-core machine. With aot_eager the random draws (dropout masks) are eager's, so the losses
must match to float rounding; inductor draws its own and is checked on a GPU by scripts/gpu_check.py.
"""
import pytest
import torch

from basicsr_ext.config import OptionError
from basicsr_ext.models.timing_setup import build_training_model

NET = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4}
REGULARIZERS = {
    'baseline': [],
    'Dropout': [{'type': 'Dropout', 'p': 0.5}],
    'AdaptiveDropout': [{'type': 'AdaptiveDropout', 'interval': 1}],  # a site anneals every step: recompiles
    'AdaptiveDropout implicit': [{'type': 'AdaptiveDropout', 'implicit': True, 'interval': 2}],
    'DropBlock': [{'type': 'DropBlock', 'block_size': 3, 'drop_rate': 0.2, 'sites': ['blocks.*']}],
    'DropConnect': [{'type': 'DropConnect', 'sites': ['blocks.*.conv.0']}],
    'EATS (full second pass)': [{'type': 'EATS', 'reuse_prefix': False}],
    'ECO': [{'type': 'ECO', 'teacher_path': None, 'schedule_iters': 4}],
}
SGD = {'type': 'SGD', 'lr': 0.05, 'momentum': 0.9}
COMPILED = {'compile': 'default', 'compile_backend': 'aot_eager'}


def train(workdir, regularizers, steps=3, **train_opt):
    torch.manual_seed(0)
    # SGD: Adam's first steps are about lr·sign(gradient), which turns a float-rounding difference of a
    # zero gradient (a dropped channel's weights) into a whole step
    model = build_training_model(NET, str(workdir), 10, regularizers, ema_decay=0.5, optim_g=SGD, **train_opt)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for it in range(1, steps + 1):
        batch = {'lq': torch.rand(2, 3, 8, 8, generator=gen), 'gt': torch.rand(2, 3, 32, 32, generator=gen)}
        torch.manual_seed(100 + it)  # the same masks for both runs: aot_eager draws with eager's generator
        model.update_learning_rate(it)
        model.feed_data(batch, it)
        model.optimize_parameters(it)
        losses.append({k: float(v) for k, v in model.get_current_log().items()})
    return model, losses


@pytest.fixture
def teacher(tmp_path):
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(3)
    path = tmp_path / 'teacher.pth'
    torch.save({'params': MSRResNet(num_feat=8, num_block=2, upscale=4).state_dict()}, path)
    return str(path)


@pytest.mark.parametrize('name', list(REGULARIZERS))
def test_compiled_training_follows_the_eager_loss_trajectory(tmp_path, name, teacher):
    regs = [dict(r, teacher_path=teacher) if r['type'] == 'ECO' else r for r in REGULARIZERS[name]]
    eager, eager_losses = train(tmp_path / 'eager', regs)
    compiled, compiled_losses = train(tmp_path / 'compiled', regs, **COMPILED)
    assert compiled.net_g.compiled is not None and eager.net_g.compiled is None
    assert [sorted(step) for step in compiled_losses] == [sorted(step) for step in eager_losses]
    for a, b in zip(eager_losses, compiled_losses):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (key, eager_losses, compiled_losses)
    # the checkpoint is the bare network's, whatever ran the forward: same keys, same values
    sa, sb = eager.network_state(), compiled.network_state()
    assert sorted(sa) == sorted(sb) and 'params_ema' in sb
    for key in sa:
        assert list(sa[key]) == list(sb[key]) and not any('_orig_mod' in k for k in sb[key])
        for k, v in sa[key].items():
            torch.testing.assert_close(sb[key][k], v, rtol=1e-4, atol=1e-5)


def test_eval_forwards_run_eagerly_and_do_not_recompile(tmp_path):
    from torch._dynamo.utils import counters
    model, _ = train(tmp_path, REGULARIZERS['Dropout'], steps=1, **COMPILED)
    frames = counters['stats']['unique_graphs']
    model.net_g.eval()
    with torch.no_grad():
        out = model.net_g(torch.rand(1, 3, 12, 10))  # a validation image of another size
    assert out.shape == (1, 3, 48, 40) and counters['stats']['unique_graphs'] == frames
    model.net_g.train()
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 32, 32)}, 2)
    model.optimize_parameters(2)
    assert counters['stats']['unique_graphs'] == frames  # back in training: the same graph


def test_exact_eats_cannot_be_compiled(tmp_path):
    with pytest.raises(OptionError) as err:
        build_training_model(NET, str(tmp_path), 10, [{'type': 'Dropout'}, {'type': 'EATS'}], compile=True)
    assert str(err.value).startswith('train.regularizers[1]: EATS with reuse_prefix: true cannot be compiled '
                                     '(train.compile)')
    assert 'reuse_prefix: false' in str(err.value)


@pytest.mark.parametrize('train_opt, message', [
    ({'compile': 'fast'}, "train.compile: expected false, true, 'default', 'reduce-overhead' or 'max-autotune', "
     "got 'fast'"),
    ({'compile': True, 'compile_backend': 'nope'}, "train.compile_backend: 'nope' is not a torch.compile backend; "
     'available: '),
    ({'compile': 'max-autotune', 'compile_backend': 'aot_eager'}, "train.compile: mode 'max-autotune' is an inductor "
     "mode, but compile_backend is 'aot_eager'; use compile: default with that backend"),
])
def test_bad_compile_options_name_the_key(tmp_path, train_opt, message):
    with pytest.raises(OptionError) as err:
        build_training_model(NET, str(tmp_path), 10, **train_opt)
    assert str(err.value).startswith(message)


def test_compile_true_means_the_default_mode(tmp_path):
    from basicsr_ext.config import validate_options
    from basicsr_ext.models.timing_setup import training_options
    opt = validate_options(training_options(NET, str(tmp_path), 10, compile=True))
    assert opt['train']['compile'] == 'default' and opt['train']['compile_backend'] == 'inductor'
    assert validate_options(training_options(NET, str(tmp_path), 10))['train']['compile'] is False
