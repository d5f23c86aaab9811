"""scripts/measure_poisson_window.py: the Poisson-noise level counts of windowed and whole-canvas degradation."""
import basicsr_ext  # noqa: F401  (must precede basicsr)

import cv2
import numpy as np
import pytest
import torch

from basicsr_ext.data.skimage_photos_dataset import load_photo
from conftest import load_script


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp('poisson')
    for name in ('astronaut', 'coffee'):
        img = cv2.resize(load_photo(name), (160, 160), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f'{name}.png'), np.round(img * 255).astype(np.uint8))
    return folder


def _args(script, photos, context):
    return script.parse_args(['--hr', str(photos), '--batches', '1', '--batch', '2', '--gt_size', '32',
                              '--canvas', '160', '--context', str(context)])


def test_a_window_as_large_as_the_canvas_counts_the_same_levels(photos):
    script = load_script('measure_poisson_window')
    torch.set_num_threads(1)
    draws = script.measure(_args(script, photos, context=160), progress=False)
    assert [len(draws[s]) for s in (1, 2)] == [2, 2]
    assert all(vw == vf for s in (1, 2) for vw, vf, _ in draws[s])  # the window is the whole canvas
    for stage, n, differ, mean_ratio, total_ratio in script.summarise(draws):
        assert (differ, mean_ratio, total_ratio) == (0.0, 1.0, 1.0), stage


def test_summary_of_hand_made_draws():
    script = load_script('measure_poisson_window')
    # (vals windowed, vals whole, scale² · mean): the window counts fewer levels in the first draw
    draws = {1: [(128.0, 256.0, 1.0), (256.0, 256.0, 3.0)], 2: [(256.0, 256.0, 2.0)]}
    rows = {r[0]: r[1:] for r in script.summarise(draws)}
    assert rows[1] == pytest.approx((2, 0.5, 1.5, (1 / 128 + 3 / 256) / (4 / 256)))
    assert rows[2] == pytest.approx((1, 0.0, 1.0, 1.0))
    assert rows['both'] == pytest.approx((3, 1 / 3, 4 / 3, (1 / 128 + 5 / 256) / (6 / 256)))
