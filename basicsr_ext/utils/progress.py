"""Console/file progress lines: iteration, it/s, data time, ETA, losses, learning rate, peak memory."""
import datetime
import resource
import sys
import time

import torch


def peak_memory(device):
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU, as a string."""
    if device.type == 'cuda':
        return f'{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (cuda)'
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == 'darwin':  # macOS reports bytes
        rss_kib /= 1024
    return f'{rss_kib / 2**20:.2f} GiB (rss)'


class ProgressLogger:
    """Formats one line per ``print_freq`` iterations, timing over the iterations since the last line."""

    def __init__(self, opt, start_iter, logger, tb_logger=None):
        self.name = opt['name']
        self.total = opt['train']['total_iter']
        self.logger = logger
        self.tb = tb_logger
        self.start_iter = start_iter
        self.t0 = time.time()
        self.last_t, self.last_iter = self.t0, start_iter
        self.data_time = 0.0
        self.data_n = 0

    def add_data_time(self, seconds):
        self.data_time += seconds
        self.data_n += 1

    def __call__(self, current_iter, epoch, lrs, losses, device):
        """Log the line; returns the iterations per second since the previous line (for the history)."""
        now = time.time()
        its = (current_iter - self.last_iter) / max(now - self.last_t, 1e-9)
        overall = (current_iter - self.start_iter) / max(now - self.t0, 1e-9)
        eta = datetime.timedelta(seconds=int((self.total - current_iter) / max(overall, 1e-9)))
        data = self.data_time / max(self.data_n, 1)
        loss_str = ' '.join(f'{k}: {v:.4e}' for k, v in losses.items())
        lr_str = ','.join(f'{lr:.3e}' for lr in lrs)
        self.logger.info(f'[{self.name}][epoch:{epoch:3d}, iter:{current_iter:8,d}/{self.total:,d}, lr:({lr_str})] '
                         f'[{its:.2f} it/s, data: {data:.3f}s] [eta: {eta}] [mem: {peak_memory(device)}] {loss_str}')
        if self.tb is not None:
            for k, v in losses.items():
                self.tb.add_scalar(f'losses/{k}', v, current_iter)
            self.tb.add_scalar('train/it_per_s', its, current_iter)
        self.last_t, self.last_iter = now, current_iter
        self.data_time, self.data_n = 0.0, 0
        return its
