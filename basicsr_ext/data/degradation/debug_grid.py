"""LR/GT picture grids for looking at what the training degradation produces."""
import os

import cv2
import numpy as np
import torch
from torch.nn import functional as F

__all__ = ['save_pair_grid']


def save_pair_grid(lq, gt, path, num=8):
    """Write a PNG with one row per pair: the LR patch upsampled (nearest) to the GT size, then the GT.

    ``lq`` (B, 3, h, w) and ``gt`` (B, 3, H, W) are RGB in [0, 1]; the first ``num`` pairs are drawn.
    Returns the path.
    """
    n = min(num, lq.size(0), gt.size(0))
    lq = lq[:n].detach().float().cpu()
    gt = gt[:n].detach().float().cpu()
    up = F.interpolate(lq, size=gt.shape[-2:], mode='nearest')
    sep = 2
    rows = []
    for i in range(n):
        row = torch.cat([up[i], torch.ones(3, gt.size(2), sep), gt[i]], dim=2)
        rows.append(row)
        rows.append(torch.ones(3, sep, row.size(2)))
    grid = torch.cat(rows[:-1], dim=1).clamp(0, 1)
    img = (grid.permute(1, 2, 0).numpy()[:, :, ::-1] * 255.).round().astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write the degradation grid '{path}'")
    return path
