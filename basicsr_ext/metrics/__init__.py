"""Metric functions (layer 2: they see arrays, never models or option files).

The benchmark uses basicsr's ``calculate_psnr`` / ``calculate_ssim`` directly, so nothing of this
project's lives here yet; a new metric function goes here, registered in basicsr's ``METRIC_REGISTRY``.
Evaluation (test options, models, test sets, the loop, reports, channel maps) is :mod:`basicsr_ext.evaluation`.
"""
