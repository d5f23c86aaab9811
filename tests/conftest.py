"""Shared test set-up: CPU only, few threads, the ../shared datasets when present."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')
torch.set_num_threads(2)

import basicsr_ext  # noqa: E402,F401  (installs the basicsr compat shim before any test imports basicsr)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / 'shared' / 'datasets'


def load_script(name):
    """scripts/<name>.py as a module (registered under its name: worker processes unpickle its functions by it)."""
    spec = importlib.util.spec_from_file_location(name, REPO / 'scripts' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shared_datasets():
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f'{SHARED_DATASETS} not found: the real test images live in ../shared/datasets beside the repo')
    return SHARED_DATASETS


def step_context(model, lq, gt, iteration, batch=None):
    """The StepContext the model builds for its regularizers, for calling a hook directly."""
    from basicsr_ext.regularizers import StepContext
    return StepContext(lq, gt, batch if batch is not None else getattr(model, 'batch', {'lq': lq, 'gt': gt}), model.opt['scale'],
                       model.get_bare_model(model.net_g), iteration, model.opt['manual_seed'], model.redegrade)
