"""Real-ESRGAN's second stage on top of BlindSRModel: a discriminator, adversarial + perceptual + pixel losses.

The recipe is Real-ESRGAN's (Wang et al., ICCVW 2021), built from basicsr's parts (``UNetDiscriminatorSN``,
``GANLoss``, ``PerceptualLoss``):

* every iteration, net_g's output is judged by net_d (whose parameters are frozen for that pass) and net_g
  takes a step on ``pixel + perceptual + GAN`` losses, except during the first ``train.net_d_init_iters``
  iterations and on iterations that are not multiples of ``train.net_d_iters``;
* then net_d takes a step on ``GAN(D(real), real) + GAN(D(fake.detach()), fake)``, on every iteration;
* ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm`` choose, per loss, the USM-sharpened GT or the plain
  GT as target (Real-ESRGAN: sharpened, sharpened, plain);
* net_g_ema follows net_g on every iteration (``train.ema_decay``), net_d has no EMA.

net_g's half is BlindSRModel's step, so regularizers, gradient accumulation, clipping, AMP and the
finite-loss check act on net_g as they do without a discriminator. A regularizer sees the pixel loss's
target as ``ctx.gt``; when it replaces it (ECO), the pixel and the perceptual loss both use the replacement,
while net_d's real samples stay the GT.

net_d has its own optimizer (``train.optim_d``), scheduler (``train.scheduler``, as for net_g), gradient
scaler and checkpoint ``net_d_<iter>.pth`` beside ``net_g_<iter>.pth``, written atomically before the
``.state`` file; the ``.state`` holds both optimizers and both schedulers (net_g's first).
"""
import contextlib
import os
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.utils.img_process_util import USMSharp
from basicsr.utils.registry import MODEL_REGISTRY

from ..archs import build_network
from ..archs.weights import load_weights
from ..utils.amp import autocast
from ..utils.checkpoint import atomic_save, load_checkpoint
from .model_state import _cpu
from .sr_model import BlindSRModel


def discriminator_path(net_g_path):
    """``.../net_d_<iter>.pth`` beside ``.../net_g_<iter>.pth``."""
    folder, name = os.path.split(net_g_path)
    return os.path.join(folder, name.replace('net_g_', 'net_d_', 1))


@MODEL_REGISTRY.register()
class BlindSRGANModel(BlindSRModel):
    """BlindSRModel with a discriminator: Real-ESRGAN's GAN stage (pixel, perceptual and adversarial losses)."""

    #: the option validator accepts and requires network_d, train.optim_d and train.gan_opt for this model
    TRAINS_DISCRIMINATOR = True

    # ------------------------------------------------------------------ construction
    def init_training_settings(self):
        self.net_d = self.model_to_device(build_network(self.opt['network_d']), trainable=False)
        self.print_network(self.net_d)
        path = self.opt['path']
        if path.get('pretrain_network_d'):
            self.load_network(self.net_d, path['pretrain_network_d'], path['strict_load_d'], path['param_key_d'])
        self.net_d.train()
        train = self.opt['train']
        self.cri_gan = build_loss(dict(train['gan_opt'])).to(self.device)
        self.net_d_iters, self.net_d_init_iters = train['net_d_iters'], train['net_d_init_iters']
        self.usm_sharpener = None  # built when paired data needs a sharpened GT
        self._targets = {}
        super().init_training_settings()  # EMA, pixel/perceptual losses, both optimizers and schedulers
        self.grad_scaler_d = torch.amp.GradScaler(self.device.type, enabled=self.grad_scaler.is_enabled())

    def setup_optimizers(self):
        super().setup_optimizers()
        optim = dict(self.opt['train']['optim_d'])
        kind = optim.pop('type')
        self.optimizer_d = self.get_optimizer(kind, self.net_d.parameters(), **optim)
        self.optimizers.append(self.optimizer_d)

    # ------------------------------------------------------------------ training step
    def updates_g(self, current_iter):
        """Whether net_g takes a step at ``current_iter`` (Real-ESRGAN's net_d_iters / net_d_init_iters rule)."""
        return current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters

    def _gt_versions(self):
        """(plain GT, USM-sharpened GT) of the current training batch."""
        if self.degradation is not None and ('kernel1' in self.batch or 'degraded' in self.batch):
            return self.degraded['gt'], self.degraded['gt_usm']  # feed_data degraded the batch
        plain = self.batch['gt'].to(self.device)
        if not (self.options.l1_gt_usm or self.options.percep_gt_usm or self.options.gan_gt_usm):
            return plain, plain
        if self.usm_sharpener is None:
            self.usm_sharpener = USMSharp().to(self.device)  # Real-ESRGAN's paired-data sharpening
        reach = self.usm_sharpener.kernel.shape[-1] // 2
        if min(plain.shape[-2:]) <= reach:
            raise ValueError(f'l1_gt_usm/percep_gt_usm/gan_gt_usm: USM sharpening (basicsr USMSharp, radius '
                             f'{reach}) needs GT patches larger than {reach} pixels, got {tuple(plain.shape[-2:])}; '
                             'use a larger gt_size or set the three flags to false')
        return plain, self.usm_sharpener(plain)

    def optimize_parameters(self, current_iter, micro_step=0, micro_steps=1):
        first, last = micro_step == 0, micro_step == micro_steps - 1
        plain, sharp = self._gt_versions()
        opts = self.options
        self.gt = sharp if opts.l1_gt_usm else plain
        self._targets = {'fed': self.gt, 'percep': sharp if opts.percep_gt_usm else plain}
        real = sharp if opts.gan_gt_usm else plain

        self._set_d_trainable(False)
        if self.updates_g(current_iter):
            super().optimize_parameters(current_iter, micro_step, micro_steps)  # losses from compute_losses below
        else:
            self._forward_only(current_iter, first, last)
        self._set_d_trainable(True)
        self._discriminator_step(real, self.output.detach(), current_iter, first, last, micro_steps)

    def compute_losses(self, output, gt):
        """net_g's losses: pixel (``gt``), perceptual and adversarial (net_d judging ``output`` as real)."""
        # a regularizer that replaced the pixel target (ECO) replaces the perceptual one too
        percep_gt = gt if gt is not self._targets['fed'] else self._targets['percep']
        losses = super().compute_losses(output, gt, percep_gt)
        # the bare net_d: under DDP its frozen parameters get no gradient here, so nothing to synchronise
        with autocast(self.device, self.amp, allow_cpu=True):
            fake_pred = self.get_bare_model(self.net_d)(output)
        losses['l_gan'] = self.cri_gan(fake_pred.float(), True, is_disc=False)
        return losses

    def _forward_only(self, current_iter, first, last):
        """net_g's output for net_d when net_g takes no step (no gradient, no regularizer losses)."""
        if first:
            for reg in self.regularizers:
                reg.on_iter_start(current_iter)
            self.step_losses = OrderedDict()
        lq = self.lq
        if self.options.train.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(self.device, self.amp, allow_cpu=True):
            self.output = self.net_g(lq)
        self.output = self.output.float()
        if last:
            self._log_dict = None
            if self.ema_decay > 0:  # as Real-ESRGAN: the EMA moves on every iteration
                self.model_ema(decay=self.ema_decay)

    def _set_d_trainable(self, flag):
        for param in self.net_d.parameters():
            param.requires_grad = flag

    def _discriminator_step(self, real, fake, current_iter, first, last, micro_steps):
        if first:
            self.optimizer_d.zero_grad(set_to_none=True)
        losses = OrderedDict()
        sync = contextlib.nullcontext() if last or not hasattr(self.net_d, 'no_sync') else self.net_d.no_sync()
        with sync:
            for name, images, is_real in (('real', real, True), ('fake', fake, False)):
                with autocast(self.device, self.amp, allow_cpu=True):
                    pred = self.net_d(images)
                pred = pred.float()
                loss = self.cri_gan(pred, is_real, is_disc=True)
                self.grad_scaler_d.scale(loss / micro_steps).backward()
                losses[f'l_d_{name}'] = loss.detach()
                losses[f'out_d_{name}'] = pred.detach().mean()
        if self.options.train.check_finite:
            total = losses['l_d_real'] + losses['l_d_fake']
            bad = ~torch.isfinite(total) & (self.first_nonfinite == 0)
            self.first_nonfinite = torch.where(bad, current_iter, self.first_nonfinite)
        for name, value in losses.items():
            self.step_losses[name] = self.step_losses.get(name, 0) + value / micro_steps
        if last:
            self.grad_scaler_d.step(self.optimizer_d)
            self.grad_scaler_d.update()
            self._log_dict = None

    # ------------------------------------------------------------------ checkpoints
    def discriminator_state(self):
        """The content of ``net_d_<iter>.pth``: ``params``, as basicsr writes a network."""
        return {'params': _cpu(self.get_bare_model(self.net_d).state_dict())}

    def save_network_atomic(self, path):
        super().save_network_atomic(path)
        atomic_save(self.discriminator_state(), discriminator_path(path))

    def load_network_state(self, ckpt, path=None):
        super().load_network_state(ckpt, path)
        if path is None:
            raise ValueError('BlindSRGANModel resumes net_d from the net_d_<iter>.pth beside net_g_<iter>.pth: '
                             'pass the path of the net_g file')
        d_path = discriminator_path(path)
        if not os.path.isfile(d_path):
            raise FileNotFoundError(f"{d_path} does not exist: the discriminator of the checkpoint {path} "
                                    '(BlindSRGANModel writes net_d_<iter>.pth beside net_g_<iter>.pth); restore it '
                                    'or resume from another checkpoint with path.resume_state')
        load_weights(self.get_bare_model(self.net_d), load_checkpoint(d_path)['params'], True,
                     source=f'{d_path} [params]')

    def training_state(self):
        state = super().training_state()
        if self.grad_scaler_d.is_enabled():
            state['grad_scaler_d'] = self.grad_scaler_d.state_dict()
        return state

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.grad_scaler_d.is_enabled() and 'grad_scaler_d' in resume_state:
            self.grad_scaler_d.load_state_dict(resume_state['grad_scaler_d'])
