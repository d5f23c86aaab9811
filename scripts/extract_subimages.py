"""Crop large HR images into overlapping sub-images, so training reads small files quickly.

Example (DIV2K HR, the usual BasicSR setting):
    python scripts/extract_subimages.py --input datasets/DF2K/DF2K_HR --output datasets/DF2K/DF2K_HR_sub \
        --crop_size 480 --step 240 --thresh_size 0 --workers 8

``0001.png`` becomes ``0001_s001.png``, ``0001_s002.png``, ... numbered row by row. Pixels are kept
as stored (bit depth, gray or colour, alpha); sub-images are always written as PNG.
"""
import argparse
import functools
import multiprocessing
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr_ext.data.image_io import ImageReadError, imread_unchanged, list_images  # noqa: E402


def crop_starts(length, crop_size, step, thresh_size):
    """Start offsets along one axis.

    Every ``step`` pixels, plus one crop flush with the far edge when the strip left over is
    wider than ``thresh_size`` (0 keeps every pixel). An axis shorter than ``crop_size`` gives a
    single start at 0 (the crop is then the whole axis, smaller than ``crop_size``).
    """
    if length <= crop_size:
        return [0]
    starts = list(range(0, length - crop_size + 1, step))
    if length - (starts[-1] + crop_size) > thresh_size:
        starts.append(length - crop_size)
    return starts


def extract_one(rel_path, input_dir, output_dir, crop_size, step, thresh_size, compress_level):
    """Write the sub-images of one image; returns (relative path, number written, was it smaller than a crop)."""
    img = imread_unchanged(Path(input_dir) / rel_path)
    h, w = img.shape[:2]
    stem = Path(rel_path).stem
    index = 0
    for y in crop_starts(h, crop_size, step, thresh_size):
        for x in crop_starts(w, crop_size, step, thresh_size):
            index += 1
            patch = img[y:y + crop_size, x:x + crop_size, ...]
            out = Path(output_dir) / f'{stem}_s{index:03d}.png'
            ok, buf = cv2.imencode('.png', patch, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
            if not ok:
                raise OSError(f"could not encode sub-image '{out}'")
            out.write_bytes(buf.tobytes())
    return rel_path, index, h < crop_size or w < crop_size


def extract_subimages(input_dir, output_dir, crop_size=480, step=240, thresh_size=0, workers=1, compress_level=3,
                      overwrite=False, progress=True):
    """Crop every image of ``input_dir`` (not recursive) into ``output_dir``; returns the number of sub-images.

    Raises:
        FileNotFoundError: ``input_dir`` is missing or holds no images.
        FileExistsError: ``output_dir`` already holds files and ``overwrite`` is False.
        ImageReadError: an image cannot be read (the message names it).
        ValueError: non-positive ``crop_size`` or ``step``, or a negative ``thresh_size``.
    """
    if crop_size < 1 or step < 1 or thresh_size < 0:
        raise ValueError(f'need crop_size >= 1, step >= 1, thresh_size >= 0; got {crop_size}, {step}, {thresh_size}')
    files = list_images(input_dir)
    if not files:
        raise FileNotFoundError(f"no images in input folder '{input_dir}'")
    stems = [Path(f).stem for f in files]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise ValueError(f'images with the same name but different extensions would overwrite each other: {dup}')
    output_dir = Path(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder '{output_dir}' is not empty; remove it or pass --overwrite")
    output_dir.mkdir(parents=True, exist_ok=True)

    work = functools.partial(extract_one, input_dir=input_dir, output_dir=output_dir, crop_size=crop_size,
                             step=step, thresh_size=thresh_size, compress_level=compress_level)
    total, small = 0, []
    workers = max(1, min(int(workers), len(files)))
    with tqdm(total=len(files), unit='img', desc='extract', disable=not progress) as bar:
        if workers == 1:
            results = map(work, files)
            pool = None
        else:
            pool = multiprocessing.Pool(workers)
            results = pool.imap_unordered(work, files)
        try:
            for rel_path, count, was_small in results:
                total += count
                if was_small:
                    small.append(rel_path)
                bar.update()
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    if small:
        print(f'note: {len(small)} image(s) smaller than {crop_size} px on a side gave smaller sub-images: '
              f"{', '.join(small[:5])}{' ...' if len(small) > 5 else ''}")
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--input', required=True, help='folder of HR images')
    parser.add_argument('--output', required=True, help='folder for the sub-images')
    parser.add_argument('--crop_size', type=int, default=480, help='sub-image side (default 480)')
    parser.add_argument('--step', type=int, default=240, help='stride between sub-images (default 240)')
    parser.add_argument('--thresh_size', type=int, default=0,
                        help='a leftover strip at the right/bottom edge gets its own edge-aligned crop only '
                        'if it is wider than this (default 0: always)')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1), help='processes')
    parser.add_argument('--compress_level', type=int, default=3, help='PNG compression 0-9 (default 3)')
    parser.add_argument('--overwrite', action='store_true', help='write into a non-empty output folder')
    args = parser.parse_args(argv)
    try:
        n = extract_subimages(args.input, args.output, args.crop_size, args.step, args.thresh_size, args.workers,
                              args.compress_level, args.overwrite)
    except (FileNotFoundError, FileExistsError, ImageReadError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'{n} sub-images written to {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
