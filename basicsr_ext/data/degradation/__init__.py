"""Real-ESRGAN's second-order training degradation (docs/degradation.md), one concern per module:

* :mod:`.operators` - pure tensor operators (filter2D guard, USM, resize taps, noise, JPEG block size);
* :mod:`.ragged` - per-sample windows and kernels of different sizes, batched;
* :mod:`.draw` - the named random draws of each sample and the parameters they give;
* :mod:`.geometry` - which window of each stage is computed;
* :mod:`.pipeline` - :class:`HighOrderDegradation`, its options, state and replay;
* :mod:`.debug_grid` - LR/GT picture grids.
"""
# the names of the former single module degradation.py (so its imports keep working) and the draw API
from .debug_grid import save_pair_grid
from .draw import PER_BATCH, UPDOWN, SampleDraws, draw_batch, sample_parameters  # noqa: F401
from .operators import (JPEG_BLOCK, RESIZE_MODES, _matrix_resize, _taps_matrix, add_gaussian_noise,  # noqa: F401
                        add_poisson_noise, filter2D, resize_taps, usm_kernel_1d, usm_sharpen, usm_sharpen_valid)
from .pipeline import HighOrderDegradation

__all__ = [
    'HighOrderDegradation', 'save_pair_grid', 'filter2D', 'usm_sharpen', 'usm_kernel_1d', 'resize_taps',
    'add_gaussian_noise', 'add_poisson_noise', 'SampleDraws'
]
