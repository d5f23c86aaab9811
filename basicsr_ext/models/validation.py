"""Validation of a BlindSRModel: padded/tiled inference and metrics summed across ranks."""
import math
import os

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from tqdm import tqdm

from ..archs import arch_spec
from ..archs.forward import forward_tiled
from ..data import dataset_name as name_of_dataset
from ..utils.misc import unwrap


def image_name(data):
    path = data.get('lq_path') or data.get('gt_path') or ['image']
    return os.path.splitext(os.path.basename(path[0]))[0]


class ValidationMixin:
    """``test`` and ``validation`` for a model with ``net_g`` (and ``net_g_ema``)."""

    def test(self):
        ema = getattr(self, 'net_g_ema', None)
        # eval() on the training wrapper turns the regularizers' site transforms off too; the
        # forward runs on the bare network: a DDP forward may broadcast buffers, a collective that
        # ranks with different numbers of validation images would not all join
        switch = ema if ema is not None else unwrap(self.net_g)
        net = self.get_bare_model(switch)
        was_training = switch.training
        switch.eval()
        val = self.options.val
        with torch.no_grad():
            self.output = forward_tiled(net, self.lq, self.opt['scale'], val.tile_size, val.tile_pad,
                                        arch_spec(net).input_multiple(net))
        if was_training:
            switch.train()

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """Validate on this rank's share of the images; sums are all-reduced across ranks."""
        dataset_name = name_of_dataset(dataloader.dataset)
        metrics = self.opt['val']['metrics'] or {}
        if metrics:
            self._initialize_best_metric_results(dataset_name)
        # per metric: the sum of its non-NaN values and how many there were (NIQE is NaN on flat images);
        # then images validated and unreadable images skipped
        n = len(metrics)
        sums = torch.zeros(2 * n + 2, dtype=torch.float64)
        show = self.options.val.pbar and self.options.rank == 0
        pbar = tqdm(total=len(dataloader), unit='image', desc=f'Val {dataset_name}', disable=not show, leave=False)
        for data in dataloader:
            if 'unreadable' in data:  # on_bad_image: skip left it out
                sums[-1] += 1
                get_root_logger().warning(f"Validation {dataset_name}: skipped {data['unreadable'][0]}")
                pbar.update(1)
                continue
            name = image_name(data)
            self.feed_data(data)
            self.test()
            sr = tensor2img([self.output.detach().cpu()])
            if save_img:
                suffix = self.options.val.suffix or current_iter
                imwrite(sr, f"{self.opt['path']['visualization']}/{dataset_name}/{name}_{suffix}.png")
            if metrics and hasattr(self, 'gt'):
                gt = tensor2img([self.gt.detach().cpu()])
                for i, mopt in enumerate(metrics.values()):
                    mopt = {k: v for k, v in mopt.items() if k != 'better'}
                    value = float(calculate_metric({'img': sr, 'img2': gt}, mopt))
                    if not math.isnan(value):
                        sums[i] += value
                        sums[n + i] += 1
            sums[-2] += 1
            for attr in ('lq', 'gt', 'output'):
                self.__dict__.pop(attr, None)
            pbar.update(1)
        pbar.close()
        if self.options.dist:
            reduced = sums.to(self.device)
            torch.distributed.all_reduce(reduced)
            sums = reduced.cpu()
        self.skipped_images = int(sums[-1].item())
        if self.skipped_images and self.options.rank == 0:
            get_root_logger().warning(f'Validation {dataset_name}: {self.skipped_images} unreadable image(s) skipped '
                                      f'(on_bad_image: skip); the metrics average the other {int(sums[-2].item())}')
        self.metric_results = {}
        for i, name in enumerate(metrics):
            finite = int(sums[n + i].item())
            self.metric_results[name] = (sums[i] / finite).item() if finite else float('nan')
            if finite < int(sums[-2].item()) and self.options.rank == 0:
                get_root_logger().warning(f'Validation {dataset_name}: {name} is NaN on {int(sums[-2].item()) - finite} '
                                          f'image(s) (e.g. NIQE on flat images); the mean is over the other {finite}')
        for metric, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, metric, value, current_iter)
        if metrics and self.options.rank == 0:
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        return self.metric_results
