"""Model classes, registered in basicsr's MODEL_REGISTRY."""
from copy import deepcopy

from basicsr.utils.registry import MODEL_REGISTRY

from .gan_model import BlindSRGANModel
from .sr_model import BlindSRModel
from .trainable import TrainableNetwork, bare_network


def build_model(opt):
    # basicsr's constructors pop keys (optimizer/scheduler types) out of the options
    return MODEL_REGISTRY.get(opt['model_type'])(deepcopy(opt))


__all__ = ['BlindSRGANModel', 'BlindSRModel', 'TrainableNetwork', 'bare_network', 'build_model']
