"""Benchmark evaluation (``test.py``).

* :mod:`.benchmark`: test-options schema, LR-set preparation and caching, the evaluation loop;
* :mod:`.report`: tables in the papers' layout (md/csv/json), per-image csv, plots;
* :mod:`.paper_compare`: our table beside a published one.

Nothing is imported here, so ``import basicsr_ext`` does not pull in matplotlib.
"""
