"""The one SR model: basicsr's SRModel made device-agnostic, resumable and regularizer-aware.

It keeps basicsr's structure (``net_g``, ``net_g_ema``, ``cri_pix``, optimizers, schedulers,
``params``/``params_ema`` checkpoints) and overrides only what is broken on a modern or
CPU-only stack (hard-coded CUDA in DDP wrapping, non-atomic saving, Adam-only optimizers)
and what this framework adds (the training degradation, regularizers behind a step context,
padded/tiled testing, validation split across ranks). ``net_g`` is the training wrapper
(network + regularizers) under DDP; ``get_bare_model`` returns the architecture.
"""
import contextlib
from collections import OrderedDict

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DistributedDataParallel

from ..archs.weights import CheckpointMismatchError, load_weights, pick_param_key
from ..config import OPTIMIZERS, typed_training_options
from ..data import build_degradation
from ..losses import local_vgg_weights
from ..regularizers import StepContext
from ..utils.amp import amp_dtype, autocast
from ..utils.checkpoint import load_checkpoint
from .model_state import ModelStateMixin
from .trainable import TrainableNetwork, bare_network
from .validation import ValidationMixin


@MODEL_REGISTRY.register()
class BlindSRModel(ValidationMixin, ModelStateMixin, SRModel):
    """SR model for (blind) super-resolution training with optional degradation and regularizers."""

    def __init__(self, opt):
        self.step_losses = OrderedDict()
        self._log_dict = None
        self.degradation = None
        self.redegrade = None
        self.current_iter = 0
        self.options = typed_training_options(opt)  # the same options as attributes, defaults filled in
        super().__init__(opt)
        if self.is_train and self.options.degradation is not None:
            self.degradation = build_degradation(opt['degradation'], opt['scale'], self.device)
            self.degradation.seed(self.options.manual_seed + self.options.rank)
            self.degradation.debug_dir = self.options.path.visualization

    # ------------------------------------------------------------------ construction
    def model_to_device(self, net, trainable=True):
        """On the device, channels-last if asked, in the training wrapper (``trainable``: net_g) and under DDP."""
        net = net.to(self.device)
        if self.is_train and self.options.train.channels_last:
            for param in net.parameters():  # 4-D only: HAN's 3-D conv has 5-D weights, which NHWC does not cover
                if param.dim() == 4:
                    param.data = param.data.contiguous(memory_format=torch.channels_last)
        if self.is_train and trainable and not isinstance(net, TrainableNetwork):
            train = self.opt['train']
            net = TrainableNetwork(net, train['regularizers'], train['total_iter'], self.opt['network_g'])
            net = net.to(self.device)
            if self.options.train.compile:  # the training forward only; checkpoints hold the bare network
                net.compile_network(self.options.train.compile, self.options.train.compile_backend)
        if self.options.dist:
            device_ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()
                          ] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.options.find_unused_parameters)
        return net

    @property
    def regularizers(self):
        wrapper = self.net_g.module if isinstance(self.net_g, DistributedDataParallel) else self.net_g
        return list(wrapper.regularizers) if isinstance(wrapper, TrainableNetwork) else []

    def get_bare_model(self, net):
        return bare_network(net)

    def print_network(self, net):
        net = self.get_bare_model(net)
        count = sum(p.numel() for p in net.parameters())
        get_root_logger().info(f'Network {type(net).__name__}: {count:,d} parameters')

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        return OPTIMIZERS[optim_type](params, lr, **kwargs)

    def update_learning_rate(self, current_iter, warmup_iter=-1):
        # basicsr's warm-up overwrites the groups' lr, from which a chainable scheduler (MultiStepLR)
        # steps on: after a warm-up of w iterations it stayed at init·(w-1)/w. Each scheduler gets its
        # own last lr back first (saved in its state_dict, so a resume mid-warm-up does the same).
        if 1 < current_iter <= warmup_iter:
            for scheduler in self.schedulers:
                for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
                    group['lr'] = lr
        super().update_learning_rate(current_iter, warmup_iter)

    def load_network(self, net, load_path, strict=True, param_key='params'):
        ckpt = load_checkpoint(load_path)
        key = pick_param_key(ckpt, param_key, fallback='params')
        if key is None:
            raise CheckpointMismatchError(f"{load_path}: no '{param_key}' or 'params' key (keys: {list(ckpt)})")
        net = self.get_bare_model(net)
        load_weights(net, ckpt[key], strict, source=f'{load_path} [{key}]')
        get_root_logger().info(f'Loaded {type(net).__name__} from {load_path} [{key}]')

    def init_training_settings(self):
        with local_vgg_weights(self.opt['path'].get('pretrained_vgg')):  # PerceptualLoss's VGG: never downloaded
            super().init_training_settings()
        self.amp = self.options.train.amp
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
        if self.is_train and self.degradation is not None and ('kernel1' in data or 'degraded' in data):
            if 'degraded' not in data:
                data = self.prepare_batch(data)
            self.redegrade, self.degraded = data['redegrade'], data['degraded']
            # Real-ESRNet's L1 target is the sharpened GT when the GT is USM-sharpened before degrading
            sharpened = self.degradation.opt.gt_usm
            self.lq, self.gt = self.degraded['lq'], self.degraded['gt_usm' if sharpened else 'gt']
            self.degradation._maybe_write_grid(self.lq, self.gt, self.current_iter)  # debug_grid.every
        else:
            self.redegrade = None
            self.lq = data['lq'].to(self.device, non_blocking=True)  # from pinned memory: no host wait
            if 'gt' in data:
                self.gt = data['gt'].to(self.device, non_blocking=True)

    def prepare_batch(self, data):
        """``data`` with its training degradation done (``'degraded'``, ``'redegrade'``), or as it is.

        The prefetcher (``prefetch_mode: cuda``) calls it one batch ahead on a side stream; feed_data
        calls it otherwise. The iteration is not known ahead, so feed_data writes the debug grid.
        """
        if not (self.is_train and self.degradation is not None and 'kernel1' in data):
            return data
        # D for regularizers that degrade other targets the same way (ECO); captures the draw's state
        redegrade = self.degradation.redegrader(data)
        return {**data, 'degraded': self.degradation(data), 'redegrade': redegrade}

    def compute_losses(self, output, gt, percep_gt=None):
        """The pixel and perceptual losses of ``output`` against ``gt`` (the perceptual one: ``percep_gt`` if given)."""
        losses = OrderedDict()
        if self.cri_pix:
            losses['l_pix'] = self.cri_pix(output, gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, gt if percep_gt is None else percep_gt)
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
        ctx = StepContext(self.lq, self.gt, self.batch, self.opt['scale'], self.get_bare_model(self.net_g), current_iter,
                          self.opt['manual_seed'], self.redegrade)
        for reg in self.regularizers:
            ctx = ctx.with_pair(*reg.transform_batch(ctx))
        lq, gt = ctx.lq, ctx.gt
        if self.options.train.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
            ctx = ctx.with_pair(lq, gt)
        self.lq, self.gt = lq, gt

        # DDP all-reduces gradients in backward; only the last micro-batch's needs to
        sync = contextlib.nullcontext() if last or not hasattr(self.net_g, 'no_sync') else self.net_g.no_sync()
        with sync:
            with autocast(self.device, self.amp, allow_cpu=True):
                self.output = self.net_g(lq)
                extra = OrderedDict()
                for reg in self.regularizers:
                    extra.update(reg.extra_losses(ctx, self.output))
            self.output = self.output.float()
            losses = self.compute_losses(self.output, gt)
            losses.update((name, value.float()) for name, value in extra.items())
            total = sum(losses.values())
            if self.options.train.check_finite:
                bad = ~torch.isfinite(total.detach()) & (self.first_nonfinite == 0)
                self.first_nonfinite = torch.where(bad, current_iter, self.first_nonfinite)
            self.grad_scaler.scale(total / micro_steps).backward()
        for name, value in losses.items():
            self.step_losses[name] = self.step_losses.get(name, 0) + value.detach() / micro_steps
        if not last:
            return
        clip = self.options.train.grad_clip
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
