"""The training wrapper: the network and its regularizers side by side in one module.

The optimizer, DDP and ``.train()``/``.eval()`` see one module, so a regularizer's learnable
parameters (AdaptiveDropout's implicit w) are optimised and synchronised like the network's,
and ``eval()`` turns every site transform off. The architecture itself is never edited:
``net`` is the bare arch and its state dict is the checkpoint's ``params``.
"""
from torch import nn

from ..archs import get_sites
from ..regularizers import build_regularizers
from ..utils.misc import unwrap


class TrainableNetwork(nn.Module):

    def __init__(self, net, reg_opts=(), total_iter=1, network_opt=None):
        super().__init__()
        self.net = net
        regs = build_regularizers(reg_opts, get_sites(net), total_iter, network_opt) if reg_opts else []
        self.regularizers = nn.ModuleList(regs)

    def forward(self, x):
        return self.net(x)


def bare_network(net):
    """The architecture inside DDP and the training wrapper."""
    net = unwrap(net)
    return net.net if isinstance(net, TrainableNetwork) else net
