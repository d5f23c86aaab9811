"""The training wrapper: the network and its regularizers side by side in one module.

The optimizer, DDP and ``.train()``/``.eval()`` see one module, so a regularizer's learnable
parameters (AdaptiveDropout's implicit w) are optimised and synchronised like the network's,
and ``eval()`` turns every site transform off. The architecture itself is never edited:
``net`` is the bare arch and its state dict is the checkpoint's ``params``.

With ``train.compile`` the training forward runs ``torch.compile(net)``. The compiled module is
kept outside the module tree, so ``state_dict()``, the EMA, DDP's parameter list and the
checkpoints are those of the bare network (no ``_orig_mod.`` prefixes); validation and every
eval-mode forward run the bare network eagerly (no recompilation for other image sizes).
"""
import torch
from torch import nn

from ..archs import get_sites
from ..regularizers import build_regularizers
from ..utils.misc import unwrap

COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune')
# a graph per state of the regularizers' Python-level schedules (AdaptiveDropout anneals one site at a
# time: one recompilation per site over a run), above dynamo's default of 8
RECOMPILE_LIMIT = 64


class TrainableNetwork(nn.Module):

    def __init__(self, net, reg_opts=(), total_iter=1, network_opt=None):
        super().__init__()
        self.net = net
        regs = build_regularizers(reg_opts, get_sites(net), total_iter, network_opt) if reg_opts else []
        self.regularizers = nn.ModuleList(regs)
        self.__dict__['compiled'] = None  # a plain attribute: not a submodule, not in state_dict()
        self.__dict__['compile_mode'] = None

    def compile_network(self, mode='default', backend='inductor'):
        """Run training forwards through ``torch.compile(self.net, mode=mode, backend=backend)``.

        The regularizers' site hooks are traced into the graph (and guarded: other hooks recompile it).
        Integer attributes of modules (a regularizer's current iteration) are graph inputs rather than
        constants, so they do not recompile the graph every iteration; a Python-level branch on them (an
        annealed site) does, once per change.
        """
        if mode not in COMPILE_MODES:
            raise ValueError(f"train.compile: {mode!r} is not a torch.compile mode; use one of {COMPILE_MODES}")
        # dynamo's configuration is process-wide; these settings only make it recompile when it must and no more
        import torch._dynamo  # noqa: F401  (loaded with torch.compile; imported here to configure it first)
        torch._dynamo.config.allow_unspec_int_on_nn_module = True
        # by default dynamo does not guard on hooks: a second network of the same class (its regularizers'
        # hooks differ) would silently reuse the first one's graph
        torch._dynamo.config.skip_nnmodule_hook_guards = False
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, RECOMPILE_LIMIT)
        kwargs = {'mode': mode} if backend == 'inductor' else {}
        self.__dict__['compiled'] = torch.compile(self.net, backend=backend, **kwargs)
        self.__dict__['compile_mode'] = mode
        return self

    def forward(self, x):
        if self.compiled is not None and self.training:
            if self.compile_mode == 'reduce-overhead':
                # CUDA graphs reuse their output memory: a new training step may overwrite the last one's
                torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(x)
        return self.net(x)


def bare_network(net):
    """The architecture inside DDP and the training wrapper."""
    net = unwrap(net)
    return net.net if isinstance(net, TrainableNetwork) else net
