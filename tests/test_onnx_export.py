"""ONNX export: every architecture runs in onnxruntime at any input size and batch, as in PyTorch."""
import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip('onnx', reason='the onnx extra is not installed: pip install -e ".[onnx]"')
ort = pytest.importorskip('onnxruntime', reason='the onnx extra is not installed: pip install -e ".[onnx]"')

from basicsr_ext.archs import build_network  # noqa: E402
from basicsr_ext.archs.forward import input_multiple  # noqa: E402
from basicsr_ext.models.export import check_onnx, export_onnx, trace_size  # noqa: E402
from conftest import load_script  # noqa: E402

TINY = {
    'MSRResNet': dict(type='MSRResNet', num_feat=8, num_block=2, upscale=4),
    'RRDBNetAnyScale_x3': dict(type='RRDBNetAnyScale', num_feat=8, num_block=1, num_grow_ch=4, scale=3),
    'RRDBNetAnyScale_x2': dict(type='RRDBNetAnyScale', num_feat=8, num_block=1, num_grow_ch=4, scale=2),
    # img_size 16: the check runs at 16x16, the size the blocks precomputed their masks for
    'SwinIR': dict(type='SwinIR', embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2., upscale=2,
                   img_size=16, upsampler='pixelshuffledirect', img_range=1.),
    'HAN': dict(type='HAN', num_feat=8, num_group=2, num_block=1, squeeze_factor=4, upscale=2),
}
SIZES = [(16, 16), (13, 21)]  # the second is a multiple of no window / unshuffle size


def _net(name, seed=0):
    torch.manual_seed(seed)
    net = build_network(TINY[name]).eval()
    with torch.no_grad():  # gammas that start at 0 (HAN's attention modules) would hide their branch
        for key, p in net.named_parameters():
            if key.endswith('gamma'):
                p.fill_(0.5)
    return net


def _scale(name):
    opt = TINY[name]
    return opt.get('upscale', opt.get('scale'))


@pytest.mark.parametrize('name', sorted(TINY))
def test_onnxruntime_matches_pytorch_fp32(tmp_path, name):
    net = _net(name)
    path = tmp_path / f'{name}.onnx'
    export_onnx(net, _scale(name), path, net_opt=TINY[name])
    rows = check_onnx(path, net, _scale(name), SIZES, batch=2)
    assert [(h, w) for h, w, _ in rows] == SIZES
    assert max(diff for _, _, diff in rows) <= 1e-4, rows
    # an independent run: onnxruntime on a batch of 3 equals PyTorch image by image
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = torch.rand(3, 3, 13, 21)
    out = session.run(None, {'input': x.numpy()})[0]
    s = _scale(name)
    assert out.shape == (3, 3, 13 * s, 21 * s)
    for i in range(3):
        m = input_multiple(net)
        pad = ((0, 0), (0, 0), (0, -13 % m), (0, -21 % m))
        xi = torch.from_numpy(np.pad(x[i:i + 1].numpy(), pad, mode='reflect'))
        with torch.no_grad():
            ref = net(xi)[..., :13 * s, :21 * s].numpy()
        assert np.abs(out[i:i + 1] - ref).max() <= 1e-4


def test_the_check_measures_the_difference(tmp_path):
    net = _net('MSRResNet')
    path = tmp_path / 'a.onnx'
    export_onnx(net, 4, path)
    with torch.no_grad():
        net.conv_last.bias.add_(0.25)  # the file keeps the old weights
    rows = check_onnx(path, net, 4, SIZES)
    assert all(abs(diff - 0.25) < 1e-4 for _, _, diff in rows), rows


def test_swinir_trace_avoids_the_precomputed_mask_size():
    net = _net('SwinIR')  # window 4, masks for 16x16
    h, w = trace_size(net, 4)
    assert h % 4 and w % 4 and (-(-h // 4) * 4, -(-w // 4) * 4) != (16, 16)


@pytest.mark.parametrize('name', ['SwinIR', 'HAN'])
def test_fp16_graph(tmp_path, name):
    net = _net(name)
    path = tmp_path / f'{name}_fp16.onnx'
    export_onnx(net, _scale(name), path, fp16=True)
    model = onnx.load(path)
    elem = model.graph.input[0].type.tensor_type.elem_type
    assert elem == onnx.TensorProto.FLOAT16 and model.graph.output[0].type.tensor_type.elem_type == elem
    rows = check_onnx(path, net, _scale(name), SIZES)
    assert max(diff for _, _, diff in rows) <= 1e-2, rows
    if name == 'HAN':  # the layer attention stays fp32 inside the fp16 graph
        casts = [a.i for n in model.graph.node if n.op_type == 'Cast' for a in n.attribute if a.name == 'to']
        assert onnx.TensorProto.FLOAT in casts


def test_script_exports_checks_and_records_metadata(tmp_path, capsys):
    script = load_script('export_onnx')
    net = _net('SwinIR')
    ckpt = tmp_path / 'net_g_5.pth'
    torch.save({'params': _net('SwinIR', seed=1).state_dict(), 'params_ema': net.state_dict()}, ckpt)
    arch_opt = ['embed_dim=12', 'depths=[2]', 'num_heads=[2]', 'window_size=4', 'mlp_ratio=2', 'img_size=16',
                'upsampler=pixelshuffledirect']
    code = script.main(['--model', str(ckpt), '--arch', 'SwinIR', '--arch_opt', *arch_opt, '--scale', '2',
                        '--opset', '18', '--check_sizes', '16x16', '9x14'])
    out = capsys.readouterr().out
    assert code == 0, out
    path = tmp_path / 'net_g_5.onnx'
    assert f'(params_ema of {ckpt}) to {path}' in out and 'opset 18, float32' in out
    assert 'padding to multiples of 4 inside the graph' in out
    assert 'input 16x16 -> 32x32: max abs diff' in out and 'input 9x14 -> 18x28: max abs diff' in out
    assert 'Check passed' in out
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta['arch'] == 'SwinIR' and meta['scale'] == '2' and meta['input_multiple'] == '4'
    assert meta['dtype'] == 'float32' and meta['source'] == 'net_g_5.pth'
    assert json.loads(meta['network_g'])['window_size'] == 4
    assert model.opset_import[0].version == 18
    # the exported weights are params_ema (auto): onnxruntime equals that network
    rows = check_onnx(path, net, 2, [(12, 12)])
    assert rows[0][2] <= 1e-4


def test_script_errors(tmp_path, capsys):
    script = load_script('export_onnx')
    assert script.main(['--model', str(tmp_path / 'missing.pth'), '--arch', 'MSRResNet']) == 2
    assert f"checkpoint '{tmp_path / 'missing.pth'}' does not exist" in capsys.readouterr().err
    ckpt = tmp_path / 'a.pth'
    torch.save({'params': _net('MSRResNet').state_dict()}, ckpt)
    assert script.main(['--model', str(ckpt), '--arch', 'MSRResNet', '--opset', '9']) == 2
    assert '--opset 9: the TorchScript ONNX exporter supports opsets 11 to 20' in capsys.readouterr().err
