"""Training models for the speed-benchmark scripts: a minimal ×4 options dict, validated and built."""
import torch

from ..config import validate_options
from . import build_model

__all__ = ['training_options', 'build_training_model']


def training_options(network, workdir, total_iter, regularizers=(), gt_size=None, **train):
    """A minimal options dict for a BlindSRModel that trains ``network`` ×4 (``gt_size``: with the training
    degradation)."""
    opt = {
        'name': 'benchmark', 'model_type': 'BlindSRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {'type': 'SkimagePhotosDataset', 'photos': ['astronaut'], 'gt_size': 32}},
        'network_g': dict(network), 'path': {'experiments_root': workdir},
        'train': {
            'total_iter': total_iter,
            'optim_g': {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [total_iter], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
            'regularizers': list(regularizers), **train,
        },
    }
    if gt_size:
        opt['degradation'] = {'type': 'HighOrderDegradation', 'gt_size': gt_size}
    return opt


def build_training_model(network, workdir, total_iter, regularizers=(), gt_size=None, device='cpu', **train):
    opt = training_options(network, workdir, total_iter, regularizers, gt_size, **train)
    opt['num_gpu'] = 1 if torch.device(device).type == 'cuda' else 0
    opt = validate_options(opt)
    opt.update(dist=False, rank=0, world_size=1)
    return build_model(opt)
