"""The models a benchmark evaluates: networks from checkpoints, and the bicubic pseudo-model.

Each has a ``name``, an ``arch``, a ``scale`` (None: any) and ``run(lrs, scale)``, which yields
``(index, sr)`` pairs of uint8 RGB arrays as the outputs are ready.
"""
import numpy as np
import torch
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize
from PIL import Image

from ..archs.forward import ScaleMismatchError, check_input_size
from ..models.loading import forward_batches, load_network
from ..utils.schema import OptionError

__all__ = ['BicubicModel', 'NetworkModel', 'build_models']

_PIL_BICUBIC = getattr(Image, 'Resampling', Image).BICUBIC


class BicubicModel:
    """Bicubic upsampling of the uint8 LR, as the 'Bicubic' rows of SR papers.

    ``mode='matlab'``: basicsr's MATLAB-compatible ``imresize`` on the [0, 1] float image,
    rounded to uint8 (the textbook Set5 ×4 value, 28.42 dB on Y, comes from this);
    ``mode='pil'``: Pillow's bicubic, the resampler of the reflash protocol.
    """

    def __init__(self, name, mode='matlab'):
        self.name, self.mode, self.arch, self.scale = name, mode, 'Bicubic', None

    def upscale(self, lr, scale):
        h, w = lr.shape[:2]
        if self.mode == 'pil':
            return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), _PIL_BICUBIC))
        out = imresize(lr.astype(np.float32) / 255., scale, antialiasing=True)[:h * scale, :w * scale]
        return np.clip(np.round(out * 255.), 0, 255).astype(np.uint8)

    def run(self, lrs, scale):
        for i, lr in enumerate(lrs):
            yield i, self.upscale(lr, scale)


class NetworkModel:
    """A network loaded from a checkpoint, run with padding/tiling/batching; uint8 RGB in and out."""

    def __init__(self, mopt, device, opt):
        self.name, self.arch, self.scale = mopt['name'], mopt['arch'], mopt['scale']
        self.device, self.opt = device, opt
        self.net, _ = load_network(mopt['network_g'], mopt['path'], mopt['param_key'], mopt['scale'], device,
                                   mopt['strict'])

    def check_size(self, lr, name):
        check_input_size(self.net, lr.shape[0], lr.shape[1], name=name)

    def run(self, lrs, scale):
        tensors = [torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float().div_(255.) for lr in lrs]
        o = self.opt
        batch = o['batch_size'] if o['batch_same_size'] else 1
        for i, out in forward_batches(self.net, tensors, scale, batch, o['tile_size'], o['tile_pad'], self.device,
                                      o['amp']):
            yield i, tensor2img(out, rgb2bgr=False)


def build_models(opt, device):
    """The models of validated options (``opt['models']``, ``opt['protocol']``), networks loaded on ``device``.

    A checkpoint that does not fit (scale, architecture) is an OptionError naming the model.
    """
    models = []
    for i, m in enumerate(opt['models']):
        if m['type'] == 'bicubic':
            mode = m['mode'] if m['mode'] != 'auto' else ('matlab' if opt['protocol'] == 'matlab' else 'pil')
            models.append(BicubicModel(m['name'], mode))
            continue
        try:
            models.append(NetworkModel(m, device, opt))
        except ScaleMismatchError as err:
            raise OptionError(f"models[{i}] ({m['name']}): {err}") from err
        except (ValueError, RuntimeError, FileNotFoundError) as err:  # CheckpointMismatchError is a RuntimeError
            raise OptionError(f"models[{i}] ({m['name']}): {err}") from err
    return models
