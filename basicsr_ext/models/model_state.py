"""What a BlindSRModel saves and restores: weights (.pth, optionally .safetensors) and training state (.state)."""
import os

from ..archs.weights import load_weights
from ..utils.checkpoint import atomic_save, atomic_save_safetensors, safetensors_metadata
from ..utils.misc import unwrap


class ModelStateMixin:
    """Checkpoint content of a model with ``net_g`` (a training wrapper), ``net_g_ema`` and a degradation."""

    def network_state(self):
        """The .pth content: ``params`` (and ``params_ema``) as in BasicSR, regularizer weights apart."""
        out = {'params': _cpu(self.get_bare_model(self.net_g).state_dict())}
        regs = getattr(unwrap(self.net_g), 'regularizers', None)
        if regs is not None and len(regs.state_dict()):
            out['params_regularizers'] = _cpu(regs.state_dict())
        if hasattr(self, 'net_g_ema'):
            out['params_ema'] = _cpu(self.net_g_ema.state_dict())
        return out

    def save_network_atomic(self, path):
        """``net_g_<iter>.pth``, and with ``logger.save_safetensors`` the inference weights (``params_ema`` if kept,
        else ``params``) beside it as ``net_g_<iter>.safetensors``, with the network options and scale as metadata."""
        state = self.network_state()
        atomic_save(state, path)
        if self.options.logger.save_safetensors:
            key = 'params_ema' if 'params_ema' in state else 'params'
            atomic_save_safetensors(state[key], f'{os.path.splitext(path)[0]}.safetensors',
                                    safetensors_metadata(key, self.opt['network_g'], self.opt['scale']))

    def load_network_state(self, ckpt, path=None):
        """Restore the networks from the .pth content ``ckpt``; ``path``: its file, beside which a model may keep
        other networks (BlindSRGANModel's net_d_<iter>.pth)."""
        load_weights(self.get_bare_model(self.net_g), ckpt['params'], True, source='resume checkpoint [params]')
        if 'params_regularizers' in ckpt:
            unwrap(self.net_g).regularizers.load_state_dict(ckpt['params_regularizers'])
        if hasattr(self, 'net_g_ema') and 'params_ema' in ckpt:
            load_weights(self.net_g_ema, ckpt['params_ema'], True, source='resume checkpoint [params_ema]')

    def training_state(self):
        state = {
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'best_metric_results': getattr(self, 'best_metric_results', {}),
        }
        if self.grad_scaler.is_enabled():
            state['grad_scaler'] = self.grad_scaler.state_dict()
        if self.degradation is not None:
            state['degradation'] = self.degradation.state_dict()
        return state

    def rank_state(self):
        """What differs between ranks (the degradation's random stream); the loop saves it for every rank."""
        return {'degradation': self.degradation.state_dict()} if self.degradation is not None else {}

    def load_rank_state(self, state):
        if self.degradation is not None and 'degradation' in state:
            self.degradation.load_state_dict(state['degradation'])

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if resume_state.get('best_metric_results'):
            self.best_metric_results = resume_state['best_metric_results']
        if self.grad_scaler.is_enabled() and 'grad_scaler' in resume_state:
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])
        self.load_rank_state(resume_state)


def _cpu(state):
    return {k: v.detach().cpu() for k, v in state.items()}
