"""Channel maps, captured and summarised: how the response of a network's feature is spread over its channels.

The generalisation papers of blind SR show what a regularizer does to the features with such
figures: EATS (Fig. 1) compares the per-channel responses of a shallow body block of SRResNet
with and without EATS; Reflash Dropout shows that without dropout a few channels dominate. This
module captures the feature at one named site (:mod:`basicsr_ext.archs.sites`) of one or more
trained networks and summarises it per channel.

Definitions (docs/channel_maps.md):

* **mean |activation|** of channel c: the mean of ``|x[c]|`` over the pixels of one image's
  feature, then averaged over the images, each image weighing the same whatever its size;
* **share** of channel c: its mean |activation| divided by the sum over all channels;
* **top-k share** (dominance): the summed share of the k channels with the largest mean
  |activation|. It lies in [k/C, 1]: k/C when every channel responds equally, 1 when the
  other C-k channels are silent.

Features are read in eval mode through a site transform that returns its input unchanged, so
the captured tensor is exactly what flows through the network. Inputs are padded to the size
multiple the arch needs (as for inference) and the padded border is cut from the feature again,
so reflected pixels never enter the statistics.
"""
from dataclasses import dataclass

import numpy as np
import torch

from ..archs.forward import forward_padded, input_multiple
from ..archs.sites import describe_names, get_sites
from ..utils.misc import did_you_mean

__all__ = [
    'SiteError', 'ChannelStats', 'find_site', 'capture_site_features', 'mean_abs_per_channel', 'channel_mean_abs',
    'top_k_share'
]


class SiteError(ValueError):
    """A site name that the network does not have."""


# --------------------------------------------------------------------------- capturing
def find_site(net, site_name):
    """The :class:`~basicsr_ext.archs.sites.Site` called ``site_name`` in ``net``, or a SiteError listing its sites."""
    sites = get_sites(net)
    names = sites.names()
    if site_name in names:
        return sites[site_name]
    hint = did_you_mean(site_name, names)  # "; did you mean 'x'?", shown here in brackets
    hint = f' ({hint[2:]})' if hint else ''
    raise SiteError(f"unknown site '{site_name}': {sites.arch} has no such site{hint}; "
                    f'{sites.arch} has: {describe_names(names)}')


def _crop_padding(feat, in_hw, padded_hw):
    # a site may run at another resolution than the input (HR after the upsampler, half LR after
    # RRDBNet's pixel-unshuffle): keep the same fraction of rows and columns as the unpadded input
    (h, w), (ph, pw) = in_hw, padded_hw
    fh, fw = feat.shape[-2:]
    return feat[..., :-(-h * fh // ph), :-(-w * fw // pw)]


class _Captured(Exception):
    """Raised by the recording transform: the layers after the site are not needed."""


def capture_site_features(net, site_name, lq):
    """The feature at ``site_name`` for the input ``lq`` (NCHW in [0, 1]): an NCHW float32 CPU tensor.

    The network runs in eval mode without gradients (its previous mode is restored afterwards),
    and only up to the site: the upsampler at HR resolution, most of the cost of a shallow
    site, is skipped. Token sites (SwinIR) come as the NCHW view the site exposes. Raises
    SiteError for an unknown site.
    """
    site = find_site(net, site_name)
    captured = []

    def record(feat):
        captured.append(feat.detach().float().cpu())
        raise _Captured

    param = next(iter(net.parameters()), None)
    lq = lq.to(param.device if param is not None else 'cpu')
    multiple = input_multiple(net)
    h, w = lq.shape[-2:]
    was_training = net.training
    handle = site.register_transform(record)
    try:
        net.eval()
        with torch.no_grad():
            forward_padded(net, lq, 1, multiple)  # scale 1: the output is never reached, nothing to crop
    except _Captured:
        pass
    finally:
        handle.remove()
        net.train(was_training)
    if not captured:
        raise RuntimeError(f"site '{site_name}' of {type(net).__name__} did not run in the forward pass")
    return _crop_padding(captured[0], (h, w), (-(-h // multiple) * multiple, -(-w // multiple) * multiple))


# --------------------------------------------------------------------------- statistics
def mean_abs_per_channel(feature):
    """Mean |activation| of each channel of an NCHW feature over batch, height and width (float64 numpy)."""
    if feature.ndim != 4:
        raise ValueError(f'expected an NCHW feature, got shape {tuple(feature.shape)}')
    return feature.detach().double().abs().mean(dim=(0, 2, 3)).cpu().numpy()


def channel_mean_abs(features):
    """Per-channel mean |activation| over several NCHW features (one per image), each image weighing the same."""
    vectors = [mean_abs_per_channel(f) for f in features]
    if not vectors:
        raise ValueError('no features to summarise')
    counts = sorted({len(v) for v in vectors})
    if len(counts) > 1:
        raise ValueError(f'features have different channel counts {counts}; they come from different sites or archs')
    return np.mean(vectors, axis=0)


def top_k_share(mean_abs, k):
    """Share of the total mean |activation| held by the ``k`` strongest channels, in [k/C, 1].

    ``k`` larger than the channel count counts every channel (share 1). All-zero responses have
    no share to speak of: NaN.
    """
    if int(k) < 1:
        raise ValueError(f'top_k must be at least 1, got {k}')
    values = np.sort(np.asarray(mean_abs, dtype=np.float64))[::-1]
    total = values.sum()
    if total <= 0:
        return float('nan')
    return float(values[:int(k)].sum() / total)


@dataclass
class ChannelStats:
    """Per-channel mean |activation| of one model at one site over ``images`` images."""
    model: str
    arch: str
    site: str
    mean_abs: np.ndarray
    images: int

    @property
    def channels(self):
        return len(self.mean_abs)

    def shares(self):
        total = self.mean_abs.sum()
        return self.mean_abs / total if total > 0 else np.full_like(self.mean_abs, np.nan)

    def ranks(self):
        """Rank of each channel, 1 = largest mean |activation|; ties keep channel order."""
        order = np.argsort(-self.mean_abs, kind='stable')
        ranks = np.empty(self.channels, dtype=int)
        ranks[order] = np.arange(1, self.channels + 1)
        return ranks

    def top_k_share(self, k):
        return top_k_share(self.mean_abs, k)
