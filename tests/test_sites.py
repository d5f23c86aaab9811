"""The site interface of the two foundation architectures (SwinIR and HAN are covered in test_archs.py)."""
import pytest
import torch

from basicsr_ext.archs import build_network, get_sites


@pytest.mark.parametrize('opt, blocks, convs_per_block, channels', [
    (dict(type='MSRResNet', num_feat=8, num_block=3, upscale=4), 3, 2, 8),
    (dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, num_grow_ch=4, scale=4), 2, 15, None),
    (dict(type='RRDBNetAnyScale', num_feat=8, num_block=2, num_grow_ch=4, scale=3), 2, 15, None),
])
def test_sites_are_enumerated_shallow_to_deep(opt, blocks, convs_per_block, channels):
    net = build_network(opt)
    sites = get_sites(net)
    assert [s.name for s in sites.blocks] == [f'blocks.{i}' for i in range(blocks)]
    assert [len(row) for row in sites.block_convs] == [convs_per_block] * blocks
    assert [s.index for s in sites.convs] == list(range(blocks * convs_per_block))
    assert sites.names()[-1] == 'last_conv_input' and sites.last_conv_input.module is net.conv_last
    assert sites.last_conv_input.num_channels() == 8
    assert sites.blocks[0].module is net.body[0]
    if channels:
        assert sites.blocks[0].num_channels() == channels
    assert [s.name for s in sites.select('blocks.*.conv.0')] == [f'blocks.{i}.conv.0' for i in range(blocks)]
    with pytest.raises(KeyError, match="has no site matching 'blocks.99'"):
        sites.select('blocks.99')


def test_transforms_act_at_sites_and_are_removable():
    torch.manual_seed(0)
    net = build_network(dict(type='MSRResNet', num_feat=8, num_block=2, upscale=2)).eval()
    x = torch.rand(1, 3, 8, 8)
    ref = net(x)
    sites = get_sites(net)
    seen = {}
    handle = sites['blocks.1'].register_transform(lambda f: seen.setdefault('shape', f.shape) and f)
    assert torch.equal(net(x), ref) and seen['shape'] == (1, 8, 8, 8)
    handle.remove()
    handle = sites.last_conv_input.register_transform(torch.zeros_like)
    out = net(x)
    bilinear = torch.nn.functional.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    torch.testing.assert_close(out, net.conv_last.bias.view(1, 3, 1, 1) + bilinear)  # only the bias survives
    handle.remove()
    assert torch.equal(net(x), ref)


def test_arch_without_sites_is_a_clear_error():
    with pytest.raises(TypeError, match='architecture Linear declares no regularizer sites'):
        get_sites(torch.nn.Linear(2, 2))
