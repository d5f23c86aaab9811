"""Channel ablation: how much each channel of one layer matters to the output (Adaptive Dropout's experiment).

Every channel of a layer is zeroed in turn and the PSNR of the network on a set is measured again;
the drop from the intact network's PSNR is that channel's importance. Adaptive Dropout uses this to
show how unevenly a network leans on its channels; the figure is the drops sorted from the largest,
one line per model, and the number that sums a model up is their spread.

Definitions (docs/channel_maps.md#channel-ablation), for a model, a site with C channels and a set of
(LR, HR) pairs:

* **PSNR** of a network on the set: the mean over the images of basicsr's ``calculate_psnr`` on RGB,
  with ``crop_border`` (default the scale) on the uint8 output (``tensor2img`` rounding), as test.py's
  reflash protocol;
* **drop** of channel c = PSNR(intact) − PSNR(channel c of the site zeroed on every image), in dB;
* **spread** = the standard deviation of the C drops (population, ddof 0); their range, mean and
  maximum are reported beside it.

Zeroing is a site transform (eval mode, no gradients): the same feature the regularizers and channel
maps address. ``batch`` ablated copies of one image run as one batch, each with another channel zeroed.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize
from tqdm import tqdm

from ..archs.forward import check_input_size, forward_padded, input_multiple
from ..data.eval_degradations import mod_crop
from ..data.image_io import list_images, read_image
from .channel_plots import finish_rank_axes, new_figure, text_table
from .channel_stats import capture_site_features, find_site
from .report import write_csv

__all__ = [
    'AblationPair', 'ablation_pairs', 'set_psnr', 'ChannelAblation', 'channel_ablation', 'plot_channel_ablation',
    'write_channel_ablation', 'format_ablation_table'
]


@dataclass
class AblationPair:
    """One image of the set: its name, the LR input (1, 3, h, w) in [0, 1] and the uint8 RGB HR (h·s, w·s, 3)."""
    name: str
    lq: torch.Tensor
    gt: np.ndarray


def _to_tensor(img_float):
    return torch.from_numpy(np.ascontiguousarray(img_float.transpose(2, 0, 1))).float()[None]


def _gt_file(gt_dir, stem):
    matches = [p for p in list_images(gt_dir) if Path(p).stem == stem]
    if not matches:
        raise FileNotFoundError(f"no ground truth for '{stem}' in '{gt_dir}' (channel ablation pairs the LR and HR "
                                'images by file name)')
    return Path(gt_dir) / matches[0]


def ablation_pairs(files, scale, gt_dir=None, downscale=False):
    """(LR, HR) pairs for channel ablation.

    ``downscale``: each file is an HR image; it is mod-cropped and the LR is basicsr's MATLAB ``imresize``
    by 1/scale (as ``--downscale`` of channel maps). Otherwise each file is an LR image and ``gt_dir`` holds
    the HR image of the same name (any image extension), cropped to the LR size × scale.
    """
    if downscale == (gt_dir is not None):
        raise ValueError('channel ablation needs ground truth: give HR images with --downscale, or LR images '
                         'with --gt <folder of HR images of the same names>')
    pairs = []
    for path in files:
        path = Path(path)
        if downscale:
            gt = mod_crop(read_image(path, float32=False, order='rgb'), scale)
            lq = np.clip(imresize(gt.astype(np.float32) / 255., 1. / scale, antialiasing=True), 0, 1)
        else:
            lq = read_image(path, float32=True, order='rgb')
            gt = read_image(_gt_file(gt_dir, path.stem), float32=False, order='rgb')
            h, w = lq.shape[0] * scale, lq.shape[1] * scale
            if gt.shape[0] < h or gt.shape[1] < w:
                raise ValueError(f"ground truth of '{path.name}' is {gt.shape[0]}x{gt.shape[1]}, smaller than the "
                                 f'LR {lq.shape[0]}x{lq.shape[1]} × {scale}')
            gt = gt[:h, :w]
        pairs.append(AblationPair(path.name, _to_tensor(lq), np.ascontiguousarray(gt)))
    if not pairs:
        raise ValueError('channel ablation: no images')
    return pairs


def _psnr(out, gt, crop_border):
    return calculate_psnr(tensor2img(out, rgb2bgr=False), gt, crop_border, input_order='HWC', test_y_channel=False)


def set_psnr(net, pairs, scale, crop_border):
    """Mean PSNR (dB) of ``net`` on ``pairs``, in eval mode (its mode is restored), without gradients."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return float(np.mean([_psnr(forward_padded(net, p.lq.to(device), scale)[0].cpu(), p.gt, crop_border)
                                  for p in pairs]))
    finally:
        net.train(was_training)


@dataclass
class ChannelAblation:
    """PSNR of one model on a set, intact and with each channel of ``site`` zeroed in turn."""
    model: str
    arch: str
    site: str
    base_psnr: float
    channel_psnr: np.ndarray  # (C,), channel order
    images: int

    @property
    def channels(self):
        return len(self.channel_psnr)

    @property
    def drops(self):
        """PSNR(intact) − PSNR(channel zeroed), channel order."""
        return self.base_psnr - self.channel_psnr

    def sorted_drops(self):
        return np.sort(self.drops)[::-1]

    def ranks(self):
        """Rank of each channel, 1 = largest drop; ties keep channel order."""
        ranks = np.empty(self.channels, dtype=int)
        ranks[np.argsort(-self.drops, kind='stable')] = np.arange(1, self.channels + 1)
        return ranks

    @property
    def spread(self):
        return float(np.std(self.drops))

    @property
    def range(self):
        return float(self.drops.max() - self.drops.min())


def channel_ablation(model, site, pairs, crop_border=None, batch=8, progress=False):
    """Zero each channel of ``site`` of ``model`` (a :class:`~.channel_maps.MapModel`) in turn; PSNR on ``pairs``."""
    if batch < 1:
        raise ValueError(f'batch must be at least 1, got {batch}')
    net, scale = model.net, model.scale
    crop = scale if crop_border is None else crop_border
    site_obj = find_site(net, site)
    for p in pairs:
        check_input_size(net, *p.lq.shape[-2:], name=p.name)
    channels = capture_site_features(net, site, pairs[0].lq).shape[1]
    device = next(net.parameters()).device
    zeroed = []  # the channel each sample of the running batch has zeroed

    def zero(feat):
        keep = torch.ones(feat.shape[0], feat.shape[1], 1, 1, dtype=feat.dtype, device=feat.device)
        keep[torch.arange(len(zeroed)), torch.tensor(zeroed)] = 0
        return feat * keep

    scores = np.zeros((len(pairs), channels))
    base = set_psnr(net, pairs, scale, crop)
    chunks = [list(range(c, min(c + batch, channels))) for c in range(0, channels, batch)]
    bar = tqdm(total=len(pairs) * len(chunks), unit='batch', desc=f'{model.name} {site}', disable=not progress)
    was_training = net.training
    net.eval()
    handle = site_obj.register_transform(zero)
    try:
        with torch.no_grad():
            for i, p in enumerate(pairs):
                lq = p.lq.to(device)
                for chunk in chunks:
                    zeroed[:] = chunk
                    out = forward_padded(net, lq.expand(len(chunk), -1, -1, -1), scale, input_multiple(net)).cpu()
                    for j, c in enumerate(chunk):
                        scores[i, c] = _psnr(out[j], p.gt, crop)
                    bar.update()
    finally:
        handle.remove()
        bar.close()
        net.train(was_training)
    return ChannelAblation(model.name, model.arch, site, base, scores.mean(axis=0), len(pairs))


def plot_channel_ablation(path, results: List[ChannelAblation]):
    """PSNR drops sorted from the largest, one line per model, spread (std) in the legend."""
    fig = new_figure(7.0, 4.5)
    ax = fig.subplots()
    markers = 'osD^v<>ph*'
    for i, r in enumerate(results):
        ax.plot(np.arange(1, r.channels + 1), r.sorted_drops(), marker=markers[i % len(markers)]
                if r.channels <= 64 else None, markersize=3, linewidth=1.2,
                label=f'{r.model} (intact {r.base_psnr:.2f} dB; spread {r.spread:.3f} dB, max {r.drops.max():.3f})')
    ax.axhline(0.0, color='gray', linestyle=':', linewidth=1)
    images = sorted({r.images for r in results})
    ax.set_title(f"Site {results[0].site}: PSNR drop when one channel is zeroed, sorted\n"
                 f"{'/'.join(map(str, images))} image(s); spread = std of the drops", fontsize=10)
    finish_rank_axes(ax, 'channel rank (1 = largest drop)', 'PSNR drop (dB)', max(r.channels for r in results))
    fig.savefig(path, dpi=120)
    return fig


SUMMARY_FIELDS = ('model', 'arch', 'site', 'channels', 'images', 'base_psnr', 'mean_drop', 'max_drop', 'min_drop',
                  'spread_std', 'range')


def write_channel_ablation(out_dir, results: List[ChannelAblation]):
    """Write ``ablation.png``, ``channel_ablation.csv`` (model, channel, psnr, drop, rank) and
    ``ablation_summary.csv`` (one row per model) to ``out_dir``; returns the paths."""
    if not results:
        raise ValueError('no channel ablation to write')
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, 'ablation.png')
    plot_channel_ablation(png, results)
    rows = [{'model': r.model, 'channel': c, 'psnr': f'{psnr:.9g}', 'drop': f'{drop:.9g}', 'rank': int(rank)}
            for r in results for c, (psnr, drop, rank) in enumerate(zip(r.channel_psnr, r.drops, r.ranks()))]
    per_channel = os.path.join(out_dir, 'channel_ablation.csv')
    write_csv(per_channel, rows, ['model', 'channel', 'psnr', 'drop', 'rank'])
    summary = os.path.join(out_dir, 'ablation_summary.csv')
    write_csv(summary, [{
        'model': r.model, 'arch': r.arch, 'site': r.site, 'channels': r.channels, 'images': r.images,
        'base_psnr': f'{r.base_psnr:.9g}', 'mean_drop': f'{r.drops.mean():.9g}', 'max_drop': f'{r.drops.max():.9g}',
        'min_drop': f'{r.drops.min():.9g}', 'spread_std': f'{r.spread:.9g}', 'range': f'{r.range:.9g}'
    } for r in results], list(SUMMARY_FIELDS))
    return [png, per_channel, summary]


def format_ablation_table(results: List[ChannelAblation]):
    """Plain-text table: model, arch, channels, intact PSNR, mean / max drop and spread (dB)."""
    return text_table(('model', 'arch', 'channels', 'PSNR', 'mean drop', 'max drop', 'spread (std)'),
                      [(r.model, r.arch, str(r.channels), f'{r.base_psnr:.3f}', f'{r.drops.mean():.4f}',
                        f'{r.drops.max():.4f}', f'{r.spread:.4f}') for r in results])
