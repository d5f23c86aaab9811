"""Model classes, registered in basicsr's MODEL_REGISTRY."""
from copy import deepcopy

from basicsr.utils.registry import MODEL_REGISTRY

from .sr_model import BlindSRModel, CheckpointMismatchError, load_weights


def build_model(opt):
    # basicsr's constructors pop keys (optimizer/scheduler types) out of the options
    return MODEL_REGISTRY.get(opt['model_type'])(deepcopy(opt))


__all__ = ['BlindSRModel', 'CheckpointMismatchError', 'build_model', 'load_weights']
