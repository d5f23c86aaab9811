"""Measure how much crop_before_degrade changes the Poisson noise of the training degradation.

Real-ESRGAN's Poisson noise (basicsr ``add_poisson_noise_pt``) scales the noise by the number of distinct
grey levels of the image it is added to: vals = 2^ceil(log2(levels)), and the noise of a pixel of value x
has variance scale² · x / vals (before clipping). With ``crop_before_degrade: true`` the levels are
counted on the degraded window around the patch, not on the whole 400² canvas, so a window with fewer
levels gets a smaller vals and stronger noise.

For every batch the same canvases, kernels and generator seed are degraded twice, windowed and whole,
with Poisson noise forced at both noise stages (``gaussian_noise_prob: 0`` and ``..2: 0``; every other
draw is the same in both runs). At each noise call the level counts are read from the image the noise
is added to, and the expected noise variance of the same pixels is compared. Prints, per stage and
overall: the share of draws where the level count differs, the mean per-draw variance ratio
(windowed / whole canvas) and the ratio of the summed variances. docs/degradation.md records the result.

    python scripts/measure_poisson_window.py --hr ../shared/datasets/Urban100/HR ../shared/datasets/Manga109/HR \\
        --batches 40 --gt_size 128
"""
import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hr', nargs='+', required=True, help='folders of HR images; 400² canvases are cut from them')
    parser.add_argument('--batches', type=int, default=40, help='batches of --batch canvases (default 40)')
    parser.add_argument('--batch', type=int, default=8, help='canvases per batch (default 8)')
    parser.add_argument('--gt_size', type=int, default=128, help='GT patch size (default 128, the option files)')
    parser.add_argument('--context', type=int, default=64, help='degradation.context (default 64)')
    parser.add_argument('--canvas', type=int, default=400, help='canvas side (default 400, as Real-ESRGAN)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


class NoiseRecorder:
    """Wraps the pipeline's ``add_poisson_noise``: records, per sample, the level counts and the mean value."""

    def __init__(self, pipeline, operators):
        self.pipeline, self.operators, self.records = pipeline, operators, []
        self.original = pipeline.add_poisson_noise

    def __call__(self, img, scale, gray, generator=None, sizes=None):
        import torch  # why: a heavy import, only needed once the script runs
        ops = self.operators
        q = torch.clamp((img * 255).round(), 0, 255) / 255.
        g = torch.clamp((ops.rgb_to_grayscale(img, num_output_channels=1) * 255).round(), 0, 255) / 255.
        vals_rgb, vals_gray = ops._levels(q * 255., sizes).flatten(), ops._levels(g * 255., sizes).flatten()
        for i in range(img.shape[0]):
            h, w = sizes[i] if sizes else img.shape[-2:]
            gray_i = bool(gray[i] > 0)
            mean = (g if gray_i else q)[i, :, :h, :w].mean()
            self.records.append({'scale': float(scale[i]), 'vals': float((vals_gray if gray_i else vals_rgb)[i]),
                                 'mean': float(mean)})
        return self.original(img, scale, gray, generator, sizes)

    def __enter__(self):
        self.pipeline.add_poisson_noise = self
        return self

    def __exit__(self, *exc):
        self.pipeline.add_poisson_noise = self.original


def canvases(folders, count, side, rng):
    from basicsr_ext.data.image_io import list_images, read_image
    files = [Path(f) / name for f in folders for name in list_images(f)]
    images = [img for img in (read_image(p, float32=True, order='rgb') for p in files) if min(img.shape[:2]) >= side]
    if not images:
        raise SystemExit(f'error: no image of at least {side}x{side} in {", ".join(map(str, folders))}')
    out = []
    for _ in range(count):
        img = images[rng.integers(len(images))]
        y, x = rng.integers(img.shape[0] - side + 1), rng.integers(img.shape[1] - side + 1)
        out.append(np.ascontiguousarray(img[y:y + side, x:x + side].transpose(2, 0, 1)))
    return out


def measure(args, progress=True):
    """Per noise stage (1, 2): a list of (vals windowed, vals whole, scale² · mean) per draw."""
    import torch  # why: a heavy import, only needed once the script runs
    from basicsr_ext.data.degradation import operators, pipeline
    from basicsr_ext.data.gt_only_dataset import RealESRGANKernels
    rng = np.random.default_rng(args.seed)
    kernels = RealESRGANKernels({})
    draws = {1: [], 2: []}
    t0 = time.time()
    for it in range(args.batches):
        gt = torch.from_numpy(np.stack(canvases(args.hr, args.batch, args.canvas, rng)))
        random.seed(args.seed + it)
        np.random.seed(args.seed + it)
        ks = [kernels.draw() for _ in range(args.batch)]
        batch = {'gt': gt, **{k: torch.stack([d[k] for d in ks]) for k in ks[0]}}
        runs = {}
        for window in (True, False):
            deg = pipeline.HighOrderDegradation({'gt_size': args.gt_size, 'context': args.context,
                                                 'gaussian_noise_prob': 0.0, 'gaussian_noise_prob2': 0.0,
                                                 'crop_before_degrade': window}, 4)
            deg.seed(args.seed + 1000 + it)
            with NoiseRecorder(pipeline, operators) as rec:
                deg(batch)
            # both noise stages add noise to every sample: the first `batch` calls are stage 1; a sample's
            # Poisson scale is drawn once per stage and equal in both runs, so it identifies the draw
            runs[window] = [dict(r, stage=1 + j // args.batch) for j, r in enumerate(rec.records)]
        whole = {r['scale']: r for r in runs[False]}
        for r in runs[True]:
            draws[r['stage']].append((r['vals'], whole[r['scale']]['vals'], r['scale']**2 * r['mean']))
        if progress:
            print(f'batch {it + 1}/{args.batches} ({time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
    return draws


def summarise(draws):
    """Rows (stage, draws, share with other level count, mean variance ratio, ratio of summed variances)."""
    rows = []
    for stage, items in list(draws.items()) + [('both', draws[1] + draws[2])]:
        vw, vf, s = (np.array(x, dtype=np.float64) for x in zip(*items))
        ratio = vf / vw  # variance ∝ 1/vals: windowed / whole
        rows.append((stage, len(items), float(np.mean(vw != vf)), float(ratio.mean()),
                     float((s / vw).sum() / (s / vf).sum())))
    return rows


def main(argv=None):
    args = parse_args(argv)
    rows = summarise(measure(args))
    print(f'gt_size {args.gt_size}, context {args.context}, {args.batches}x{args.batch} canvases of {args.canvas}²')
    print('stage  draws  level count differs  mean variance ratio  summed variance ratio')
    for stage, n, differ, mean_ratio, total_ratio in rows:
        print(f'{stage!s:>5}  {n:5d}  {differ:19.2%}  {mean_ratio:19.4f}  {total_ratio:21.4f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
