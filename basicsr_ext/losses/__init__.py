"""losses: basicsr's losses are used as they are; this package makes their VGG weights local-only."""
from .vgg_weights import (RANDOM_VGG, VGG_TYPES, VGGWeightsNotFound, find_vgg_weights, local_vgg_weights, vgg_file,
                          vgg_search_paths)

__all__ = ['RANDOM_VGG', 'VGG_TYPES', 'VGGWeightsNotFound', 'find_vgg_weights', 'local_vgg_weights', 'vgg_file',
           'vgg_search_paths']
