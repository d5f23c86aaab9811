"""Architectures: parameter counts, scales, regularizer sites, HAN attention modules.

Full-size models are only built (for their parameter counts); every forward uses tiny widths.
"""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import pytest
import torch
import torch.nn.functional as F
from basicsr.archs.rcan_arch import RCAN
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.archs.swinir_arch import SwinIR

from basicsr_ext.archs import build_network, get_sites
from basicsr_ext.archs.han_arch import HAN, HAN_PRESETS, ChannelSpatialAttention, LayerAttention
from basicsr_ext.archs.rrdbnet_arch import RRDBNetAnyScale
from basicsr_ext.archs.swinir_arch import SWINIR_PRESETS, swinir_window_size

pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid')


def n_params(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# ---------------------------------------------------------------- parameter counts
# ×4 references are from docs and the published models; ×2/×3 follow from swapping the
# upsampler, e.g. HAN ×2 = ×4 - 2·(9·64·256+256) + (9·64·256+256) = 15,924,033.
@pytest.mark.parametrize('opt, expected', [
    (dict(type='MSRResNet', num_feat=64, num_block=16, upscale=4), 1_517_571),
    (dict(type='RRDBNetAnyScale', num_feat=64, num_block=23, num_grow_ch=32, scale=4), 16_697_987),
    (dict(type='SwinIR', **SWINIR_PRESETS['swinir_classical'], upscale=4), 11_900_199),
    (dict(type='SwinIR', **SWINIR_PRESETS['swinir_light'], upscale=4), 929_628),
    (dict(type='SwinIR', **SWINIR_PRESETS['swinir_light'], upscale=2), 910_152),
    (dict(type='SwinIR', **SWINIR_PRESETS['swinir_light'], upscale=3), 918_267),
    (dict(type='HAN', **HAN_PRESETS['han'], upscale=4), 16_071_745),
    (dict(type='HAN', **HAN_PRESETS['han'], upscale=2), 15_924_033),
    (dict(type='HAN', **HAN_PRESETS['han_lite'], upscale=4), 783_261),
    (dict(type='HAN', **HAN_PRESETS['han_lite'], upscale=3), 792_509),
],
                         ids=lambda v: v if isinstance(v, int) else f"{v['type']}-x{v.get('upscale', v.get('scale'))}")
def test_param_count(opt, expected):
    assert n_params(build_for_count(opt)) == expected


def build_for_count(opt):
    """The network without the cost of initialising weights (meta tensors) or attention masks."""
    if opt['type'] == 'SwinIR':  # its constructor calls .item(), impossible on meta tensors
        return build_network(dict(opt, img_size=opt['window_size']))  # img_size only sizes buffers
    with torch.device('meta'):
        return build_network(opt)


def test_rcan_cross_check_and_han_defaults():
    # HAN = RCAN(10 groups of 20) + LAM/CSAM/fusion (479,390)
    with torch.device('meta'):
        rcan = RCAN(3, 3, num_feat=64, num_group=10, num_block=20, squeeze_factor=16, upscale=4)
        han = HAN()  # constructor defaults are the official configuration
    assert n_params(rcan) == 15_592_355
    assert n_params(han) == 16_071_745
    assert sum(p.numel() for p in han.parameters()) == 16_071_745  # no frozen MeanShift convs
    assert 'mean' not in han.state_dict()


def test_swinir_img_size_only_sizes_buffers():
    opt = dict(SWINIR_PRESETS['swinir_light'], embed_dim=12, depths=[2], num_heads=[2], upscale=4)  # the 2nd block is shifted, so it has an attn_mask
    a, b = SwinIR(**dict(opt, img_size=32)), SwinIR(**dict(opt, img_size=64))
    assert n_params(a) == n_params(b)
    assert sum(x.numel() for x in a.buffers()) < sum(x.numel() for x in b.buffers())


# ---------------------------------------------------------------- tiny networks
def tiny(arch, scale):
    if arch == 'msrresnet':
        return MSRResNet(num_feat=8, num_block=2, upscale=scale)
    if arch == 'rrdb':
        return RRDBNetAnyScale(num_feat=8, num_block=2, num_grow_ch=4, scale=scale)
    if arch.startswith('swinir'):
        upsampler = arch.split('_', 1)[1]
        return SwinIR(img_size=8, embed_dim=12, depths=[1, 1], num_heads=[2, 2], window_size=4, mlp_ratio=2,
                      upsampler=upsampler, upscale=scale)
    if arch == 'han':
        return HAN(num_feat=8, num_group=2, num_block=2, squeeze_factor=4, upscale=scale)
    raise KeyError(arch)


ARCHS = ['msrresnet', 'rrdb', 'swinir_pixelshuffledirect', 'swinir_pixelshuffle', 'han']
LR = (8, 12)  # not square, so H/W mix-ups show; a multiple of SwinIR's window (4)


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('arch', ARCHS)
def test_output_is_scale_times_input(arch, scale):
    torch.manual_seed(0)
    net = tiny(arch, scale).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *LR))
    assert out.shape == (2, 3, LR[0] * scale, LR[1] * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_han_runs_on_meta_device(scale):
    # the options loader checks the scale with a meta-device forward
    with torch.device('meta'):
        net = HAN(num_feat=8, num_group=2, num_block=1, squeeze_factor=4, upscale=scale)
        assert net(torch.empty(1, 3, 16, 16)).shape == (1, 3, 16 * scale, 16 * scale)


def test_swinir_window_size():
    assert swinir_window_size(tiny('swinir_pixelshuffle', 2)) == 4
    assert swinir_window_size(SwinIR(**dict(SWINIR_PRESETS['swinir_light'], img_size=4, depths=[1]), upscale=2)) == 4
    assert not hasattr(tiny('swinir_pixelshuffle', 2), 'window_size')  # why the helper exists


def test_swinir_nearest_conv_x4():
    net = tiny('swinir_nearest+conv', 4).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, *LR)).shape == (1, 3, LR[0] * 4, LR[1] * 4)
    assert get_sites(net).last_conv_input.module is net.conv_last


# ---------------------------------------------------------------- sites
def expected_names(n_blocks, n_convs, n_tail):
    names = ['head.0']
    for i in range(n_blocks):
        names += [f'blocks.{i}.conv.{j}' for j in range(n_convs)] + [f'blocks.{i}']
    return names + [f'tail.{j}' for j in range(n_tail)] + ['last_conv_input']


@pytest.mark.parametrize('arch, n_blocks, n_convs, block_ch, conv_ch, tail_ch, last_ch', [
    ('msrresnet', 2, 2, 8, [8, 8], [32, 32, 8], 8),  # upconv1, upconv2, conv_hr
    ('rrdb', 2, 15, 8, [4, 4, 4, 4, 8] * 3, [8, 8, 8, 8], 8),  # conv_body, conv_up1, conv_up2, conv_hr
    ('swinir_pixelshuffledirect', 2, 1, 12, [12], [12], 12),  # conv_after_body (the upsampling conv is the last)
    # conv_after_body, conv_before_upsample, 2 upsampling convs; basicsr's pixelshuffle head is always 64 wide
    ('swinir_pixelshuffle', 2, 1, 12, [12], [12, 64, 256, 256], 64),
    ('han', 2, 4, 8, [8, 8, 8, 8], [8, 8, 8, 32, 32], 8),  # conv_after_body, lam_fuse, fuse, 2 upsampling convs
])
def test_site_enumeration(arch, n_blocks, n_convs, block_ch, conv_ch, tail_ch, last_ch):
    net = tiny(arch, 4)
    sites = get_sites(net)
    assert sites.names() == expected_names(n_blocks, n_convs, len(tail_ch))
    assert [s.index for s in sites.blocks] == list(range(n_blocks))
    assert [s.index for s in sites.convs] == list(range(n_blocks * n_convs))
    assert [s.index for s in sites.tail] == list(range(len(tail_ch)))
    assert all(s.num_channels() == block_ch for s in sites.blocks)
    assert all([s.num_channels() for s in row] == conv_ch for row in sites.block_convs)
    assert [s.num_channels() for s in sites.tail] == tail_ch
    assert sites.head[0].num_channels() == (12 if arch.startswith('swinir') else 8)
    assert sites.last_conv_input.num_channels() == last_ch
    assert sites.all_convs == sites.head + sites.convs + sites.tail


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('arch', ARCHS + ['swinir_nearest+conv'])
def test_head_and_tail_sites_are_the_convs_outside_the_body(arch, scale):
    """head.0 is conv_first; tail.* are the convs between the body and the last conv, in forward order."""
    if arch == 'swinir_nearest+conv' and scale != 4:
        pytest.skip("basicsr's nearest+conv upsampler is ×4 only")
    net = tiny(arch, scale)
    sites = get_sites(net)
    assert [s.module for s in sites.head] == [net.conv_first]
    upsampler = getattr(net, 'upsampler', None)
    if arch == 'msrresnet':
        expected = [net.upconv1] + ([net.upconv2] if scale == 4 else []) + [net.conv_hr]
    elif arch == 'rrdb':
        expected = [net.conv_body, net.conv_up1, net.conv_up2, net.conv_hr]
    elif upsampler == 'pixelshuffle':
        expected = [net.conv_after_body, net.conv_before_upsample[0]] + [m for m in net.upsample if
                                                                          isinstance(m, torch.nn.Conv2d)]
    elif upsampler == 'nearest+conv':
        expected = [net.conv_after_body, net.conv_before_upsample[0], net.conv_up1, net.conv_up2, net.conv_hr]
    elif upsampler == 'pixelshuffledirect':
        expected = [net.conv_after_body]
    else:  # han
        expected = [net.conv_after_body, net.lam_fuse, net.fuse] + [m for m in net.upsample
                                                                      if isinstance(m, torch.nn.Conv2d)]
    assert [s.module for s in sites.tail] == expected
    assert sites.last_conv_input.module not in [s.module for s in sites.tail]
    assert [s.name for s in sites.select('tail.*')] == [f'tail.{j}' for j in range(len(expected))]
    # the forward runs them in this order, after every body site and before the last conv
    order = []
    handles = [s.register_transform(lambda f, n=s.name: order.append(n) or f) for s in sites.all()]
    with torch.no_grad():
        net.eval()(torch.rand(1, 3, *LR))
    for h in handles:
        h.remove()
    assert order == sites.names()


def test_site_modules():
    han = tiny('han', 4)
    s = get_sites(han)
    assert [b.module for b in s.blocks] == list(han.body)  # groups only, not the trailing body conv
    assert [c.module for c in s.block_convs[1]] == [m for r in han.body[1].residual_group for m in (r.rcab[0], r.rcab[2])]
    assert s.last_conv_input.module is han.conv_last

    direct, shuffle = tiny('swinir_pixelshuffledirect', 4), tiny('swinir_pixelshuffle', 4)
    assert get_sites(direct).last_conv_input.module is direct.upsample[0]
    assert get_sites(shuffle).last_conv_input.module is shuffle.conv_last
    assert [b.module for b in get_sites(shuffle).blocks] == list(shuffle.layers)
    assert all(b.layout == 'tokens' for b in get_sites(shuffle).blocks)

    three = SwinIR(img_size=8, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2,
                   upsampler='pixelshuffledirect', resi_connection='3conv')
    assert [c.num_channels() for c in get_sites(three).block_convs[0]] == [3, 3, 12]


@pytest.mark.parametrize('arch', ARCHS)
def test_transforms_fire_in_site_order_and_act(arch):
    torch.manual_seed(0)
    net = tiny(arch, 3).eval()
    sites = get_sites(net)
    x = torch.rand(1, 3, *LR)
    with torch.no_grad():
        ref = net(x)

    fired = []
    handles = [s.register_transform(lambda f, n=s.name: fired.append(n) or f) for s in sites.all()]
    with torch.no_grad():
        same = net(x)
    for h in handles:
        h.remove()
    assert fired == sites.names()  # shallow to deep, each once
    assert torch.equal(same, ref)  # identity transforms are bit-exact, token sites included

    for site in sites.all():
        handle = site.register_transform(torch.zeros_like)
        with torch.no_grad():
            changed = net(x)
        handle.remove()
        assert not torch.allclose(changed, ref), site.name
    with torch.no_grad():
        assert torch.equal(net(x), ref)  # removed handles leave nothing behind


def test_swinir_token_site_channel_is_embedding_dim():
    torch.manual_seed(0)
    net = tiny('swinir_pixelshuffledirect', 2).eval()
    site = get_sites(net).blocks[0]
    seen = {}

    def zero_channel_5(feat):
        seen['nchw'] = feat.clone()
        feat = feat.clone()
        feat[:, 5] = 0
        return feat

    site.register_transform(zero_channel_5)
    site.module.register_forward_hook(lambda m, a, out: seen.setdefault('tokens', out))  # runs after the transform
    with torch.no_grad():
        net(torch.rand(2, 3, *LR))
    nchw, tokens = seen['nchw'], seen['tokens']
    h, w = LR
    assert nchw.shape == (2, 12, h, w) and tokens.shape == (2, h * w, 12)
    assert (tokens[:, :, 5] == 0).all()
    assert (tokens[:, :, [4, 6]] != 0).any()
    # the NCHW view puts token i*W + j at pixel (i, j), as SwinIR's own patch_unembed does
    assert torch.equal(nchw[:, 3, 1, 2], net.patch_unembed(tokens, (h, w))[:, 3, 1, 2])
    assert torch.equal(nchw[:, 3, 1, 2], tokens[:, 1 * w + 2, 3])


def test_swinir_last_conv_input_is_lr_for_direct_head():
    net = tiny('swinir_pixelshuffledirect', 4).eval()
    shapes = []
    get_sites(net).last_conv_input.register_transform(lambda f: shapes.append(tuple(f.shape)) or f)
    with torch.no_grad():
        net(torch.rand(1, 3, *LR))
    assert shapes == [(1, 12, *LR)]


# ---------------------------------------------------------------- HAN attention modules
def test_lam_and_csam_are_identities_at_init():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 6) * 100
    lam, csam = LayerAttention(), ChannelSpatialAttention()
    assert lam.gamma.item() == 0 and csam.gamma.item() == 0
    assert torch.equal(lam(x), x.reshape(2, 12, 5, 6))
    assert torch.equal(csam(x[:, 0]), x[:, 0])


def test_lam_gamma_learns_from_zero():
    x = torch.randn(1, 3, 2, 4, 4)
    lam = LayerAttention()
    lam(x).square().sum().backward()
    assert lam.gamma.grad.abs().item() > 0


def test_lam_and_csam_match_their_definitions():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 5, 5) * 0.05  # small, so the softmax is not one-hot
    lam = LayerAttention()
    lam.gamma.data.fill_(0.7)
    v = x.double().reshape(2, 4, -1)
    energy = v @ v.transpose(1, 2)
    attn = torch.softmax(energy.max(-1, keepdim=True).values - energy, dim=-1)
    assert attn.max() < 0.9
    ref = (0.7 * attn @ v + v).reshape(2, 12, 5, 5)
    torch.testing.assert_close(lam(x).double(), ref, rtol=1e-5, atol=1e-6)

    csam = ChannelSpatialAttention()
    csam.gamma.data.fill_(0.5)
    feat = x[:, 0]
    gate = torch.sigmoid(F.conv3d(feat.unsqueeze(1), csam.conv.weight, csam.conv.bias, padding=1)).squeeze(1)
    torch.testing.assert_close(csam(feat), feat * (1 + 0.5 * gate))


def test_han_stacks_groups_and_trailing_conv_newest_first():
    torch.manual_seed(0)
    net = HAN(num_feat=8, num_group=3, num_block=1, squeeze_factor=4, upscale=2).eval()
    assert net.lam_fuse.in_channels == 8 * 4
    outs = {}
    for name, mod in [('g0', net.body[0]), ('g1', net.body[1]), ('g2', net.body[2]),
                      ('trail', net.conv_after_body)]:
        mod.register_forward_hook(lambda m, a, o, n=name: outs.__setitem__(n, o.clone()))
    net.lam_fuse.register_forward_pre_hook(lambda m, a: outs.__setitem__('lam', a[0].clone()))
    net.fuse.register_forward_pre_hook(lambda m, a: outs.__setitem__('fuse', a[0].clone()))
    with torch.no_grad():
        net(torch.rand(1, 3, *LR))
    # γ = 0: LAM passes the stack through, CSAM passes the body output through
    assert torch.equal(outs['lam'], torch.cat([outs[k] for k in ('trail', 'g2', 'g1', 'g0')], 1))
    assert torch.equal(outs['fuse'][:, :8], outs['trail'])


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_lam_runs_in_fp32_under_autocast(dtype):
    torch.manual_seed(0)
    # features of 255-range inputs: energies ~1e8, beyond fp16's 65504
    x = (torch.rand(1, 7, 8, 16, 16) * 255).to(dtype)
    lam = LayerAttention()
    lam.gamma.data.fill_(1.0)
    with torch.autocast('cpu', dtype=dtype):
        if dtype == torch.float16:  # the overflow this guards against is real on this build
            v = x.reshape(1, 7, -1)
            assert torch.isinf(torch.bmm(v, v.transpose(1, 2))).any()
        out = lam(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    v = x.double().reshape(1, 7, -1)
    energy = v @ v.transpose(1, 2)
    attn = torch.softmax(energy.max(-1, keepdim=True).values - energy, dim=-1)
    ref = (attn @ v + v).reshape(1, 56, 16, 16)
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)


def test_han_forward_finite_under_bf16_autocast():
    torch.manual_seed(0)
    net = tiny('han', 2).eval()
    net.lam.gamma.data.fill_(1.0)
    net.csam.gamma.data.fill_(1.0)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = net(torch.rand(1, 3, *LR))
    assert torch.isfinite(out).all()


def test_han_rejects_inconsistent_channels():
    with pytest.raises(ValueError, match='rgb_mean'):
        HAN(num_in_ch=1, num_out_ch=1, num_feat=8, num_group=1, num_block=1, squeeze_factor=4)
    HAN(num_in_ch=1, num_out_ch=1, num_feat=8, num_group=1, num_block=1, squeeze_factor=4, rgb_mean=[0.5])


# ---------------------------------------------------------------- scripts/model_summary.py
def _model_summary():
    from conftest import load_script
    return load_script('model_summary')


def test_model_summary_sources_agree(tmp_path, capsys):
    import json
    ms = _model_summary()
    assert ms.preset_options('han_lite', 3) == dict(type='HAN', **HAN_PRESETS['han_lite'], upscale=3)
    tiny_han = ['num_feat=8', 'num_group=2', 'num_block=1', 'squeeze_factor=4', 'upscale=2']
    yml = tmp_path / 'o.yml'
    yml.write_text('scale: 2\nnetwork_g:\n  type: HAN\n' + ''.join(f'  {kv.replace("=", ": ")}\n' for kv in tiny_han))
    rows = []
    for argv in (['-opt', str(yml)], ['--arch', 'HAN', '--arch_opt', *tiny_han, '--time', '--runs', '1'],
                 ['--preset', 'han', '--arch_opt', *tiny_han]):
        ms.main(argv + ['--lr_size', '8x12', '--json'])
        rows += json.loads(capsys.readouterr().out)
    expected = n_params(HAN(**{k: int(v) for k, v in (kv.split('=') for kv in tiny_han)}))
    assert [r['params'] for r in rows] == [expected] * 3
    assert len({r['gflops'] for r in rows}) == 1
    assert all(r['output_shape'] == [1, 3, 16, 24] and r['site_summary']['blocks'] == 2 for r in rows)
    assert rows[1]['cpu_forward_s'] > 0
