"""Named attachment sites: the contract between architectures and regularizers.

A regularizer never edits an architecture. It asks for the *sites* of a network and
registers a feature transform on some of them. Every architecture supported by the
framework declares a sites function (``net -> ArchSites``) in its :class:`~.spec.ArchSpec`,
registered next to the arch (``*_arch.py``), not inside the arch class, so basicsr's own
classes work unchanged.

Site names (shallow to deep, the order of :meth:`ArchSites.all`):

* ``head.<j>``             output of the j-th convolution before the body (``conv_first``);
* ``blocks.<i>``           output of the i-th body block (residual block, RRDB, RSTB, group);
* ``blocks.<i>.conv.<j>``  output of the j-th convolution inside block i;
* ``tail.<j>``             output of the j-th convolution between the body and the last conv: the
  trunk-closing conv, fusion convs, the upsampler's convs and the HR conv, in the order the forward
  runs them (the last conv itself, whose output is the image, is not a site);
* ``last_conv_input``      the input of the final convolution (Kong et al.'s dropout position).

Convolution sites (head, block convs, tail) are read before any activation.

A feature transform always sees an NCHW tensor. For token layouts (SwinIR's
``(B, H*W, C)`` with ``x_size=(H, W)`` passed as the second positional argument) the
site reshapes to NCHW and back, so a "channel" of a token tensor is one embedding
dimension across all tokens of the image.
"""
import fnmatch
from dataclasses import dataclass, field
from typing import Callable, List, Sequence

import torch
from torch import nn

from ..utils.misc import unwrap
from .spec import arch_spec, supported_archs

BLOCK, CONV, HEAD, TAIL, LAST_CONV_INPUT = 'block', 'conv', 'head', 'tail', 'last_conv_input'

def tokens_to_nchw(tokens, x_size):
    b, _, c = tokens.shape
    h, w = x_size
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def nchw_to_tokens(x):
    return x.flatten(2).transpose(1, 2)


@dataclass(eq=False)
class Site:
    """One named place of a network where a feature can be read or transformed."""
    name: str
    module: nn.Module
    kind: str
    index: int  # position in the global shallow-to-deep order of its kind
    layout: str = 'nchw'  # 'nchw' or 'tokens'

    def register_transform(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        """Apply ``fn(feature_nchw) -> feature_nchw`` to this site's feature on every forward.

        Returns a handle with ``.remove()``.
        """
        if self.kind == LAST_CONV_INPUT:

            def pre_hook(module, args):
                return (self._apply(fn, args[0], args), ) + tuple(args[1:])

            return self.module.register_forward_pre_hook(pre_hook)

        def hook(module, args, output):
            return self._apply(fn, output, args)

        return self.module.register_forward_hook(hook)

    def _apply(self, fn, feat, args):
        if self.layout == 'tokens':
            return nchw_to_tokens(fn(tokens_to_nchw(feat, args[1])))
        return fn(feat)

    def num_channels(self) -> int:
        """Channels of the feature at this site (read from the weights, no forward needed)."""
        return _site_channels(self)


def _site_channels(site):
    m = site.module
    if site.kind == LAST_CONV_INPUT:
        return m.in_channels
    if isinstance(m, (nn.Conv2d, nn.Conv3d)):
        return m.out_channels
    # a block: the channels of its last conv, or of the last Linear for token blocks
    last = None
    for sub in m.modules():
        if isinstance(sub, nn.Conv2d):
            last = sub.out_channels
    if last is None:
        raise ValueError(f'cannot infer the channels of site {site.name}')
    return last


@dataclass(eq=False)
class ArchSites:
    """All sites of one network instance."""
    arch: str
    blocks: List[Site]
    block_convs: List[List[Site]]
    last_conv_input: Site
    head: List[Site] = field(default_factory=list)  # convs before the body
    tail: List[Site] = field(default_factory=list)  # convs between the body and the last conv

    @property
    def convs(self) -> List[Site]:
        """The convolutions inside the body blocks (not head or tail)."""
        return [s for convs in self.block_convs for s in convs]

    @property
    def all_convs(self) -> List[Site]:
        """Every convolution site, shallow to deep: head, body convs, tail."""
        return self.head + self.convs + self.tail

    def all(self) -> List[Site]:
        out = list(self.head)
        for block, convs in zip(self.blocks, self.block_convs):
            out.extend(convs)
            out.append(block)
        out.extend(self.tail)
        out.append(self.last_conv_input)
        return out

    def names(self) -> List[str]:
        return [s.name for s in self.all()]

    def __getitem__(self, name) -> Site:
        for s in self.all():
            if s.name == name:
                return s
        raise KeyError(f'{self.arch} has no site {name!r}; sites are: {describe_names(self.names())}')

    def select(self, pattern: str) -> List[Site]:
        """Sites matching a glob pattern (``blocks.*``, ``blocks.*.conv.0``, ``last_conv_input``), shallow first."""
        matched = [s for s in self.all() if fnmatch.fnmatchcase(s.name, pattern)]
        if not matched:
            raise KeyError(f'{self.arch} has no site matching {pattern!r}; sites are: {describe_names(self.names())}')
        return matched


def _index_range(prefix, count):
    return f'{prefix}.0' if count == 1 else f'{prefix}.0..{count - 1}'


def describe_names(names):
    """Compact listing: 'head.0, blocks.0..15, blocks.<i>.conv.0..1, tail.0..2, last_conv_input'."""
    blocks = [n for n in names if n.startswith('blocks.') and n.count('.') == 1]
    convs = sorted({n.split('.', 2)[2] for n in names if '.conv.' in n})
    counts = {prefix: sum(n.startswith(prefix + '.') for n in names) for prefix in (HEAD, TAIL)}
    parts = []
    if counts[HEAD]:
        parts.append(_index_range(HEAD, counts[HEAD]))
    if blocks:
        parts.append(f'blocks.0..{len(blocks) - 1}')
    if convs:
        js = sorted(int(c.split('.')[1]) for c in convs)
        parts.append(f'blocks.<i>.conv.{js[0]}..{js[-1]}')
    if counts[TAIL]:
        parts.append(_index_range(TAIL, counts[TAIL]))
    parts.extend(n for n in names if not n.startswith(('blocks.', HEAD + '.', TAIL + '.')))
    return ', '.join(parts)


def build_sites(arch_name, blocks, block_convs, last_conv, layout='nchw', head: Sequence[nn.Module] = (),
                tail: Sequence[nn.Module] = ()) -> ArchSites:
    """Assemble ArchSites from modules: the head convs, blocks (shallow first), the convs of each block,
    the tail convs (in forward order) and the last conv."""
    block_sites, conv_sites = [], []
    conv_index = 0
    for i, (block, convs) in enumerate(zip(blocks, block_convs)):
        block_sites.append(Site(f'blocks.{i}', block, BLOCK, i, layout=layout))
        row = []
        for j, conv in enumerate(convs):
            row.append(Site(f'blocks.{i}.conv.{j}', conv, CONV, conv_index, layout='nchw'))
            conv_index += 1
        conv_sites.append(row)
    last = Site(LAST_CONV_INPUT, last_conv, LAST_CONV_INPUT, 0)
    head_sites = [Site(f'{HEAD}.{j}', conv, HEAD, j) for j, conv in enumerate(head)]
    tail_sites = [Site(f'{TAIL}.{j}', conv, TAIL, j) for j, conv in enumerate(tail)]
    return ArchSites(arch_name, block_sites, conv_sites, last, head=head_sites, tail=tail_sites)


def convs_in(*modules) -> List[nn.Module]:
    """The Conv2d modules of ``modules`` (each a conv, a container of convs, or None), in order."""
    return [m for module in modules if module is not None for m in module.modules() if isinstance(m, nn.Conv2d)]


def get_sites(net: nn.Module) -> ArchSites:
    """The sites of ``net`` (unwrapping DataParallel/DDP), from its architecture spec."""
    net = unwrap(net)
    spec = arch_spec(net)
    if spec.sites is None:
        raise TypeError(f'architecture {type(net).__name__} declares no regularizer sites; '
                        f'architectures with sites: {", ".join(supported_archs())}')
    return spec.sites(net)


def has_sites(net: nn.Module) -> bool:
    return arch_spec(net).sites is not None
