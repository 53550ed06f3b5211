"""The detector: the reconstruction network and the eq.-1 loss (``docs/method.md`` section 3).

- :mod:`artasyn.model.networks`: :class:`AnomalyUNet`, the authors' encoder-decoder UNet.
- :mod:`artasyn.model.losses`: :class:`ARTASynLoss` (L_local + L_global + L_feat + L_dice) and
  its terms.

Example::

    >>> import torch
    >>> from artasyn.model import ARTASynLoss, AnomalyUNet
    >>> net = AnomalyUNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_downsample=())
    >>> net(torch.rand(1, 1, 32, 32)).shape
    torch.Size([1, 1, 32, 32])
"""

from .losses import (
    ARTASynLoss,
    FeatureConsistencyLoss,
    GlobalReconstructionLoss,
    LocalReconstructionLoss,
    SoftDiceAnomalyLoss,
    soft_anomaly_map,
)
from .networks import PAPER_CONFIG, SMALL_CONFIG, AnomalyUNet

__all__ = [
    "PAPER_CONFIG",
    "SMALL_CONFIG",
    "ARTASynLoss",
    "AnomalyUNet",
    "FeatureConsistencyLoss",
    "GlobalReconstructionLoss",
    "LocalReconstructionLoss",
    "SoftDiceAnomalyLoss",
    "soft_anomaly_map",
]
