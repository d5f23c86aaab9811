"""Options of the GAN stage (Real-ESRGAN's second stage) and of the perceptual loss's VGG weights.

The fields are part of the training schema (``config/training.py`` merges them in); this module checks
what a field cannot check alone: that only a model which trains a discriminator is given discriminator
options, that ``network_d`` fits its constructor and judges the GT patches, that ``gan_opt`` is a GAN
loss, and where the VGG weights of ``perceptual_opt`` are (resolved here, so a missing file stops the
run before any data is read).
"""
import torch
from basicsr.archs.vgg_arch import NAMES as VGG_LAYER_NAMES
from basicsr.archs.vgg_arch import insert_bn
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY

from ..archs import arch_spec
from ..archs.meta import build_meta_network
from ..losses import VGG_TYPES, VGGWeightsNotFound, find_vgg_weights
from ..utils.schema import Field, OptionError
from .kwargs import OPTIMIZERS, dict_registry, registered, typed_section, validate_kwargs

__all__ = ['GAN_LOSSES', 'GAN_PATH_FIELDS', 'GAN_TOP_FIELDS', 'GAN_TRAIN_FIELDS', 'GAN_TYPES', 'NETWORK_D_ALIASES',
           'VGG_PATH_FIELD', 'resolve_vgg_weights', 'validate_gan_options']

#: basicsr 1.4.2 registers its UNetDiscriminatorSN as 'UNetDiscriminatorSN_basicsr', leaving the plain name to
#: the realesrgan package; Real-ESRGAN's option files use the plain one
NETWORK_D_ALIASES = {'UNetDiscriminatorSN': 'UNetDiscriminatorSN_basicsr'}
GAN_LOSSES = ('GANLoss', )
GAN_TYPES = ('vanilla', 'lsgan', 'wgan', 'wgan_softplus', 'hinge')

_GAN_MODEL = 'model_type BlindSRGANModel'
GAN_TOP_FIELDS = {
    'network_d': Field(dict, None, doc=f'discriminator ({_GAN_MODEL}): {{type: <registered arch>, **constructor '
                       'kwargs}, e.g. {type: UNetDiscriminatorSN, num_in_ch: 3, num_feat: 64, skip_connection: true}'),
    'l1_gt_usm': Field(bool, True, doc=f'{_GAN_MODEL}: the pixel loss compares with the USM-sharpened GT '
                       '(Real-ESRGAN: true)'),
    'percep_gt_usm': Field(bool, True, doc=f'{_GAN_MODEL}: the perceptual loss compares with the USM-sharpened GT '
                           '(Real-ESRGAN: true)'),
    'gan_gt_usm': Field(bool, False, doc=f"{_GAN_MODEL}: the discriminator's real samples are the USM-sharpened GT "
                        '(Real-ESRGAN: false)'),
}
GAN_PATH_FIELDS = {
    'pretrain_network_d': Field(str, None, kind='file', doc=f'initial discriminator weights (.pth; {_GAN_MODEL})'),
    'param_key_d': Field(str, 'params', doc="key inside pretrain_network_d: 'params' or 'params_ema'"),
    'strict_load_d': Field(bool, True, doc='strict state-dict loading of pretrain_network_d'),
}
VGG_PATH_FIELD = {
    'pretrained_vgg': Field(str, None, doc="VGG weights of train.perceptual_opt (torchvision's state dict, e.g. "
                            'vgg19-dcbb9e9d.pth, or a folder holding it); default: '
                            'experiments/pretrained_models/<file>, then $TORCH_HOME/hub/checkpoints/<file>; never '
                            "downloaded. 'random': random VGG, for tests of the wiring only"),
}
GAN_TRAIN_FIELDS = {
    'optim_d': Field(dict, None, doc=f'optimizer of net_d ({_GAN_MODEL}), as optim_g; train.scheduler applies to '
                     'it too'),
    'gan_opt': Field(dict, None, doc=f'adversarial loss ({_GAN_MODEL}): {{type: GANLoss, gan_type: '
                     'vanilla|lsgan|wgan|wgan_softplus|hinge, loss_weight, real_label_val, fake_label_val}'),
    'net_d_iters': Field(int, 1, min=1, doc='net_g is updated on iterations that are multiples of net_d_iters; '
                         'net_d on every iteration'),
    'net_d_init_iters': Field(int, 0, min=0, doc='net_g is not updated during the first net_d_init_iters iterations '
                              '(discriminator warm-up)'),
}


def _given(raw):
    """Dotted names of the discriminator options a raw option dict sets."""
    sections = (('', raw, GAN_TOP_FIELDS), ('train.', raw.get('train') or {}, GAN_TRAIN_FIELDS),
                ('path.', raw.get('path') or {}, GAN_PATH_FIELDS))
    return [prefix + key for prefix, section, fields in sections for key in fields if section.get(key) is not None]


def validate_gan_options(raw, opt, model_cls, meta_net_g):
    """Check the discriminator options of a validated training dict ``opt`` (``raw``: the file as written)."""
    if not getattr(model_cls, 'TRAINS_DISCRIMINATOR', False):
        given = _given(raw)
        if given:
            raise OptionError(f"{given[0]}: only a model that trains a discriminator reads it ({_GAN_MODEL}); "
                              f"model_type is {opt['model_type']}")
        return
    train = opt['train']
    for where, value in (('network_d', opt['network_d']), ('train.optim_d', train['optim_d']),
                         ('train.gan_opt', train['gan_opt'])):
        if value is None:
            raise OptionError(f"{where}: missing required key ({opt['model_type']} trains a discriminator)")
    opt['network_d'] = _check_discriminator(opt, arch_spec(meta_net_g).in_channels(meta_net_g))
    train['optim_d'] = typed_section(train['optim_d'], 'train.optim_d', dict_registry(OPTIMIZERS), 'optimizer',
                                     skip=('params', ))
    gan = train['gan_opt']
    if isinstance(gan, dict) and gan.get('type') in LOSS_REGISTRY and gan['type'] not in GAN_LOSSES:
        raise OptionError(f"train.gan_opt.type: {gan['type']} is not an adversarial loss; use one of "
                          f'{list(GAN_LOSSES)}')
    gan = typed_section(gan, 'train.gan_opt', LOSS_REGISTRY, 'loss')
    if gan['gan_type'] not in GAN_TYPES:
        raise OptionError(f"train.gan_opt.gan_type: {gan['gan_type']!r} is not one of {list(GAN_TYPES)}")
    train['gan_opt'] = gan


def _patch_size(opt):
    if opt['degradation'] is not None:
        return opt['degradation'].get('gt_size')
    return opt['datasets'].get('train', {}).get('gt_size')


def _check_discriminator(opt, channels):
    net_opt = dict(opt['network_d'])
    if 'type' not in net_opt:
        raise OptionError('network_d.type: missing required key')
    written = net_opt['type']
    if written not in ARCH_REGISTRY and written in NETWORK_D_ALIASES:
        net_opt['type'] = NETWORK_D_ALIASES[written]
    cls = registered(ARCH_REGISTRY, net_opt['type'], 'network_d.type', 'architecture')
    net_opt = validate_kwargs(net_opt, cls, 'network_d')
    try:
        net = build_meta_network(net_opt)
    except Exception as err:  # the constructor's own message is the useful part
        raise OptionError(f'network_d: cannot build {written}: {err}') from err
    size = _patch_size(opt)
    if size:
        device = next(net.parameters()).device
        try:
            with torch.no_grad():
                net(torch.zeros(1, channels, size, size, device=device))
        except NotImplementedError:  # an operation the meta device lacks; the real run checks again
            pass
        except Exception as err:
            raise OptionError(f'network_d: {written} cannot judge {channels}-channel {size}×{size} GT patches '
                              f'({err}); UNetDiscriminatorSN needs patches whose size is a multiple of 8') from err
    return net_opt


def resolve_vgg_weights(opt):
    """Set ``path.pretrained_vgg`` to the VGG weights file that ``train.perceptual_opt`` will load (or 'random')."""
    popt = opt['train'].get('perceptual_opt')
    if popt is None or popt['type'] != 'PerceptualLoss':
        return
    vgg_type = popt.get('vgg_type', 'vgg19')
    if vgg_type not in VGG_TYPES:
        raise OptionError(f'train.perceptual_opt.vgg_type: {vgg_type!r} is not one of {list(VGG_TYPES)}')
    layers = VGG_LAYER_NAMES[vgg_type.replace('_bn', '')]
    layers = insert_bn(layers) if vgg_type.endswith('_bn') else layers
    for layer in popt.get('layer_weights') or {}:
        if layer not in layers:
            raise OptionError(f"train.perceptual_opt.layer_weights.{layer}: not a layer of {vgg_type}; layers are "
                              f"{', '.join(n for n in layers if not n.startswith('pool'))}")
    given = opt['path'].get('pretrained_vgg')
    try:
        opt['path']['pretrained_vgg'] = find_vgg_weights(vgg_type, given)
    except VGGWeightsNotFound as err:
        raise OptionError(f'path.pretrained_vgg: {err}') from err

