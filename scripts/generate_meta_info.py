"""Write a meta_info file for an image folder: one relative path per line, sorted.

Example:
    python scripts/generate_meta_info.py --input datasets/DF2K/DF2K_HR_sub \
        --output datasets/meta_info/meta_info_DF2K_sub.txt

The file is what basicsr's ``meta_info_file`` option reads (it keeps the text before the first
space of each line). ``--shape`` appends `` (h,w,c)`` as BasicSR's own meta files do.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim)
from basicsr_ext.data.image_io import ImageReadError, list_images  # noqa: E402


def _shape(path):
    try:
        with Image.open(path) as im:
            w, h = im.size
            return f'({h},{w},{len(im.getbands())})'
    except OSError as err:
        raise ImageReadError(f"cannot read image file '{path}': {err}") from err


def generate_meta_info(folder, meta_path, with_shape=False, recursive=False):
    """Write ``meta_path`` listing the images under ``folder``; returns the relative paths.

    Raises FileNotFoundError when the folder is missing or holds no images, and rejects names with
    spaces, which basicsr would cut at the space.
    """
    rel_paths = list_images(folder, recursive=recursive)
    if not rel_paths:
        raise FileNotFoundError(f"no images in '{folder}'")
    bad = [p for p in rel_paths if ' ' in p]
    if bad:
        raise ValueError(f'file names with spaces cannot be listed in a basicsr meta_info file: {bad[:5]}')
    lines = [f'{p} {_shape(Path(folder) / p)}' if with_shape else p for p in rel_paths]
    meta_path = Path(meta_path)
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(''.join(line + '\n' for line in lines))
    return rel_paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--input', required=True, help='image folder')
    parser.add_argument('--output', required=True, help='meta_info .txt to write')
    parser.add_argument('--shape', action='store_true', help="append ' (h,w,c)' to each line")
    parser.add_argument('--recursive', action='store_true', help='include sub-folders')
    args = parser.parse_args(argv)
    try:
        paths = generate_meta_info(args.input, args.output, args.shape, args.recursive)
    except (FileNotFoundError, ImageReadError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'{len(paths)} images listed in {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
