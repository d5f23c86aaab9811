"""The one SR model: basicsr's SRModel made device-agnostic, resumable and regularizer-aware.

It keeps basicsr's structure (``net_g``, ``net_g_ema``, ``cri_pix``, optimizers, schedulers,
``params``/``params_ema`` checkpoints) and overrides only what is broken on a modern or
CPU-only stack (hard-coded CUDA in DDP wrapping, non-atomic saving, Adam-only optimizers)
and what this framework adds (the training degradation, regularizer hooks, padded/tiled
testing, validation split across ranks).
"""
import contextlib
from collections import OrderedDict

import torch
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..archs import get_sites
from ..data import build_degradation
from ..regularizers import build_regularizers
from ..utils.checkpoint import atomic_save, load_checkpoint
from ..utils.inference import amp_dtype, autocast, forward_tiled
from ..utils.options import OPTIMIZERS

REG_PREFIX = 'regularizers.'


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not fit the network."""


def _summarise(keys, limit=5):
    keys = sorted(keys)
    more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_weights(net, state, strict=True, source='checkpoint'):
    """Load ``state`` into ``net``; a mismatch raises a short summary of missing/unexpected keys.

    Derived SwinIR buffers (``attn_mask``, ``relative_position_index``) depend on ``img_size``,
    not on training, so ones of another shape are replaced by the network's own.
    """
    net = getattr(net, 'module', net)
    own = net.state_dict()
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    for k in list(state):
        if k.endswith(('attn_mask', 'relative_position_index')) and k in own and own[k].shape != state[k].shape:
            state[k] = own[k]
    own_keys = {k for k in own if not k.startswith(REG_PREFIX)}
    missing = own_keys - set(state)
    unexpected = set(state) - set(own)
    wrong_shape = [k for k in own_keys & set(state) if own[k].shape != state[k].shape]
    if strict and (missing or unexpected or wrong_shape):
        parts = [f'{source} does not fit {type(net).__name__}:']
        if missing:
            parts.append(f'{len(missing)} missing keys ({_summarise(missing)})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys ({_summarise(unexpected)})')
        if wrong_shape:
            shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in sorted(wrong_shape)[:3]]
            parts.append(f'{len(wrong_shape)} shape mismatches ({"; ".join(shapes)})')
        parts.append('— is it a checkpoint of another architecture, width or scale?')
        raise CheckpointMismatchError(' '.join(parts))
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(state, strict=False)


@MODEL_REGISTRY.register()
class BlindSRModel(SRModel):
    """SR model for (blind) super-resolution training with optional degradation and regularizers."""

    def __init__(self, opt):
        self.regularizers = []
        self.step_losses = OrderedDict()
        self._log_dict = None
        self.degradation = None
        self.current_iter = 0
        super().__init__(opt)
        if self.is_train and opt.get('degradation'):
            self.degradation = build_degradation(opt['degradation'], opt['scale'], self.device)
            self.degradation.seed(opt['manual_seed'] + opt.get('rank', 0))
            self.degradation.debug_dir = opt['path'].get('visualization')

    # ------------------------------------------------------------------ construction
    def model_to_device(self, net):
        net = net.to(self.device)
        if self.is_train and self.opt['train'].get('channels_last'):
            for param in net.parameters():  # 4-D only: HAN's 3-D conv has 5-D weights, which NHWC does not cover
                if param.dim() == 4:
                    param.data = param.data.contiguous(memory_format=torch.channels_last)
        if self.is_train and not self.regularizers and self.opt['train'].get('regularizers'):
            regs = build_regularizers(self.opt['train']['regularizers'], get_sites(net), self.opt['train']['total_iter'])
            net.add_module('regularizers', nn.ModuleList(regs).to(self.device))
            self.regularizers = regs
        if self.opt.get('dist'):
            device_ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()
                          ] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return net

    def print_network(self, net):
        net = self.get_bare_model(net)
        count = sum(p.numel() for p in net.parameters())
        get_root_logger().info(f'Network {type(net).__name__}: {count:,d} parameters')

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        return OPTIMIZERS[optim_type](params, lr, **kwargs)

    def load_network(self, net, load_path, strict=True, param_key='params'):
        ckpt = load_checkpoint(load_path)
        key = param_key if param_key in ckpt else 'params'
        if key not in ckpt:
            raise CheckpointMismatchError(f"{load_path}: no '{param_key}' or 'params' key (keys: {list(ckpt)})")
        load_weights(net, ckpt[key], strict, source=f'{load_path} [{key}]')
        get_root_logger().info(f'Loaded {type(getattr(net, "module", net)).__name__} from {load_path} [{key}]')

    def init_training_settings(self):
        super().init_training_settings()
        self.amp = self.opt['train'].get('amp', False)
        # bf16 keeps fp32's exponent range, so only fp16 needs its losses scaled against underflow
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype(self.amp) == torch.float16)
        # the first iteration whose loss was not finite (0: none), kept on the device: reading it every
        # step would synchronise the host with the GPU, so the loop reads it only when it logs or saves
        self.first_nonfinite = torch.zeros((), dtype=torch.long, device=self.device)
        if self.amp and self.device.type != 'cuda':
            get_root_logger().warning(f'train.amp: {self.amp!r} on {self.device}: CPU autocast is usually far slower '
                                      'than fp32 unless the CPU has bf16 units')

    # ------------------------------------------------------------------ training step
    def feed_data(self, data, current_iter=None):
        if current_iter is not None:
            self.current_iter = current_iter
        self.batch = data
        if self.is_train and self.degradation is not None and 'kernel1' in data:
            if any(getattr(reg, 'NEEDS_DEGRADATION_REPLAY', False) for reg in self.regularizers):
                # ECO replays this batch's degradation on the teacher output from this state
                self.degradation_state = self.degradation.state_dict()
            self.degraded = self.degradation(data, self.current_iter)
            # Real-ESRNet's L1 target is the sharpened GT when the GT is USM-sharpened before degrading
            sharpened = getattr(self.degradation, 'opt', {}).get('gt_usm', False)
            self.lq, self.gt = self.degraded['lq'], self.degraded['gt_usm' if sharpened else 'gt']
        else:
            super().feed_data(data)

    def compute_losses(self, output, gt):
        losses = OrderedDict()
        if self.cri_pix:
            losses['l_pix'] = self.cri_pix(output, gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, gt)
            if l_percep is not None:
                losses['l_percep'] = l_percep
            if l_style is not None:
                losses['l_style'] = l_style
        return losses

    def optimize_parameters(self, current_iter, micro_step=0, micro_steps=1):
        """One forward/backward; the optimizer steps on the last of ``micro_steps`` (gradient accumulation)."""
        self.current_iter = current_iter
        first, last = micro_step == 0, micro_step == micro_steps - 1
        if first:
            for reg in self.regularizers:
                reg.on_iter_start(current_iter)
            self.optimizer_g.zero_grad(set_to_none=True)
            self.step_losses = OrderedDict()
        lq, gt = self.lq, self.gt
        context = {'model': self}
        for reg in self.regularizers:
            lq, gt = reg.transform_batch(lq, gt, current_iter, context)
        if self.opt['train'].get('channels_last'):
            lq = lq.contiguous(memory_format=torch.channels_last)
        self.lq, self.gt = lq, gt

        # DDP all-reduces gradients in backward; only the last micro-batch's needs to
        sync = contextlib.nullcontext() if last or not hasattr(self.net_g, 'no_sync') else self.net_g.no_sync()
        with sync:
            with autocast(self.device, self.amp, allow_cpu=True):
                self.output = self.net_g(lq)
                extra = OrderedDict()
                for reg in self.regularizers:
                    extra.update(reg.extra_losses(self.net_g, lq, gt, self.output, current_iter))
            self.output = self.output.float()
            losses = self.compute_losses(self.output, gt)
            losses.update((name, value.float()) for name, value in extra.items())
            total = sum(losses.values())
            if self.opt['train'].get('check_finite', True):
                bad = ~torch.isfinite(total.detach()) & (self.first_nonfinite == 0)
                self.first_nonfinite = torch.where(bad, current_iter, self.first_nonfinite)
            self.grad_scaler.scale(total / micro_steps).backward()
        for name, value in losses.items():
            self.step_losses[name] = self.step_losses.get(name, 0) + value.detach() / micro_steps
        if not last:
            return
        clip = self.opt['train'].get('grad_clip', 0)
        if clip:
            self.grad_scaler.unscale_(self.optimizer_g)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), clip)
        self.grad_scaler.step(self.optimizer_g)
        self.grad_scaler.update()
        self._log_dict = None
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    @property
    def log_dict(self):
        """The last step's losses as floats, averaged over ranks.

        Computed when first read: reading them every step would synchronise the host with the GPU
        (and, under DDP, add a collective), so the loop reads them only when it logs. Under DDP every
        rank must read them at the same iteration.
        """
        if self._log_dict is None:
            self._log_dict = self.reduce_loss_dict(self.step_losses)
        return self._log_dict

    @log_dict.setter
    def log_dict(self, value):
        self._log_dict = value

    def nonfinite_iteration(self):
        """The first iteration with a NaN or infinite loss since the start of this process, or 0."""
        return int(self.first_nonfinite.item())

    # ------------------------------------------------------------------ testing
    def test(self):
        # the bare network: a DDP forward may broadcast buffers, a collective that ranks with
        # different numbers of validation images would not all join
        net = self.get_bare_model(getattr(self, 'net_g_ema', None) or self.net_g)
        was_training = net.training
        net.eval()
        val = self.opt.get('val') or {}
        with torch.no_grad():
            self.output = forward_tiled(net, self.lq, self.opt['scale'], val.get('tile_size', 0), val.get('tile_pad', 16))
        if was_training:
            net.train()

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """Validate on this rank's share of the images; sums are all-reduced across ranks."""
        dataset_name = dataloader.dataset.opt['name']
        metrics = self.opt['val'].get('metrics') or {}
        if metrics:
            self._initialize_best_metric_results(dataset_name)
        sums = torch.zeros(len(metrics) + 1, dtype=torch.float64)
        show = self.opt['val'].get('pbar', True) and self.opt.get('rank', 0) == 0
        pbar = tqdm(total=len(dataloader), unit='image', desc=f'Val {dataset_name}', disable=not show, leave=False)
        for data in dataloader:
            name = _image_name(data)
            self.feed_data(data)
            self.test()
            sr = tensor2img([self.output.detach().cpu()])
            if save_img:
                suffix = self.opt['val'].get('suffix') or current_iter
                imwrite(sr, f"{self.opt['path']['visualization']}/{dataset_name}/{name}_{suffix}.png")
            if metrics and hasattr(self, 'gt'):
                gt = tensor2img([self.gt.detach().cpu()])
                for i, mopt in enumerate(metrics.values()):
                    mopt = {k: v for k, v in mopt.items() if k != 'better'}
                    sums[i] += calculate_metric({'img': sr, 'img2': gt}, mopt)
            sums[-1] += 1
            for attr in ('lq', 'gt', 'output'):
                self.__dict__.pop(attr, None)
            pbar.update(1)
        pbar.close()
        if self.opt.get('dist'):
            reduced = sums.to(self.device)
            torch.distributed.all_reduce(reduced)
            sums = reduced.cpu()
        count = max(sums[-1].item(), 1)
        self.metric_results = {name: (sums[i] / count).item() for i, name in enumerate(metrics)}
        for metric, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, metric, value, current_iter)
        if metrics and self.opt.get('rank', 0) == 0:
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        return self.metric_results

    # ------------------------------------------------------------------ checkpoints
    def network_state(self):
        """The .pth content: ``params`` (and ``params_ema``) as in BasicSR, regularizer weights apart."""
        net = self.get_bare_model(self.net_g)
        full = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        out = {'params': {k: v for k, v in full.items() if not k.startswith(REG_PREFIX)}}
        regs = {k[len(REG_PREFIX):]: v for k, v in full.items() if k.startswith(REG_PREFIX)}
        if regs:
            out['params_regularizers'] = regs
        if hasattr(self, 'net_g_ema'):
            out['params_ema'] = {k: v.detach().cpu() for k, v in self.net_g_ema.state_dict().items()}
        return out

    def save_network_atomic(self, path):
        atomic_save(self.network_state(), path)

    def load_network_state(self, ckpt):
        load_weights(self.net_g, ckpt['params'], True, source='resume checkpoint [params]')
        if 'params_regularizers' in ckpt:
            regs = self.get_bare_model(self.net_g).regularizers
            regs.load_state_dict(ckpt['params_regularizers'])
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
        if self.degradation is not None and 'degradation' in resume_state:
            self.degradation.load_state_dict(resume_state['degradation'])


def _image_name(data):
    import os
    path = data.get('lq_path') or data.get('gt_path') or ['image']
    return os.path.splitext(os.path.basename(path[0]))[0]
