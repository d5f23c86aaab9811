"""Pack an image folder (or a GT/LQ pair of folders) into LMDB for basicsr's ``io_backend: lmdb``.

GT only:
    python scripts/create_lmdb.py --gt datasets/DF2K/DF2K_HR_sub --out datasets/DF2K/DF2K_HR_sub.lmdb
Paired (same file names in both folders):
    python scripts/create_lmdb.py --gt datasets/DIV2K/HR_sub --lq datasets/DIV2K/LR_x4_sub \
        --out-gt datasets/DIV2K/HR_sub.lmdb --out-lq datasets/DIV2K/LR_x4_sub.lmdb

Each database is written by basicsr's ``make_lmdb_from_imgs``: images are stored PNG-encoded under
their relative path without extension as key, and ``meta_info.txt`` (``<key>.png (h,w,c) <level>``
per line) sits beside ``data.mdb``.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr.utils.lmdb_util import make_lmdb_from_imgs  # noqa: E402
from basicsr_ext.data.image_io import ImageReadError, list_images  # noqa: E402

# LMDB reserves address space, not disk; this is added on top of the estimate for B-tree pages
_MAP_SLACK = 64 * 1024**2


def lmdb_keys(rel_paths):
    """LMDB keys (relative path without extension), checked against what basicsr's readers assume.

    basicsr encodes keys as ASCII, and its lmdb path helpers cut meta_info lines at the first '.'
    and the first space, so keys with those would silently not be found at training time.
    """
    keys = []
    for rel in rel_paths:
        key = rel[:-len(Path(rel).suffix)]
        if not key.isascii() or '.' in key or ' ' in key:
            raise ValueError(f"file name '{rel}' cannot be an LMDB key for basicsr: "
                             'keys must be ASCII without dots or spaces (rename the file)')
        keys.append(key)
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f'several files map to the same LMDB key (same name, different extension): {dup[:5]}')
    return keys


def _map_size(folder, rel_paths):
    """Upper bound on the database size: the raw pixel bytes (PNG never grows them by much) plus one page each."""
    total = 0
    for rel in rel_paths:
        path = Path(folder) / rel
        try:
            with Image.open(path) as im:
                w, h = im.size
                depth = 2 if ('16' in im.mode or im.mode in ('I', 'F')) else 1
                total += w * h * len(im.getbands()) * depth + 4096
        except OSError as err:
            raise ImageReadError(f"cannot read image file '{path}': {err}") from err
    return int(total * 1.5) + _MAP_SLACK


def create_lmdb(folder, lmdb_path, workers=1, compress_level=1, recursive=False):
    """Write ``lmdb_path`` from every image under ``folder``; returns the list of keys.

    Raises:
        FileNotFoundError: ``folder`` is missing or empty.
        FileExistsError: ``lmdb_path`` exists (basicsr would ``sys.exit`` instead).
        ValueError: ``lmdb_path`` does not end in ``.lmdb``, or a file name is not a usable key.
        ImageReadError: an image header cannot be read.
    """
    folder, lmdb_path = str(folder), str(lmdb_path)
    if not lmdb_path.endswith('.lmdb'):
        raise ValueError(f"LMDB path must end with '.lmdb': '{lmdb_path}'")
    if os.path.exists(lmdb_path):
        raise FileExistsError(f"'{lmdb_path}' already exists; remove it first")
    rel_paths = list_images(folder, recursive=recursive)
    if not rel_paths:
        raise FileNotFoundError(f"no images in '{folder}'")
    keys = lmdb_keys(rel_paths)
    make_lmdb_from_imgs(folder, lmdb_path, rel_paths, keys, compress_level=compress_level,
                        multiprocessing_read=workers > 1, n_thread=max(1, workers),
                        map_size=_map_size(folder, rel_paths))
    return keys


def create_paired_lmdb(gt_folder, lq_folder, gt_lmdb, lq_lmdb, workers=1, compress_level=1, recursive=False):
    """Write GT and LQ databases with identical key sets, as basicsr's ``PairedImageDataset`` needs.

    Raises ValueError naming the unmatched files when the two folders do not hold the same names.
    """
    gt_keys = lmdb_keys(list_images(gt_folder, recursive=recursive))
    lq_keys = lmdb_keys(list_images(lq_folder, recursive=recursive))
    only_gt, only_lq = sorted(set(gt_keys) - set(lq_keys)), sorted(set(lq_keys) - set(gt_keys))
    if only_gt or only_lq:
        raise ValueError(f"GT '{gt_folder}' and LQ '{lq_folder}' do not hold the same images: "
                         f'{len(only_gt)} only in GT {only_gt[:5]}, {len(only_lq)} only in LQ {only_lq[:5]}')
    for path in (gt_lmdb, lq_lmdb):
        if os.path.exists(path):
            raise FileExistsError(f"'{path}' already exists; remove it first")
    create_lmdb(gt_folder, gt_lmdb, workers, compress_level, recursive)
    create_lmdb(lq_folder, lq_lmdb, workers, compress_level, recursive)
    return gt_keys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gt', required=True, help='GT (HR) image folder')
    parser.add_argument('--lq', help='LQ image folder (paired mode)')
    parser.add_argument('--out', help='output .lmdb for GT-only mode')
    parser.add_argument('--out-gt', help='GT output .lmdb (paired mode)')
    parser.add_argument('--out-lq', help='LQ output .lmdb (paired mode)')
    parser.add_argument('--recursive', action='store_true', help='include sub-folders (keys keep the sub-path)')
    parser.add_argument('--workers', type=int, default=1,
                        help='processes reading images; >1 holds all encoded images in memory (default 1)')
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression 0-9 (default 1)')
    args = parser.parse_args(argv)
    if args.lq is None and (args.out is None or args.out_gt or args.out_lq):
        parser.error('GT-only mode takes --gt and --out (give --lq for paired mode)')
    if args.lq is not None and (args.out_gt is None or args.out_lq is None or args.out):
        parser.error('paired mode takes --gt, --lq, --out-gt and --out-lq')
    try:
        if args.lq is None:
            keys = create_lmdb(args.gt, args.out, args.workers, args.compress_level, args.recursive)
        else:
            keys = create_paired_lmdb(args.gt, args.lq, args.out_gt, args.out_lq, args.workers,
                                      args.compress_level, args.recursive)
    except (FileNotFoundError, FileExistsError, ImageReadError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'{len(keys)} images written')
    return 0


if __name__ == '__main__':
    sys.exit(main())
