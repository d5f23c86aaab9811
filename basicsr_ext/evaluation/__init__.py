"""Benchmark evaluation behind ``python test.py -opt options/test/<name>.yml``, and channel maps.

* :mod:`.options`: the test-options schema, its validation and its JSON Schema;
* :mod:`.models`: the evaluated models (networks from checkpoints, the bicubic pseudo-model);
* :mod:`.testsets`: LR sets generated into a cache or given as folders, ground truth;
* :mod:`.loop`: the evaluation loop (:func:`.loop.evaluate`) and :func:`.loop.run_benchmark`;
* :mod:`.report`: tables in the papers' layout (md/csv/json), per-image csv, plots;
* :mod:`.paper_compare`: our table beside a published one;
* :mod:`.channel_maps` (with :mod:`.channel_stats`, :mod:`.channel_plots`): per-channel feature responses.

Nothing is imported here, so ``import basicsr_ext`` does not pull in the evaluation modules.
"""
