"""The training loss of the ART-ASyn detector, eq. 1 (``docs/method.md`` section 3).

``L_total = w_local * L_local + w_global * L_global + w_feat * L_feat + w_dice * L_dice``
with the authors' weights ``w_local = 2`` and all others ``1``; a weight of 0 switches a
term off (the ablation of the seed's Table S3) and the term is then not computed.

Value ranges: images (``inputs``, ``recon``, ``target``) are float tensors scaled to
``[0, 1]`` (the uint8 image divided by 255), shape ``B x C x H x W`` (any number of
spatial dims); ``mask`` is the binary anomaly mask (``B x 1 x ...`` or ``B x C x ...``,
values 0/1), all zeros for a healthy sample. The thresholds below assume that range.

Example::

    >>> import torch
    >>> from artasyn.model.losses import ARTASynLoss
    >>> x = torch.rand(2, 1, 32, 32); target = x.clone(); mask = torch.zeros_like(x)
    >>> recon = torch.rand(2, 1, 32, 32, requires_grad=True)
    >>> feats = torch.rand(2, 16, 4, 4)
    >>> out = ARTASynLoss()(x, recon, target, mask, feats, feats)
    >>> sorted(out)
    ['dice', 'feat', 'global', 'local', 'total']
    >>> out["total"].backward()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from ..constants import DICE_ERROR_THRESHOLD, DICE_SCALE, W_DICE, W_FEAT, W_GLOBAL, W_LOCAL

__all__ = [
    "GlobalReconstructionLoss",
    "LocalReconstructionLoss",
    "FeatureConsistencyLoss",
    "SoftDiceAnomalyLoss",
    "ARTASynLoss",
    "soft_anomaly_map",
]


def _check_same_shape(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def soft_anomaly_map(
    inputs: torch.Tensor, recon: torch.Tensor, threshold: float = DICE_ERROR_THRESHOLD, scale: float = DICE_SCALE
) -> torch.Tensor:
    """Differentiable anomaly map ``sigmoid(scale * ((inputs - recon) ** 2 - threshold))``.

    The authors binarize the squared error at ``0.2`` (images in [0, 1]); that step has no
    gradient, and synthetic anomalies rarely reach that error (``docs/method.md`` section 8).
    This map equals 0.5 at ``threshold`` and approaches the hard map as ``scale`` grows. The
    defaults (``DICE_ERROR_THRESHOLD = 0.01``, ``DICE_SCALE = 1000``) are calibrated to the
    anomalies' error scale: the map rises from 0.12 to 0.88 over ``0.01 +- 0.002`` and is
    5e-5 where the reconstruction is exact (section 3, L_dice). The paper's threshold is
    ``artasyn.constants.PAPER_DICE_ERROR_THRESHOLD`` (use it with ``scale=50``).
    """
    return torch.sigmoid(scale * ((inputs - recon) ** 2 - threshold))


class GlobalReconstructionLoss(nn.Module):
    """``L_global``: mean squared error over the image, per sample, then over the batch (section 3)."""

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("GlobalReconstructionLoss", recon, target)
        return ((target - recon) ** 2).flatten(1).mean(1).mean()


class LocalReconstructionLoss(nn.Module):
    """``L_local``: squared error restricted to the anomaly mask (section 3).

    As the authors: ``((target - recon) ** 2 * mask)`` averaged over *all* channels and pixels
    (not over the mask area, so small anomalies weigh little), per sample, then over the batch.
    A single-channel mask broadcasts over the image channels.
    """

    def forward(self, recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_same_shape("LocalReconstructionLoss", recon, target)
        se = (target - recon) ** 2 * mask.to(recon.dtype)
        return se.flatten(1).mean(1).mean()


class FeatureConsistencyLoss(nn.Module):
    """``L_feat``: ``1 - cos`` between the flattened, L2-normalized bottleneck features (section 3).

    Pulls the encoding of an anomalous input toward that of its healthy target.

    Args:
        detach_target: stop the gradient through the target's features (the authors do
            not; default False).
        eps: numerical floor of the normalization.
    """

    def __init__(self, detach_target: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        self.detach_target = detach_target
        self.eps = eps

    def forward(self, feat_in: torch.Tensor, feat_target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("FeatureConsistencyLoss", feat_in, feat_target)
        if self.detach_target:
            feat_target = feat_target.detach()
        a = F.normalize(feat_in.flatten(1).float(), dim=1, eps=self.eps)
        b = F.normalize(feat_target.flatten(1).float(), dim=1, eps=self.eps)
        return (1.0 - (a * b).sum(1)).mean()


class SoftDiceAnomalyLoss(nn.Module):
    """``L_dice``: Dice loss between a soft anomaly map and the anomaly mask (section 3).

    The predicted map is :func:`soft_anomaly_map` of ``inputs`` and ``recon`` (differentiable,
    so the term trains the network, unlike the authors' thresholded map); the loss is
    :class:`monai.losses.DiceLoss` on it.

    Empty masks (healthy samples): with ``batch=True`` (default) the intersection and the sums
    are pooled over the whole batch, as a micro Dice, so any predicted anomaly on a healthy
    sample enlarges the denominator and is penalized, and a batch with anomalies is not
    dominated by its healthy members. The smoothing terms ``smooth_nr = smooth_dr = 1``
    keep every case finite: for an all-empty batch the loss is ``1 - 1 / (sum(pred) + 1)``,
    0 for an empty prediction and rising toward 1 with the predicted area, so the gradient
    pushes the map toward empty (with MONAI's default 1e-5 smoothing that push would be
    ~1e-5 times weaker). With ``batch=False`` each sample gets its own Dice, then the mean.

    Args:
        threshold: squared-error threshold of the anomaly map (images in [0, 1]); default calibrated
            to the anomalies' error scale (the authors' 0.2 is ``PAPER_DICE_ERROR_THRESHOLD``).
        scale: sigmoid steepness (inverse temperature) of the soft map.
        smooth_nr, smooth_dr, batch: passed to :class:`monai.losses.DiceLoss`.
    """

    def __init__(
        self,
        threshold: float = DICE_ERROR_THRESHOLD,
        scale: float = DICE_SCALE,
        smooth_nr: float = 1.0,
        smooth_dr: float = 1.0,
        batch: bool = True,
    ) -> None:
        super().__init__()
        self.threshold = threshold
        self.scale = scale
        self.dice = DiceLoss(sigmoid=False, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch, reduction="mean")

    def forward(self, inputs: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_same_shape("SoftDiceAnomalyLoss", inputs, recon)
        pred = soft_anomaly_map(inputs.float(), recon.float(), self.threshold, self.scale)
        pred = pred.mean(1, keepdim=True) if pred.shape[1] != mask.shape[1] else pred
        return self.dice(pred, mask.to(pred.dtype))


class ARTASynLoss(nn.Module):
    """Eq. 1 of the paper: the weighted sum of the four terms (``docs/method.md`` section 3).

    Args:
        w_global, w_local, w_feat, w_dice: term weights (authors: 1, 2, 1, 1); 0 switches a
            term off: it is not computed and reported as 0.
        dice_threshold, dice_scale, dice_batch: see :class:`SoftDiceAnomalyLoss`.
        detach_target_features: see :class:`FeatureConsistencyLoss`.

    ``forward(inputs, recon, target, mask, feat_in, feat_target)``: ``inputs`` the network
    input (anomalous or healthy), ``recon`` its reconstruction, ``target`` the healthy image,
    ``mask`` the anomaly mask, ``feat_in`` / ``feat_target`` the bottleneck features of
    ``inputs`` / ``target`` (may be None when ``w_feat == 0``). Returns a dict of scalar
    tensors ``total``, ``global``, ``local``, ``feat``, ``dice`` (the unweighted terms).
    """

    def __init__(
        self,
        w_global: float = W_GLOBAL,
        w_local: float = W_LOCAL,
        w_feat: float = W_FEAT,
        w_dice: float = W_DICE,
        dice_threshold: float = DICE_ERROR_THRESHOLD,
        dice_scale: float = DICE_SCALE,
        dice_batch: bool = True,
        detach_target_features: bool = False,
    ) -> None:
        super().__init__()
        self.w_global = float(w_global)
        self.w_local = float(w_local)
        self.w_feat = float(w_feat)
        self.w_dice = float(w_dice)
        self.global_loss = GlobalReconstructionLoss()
        self.local_loss = LocalReconstructionLoss()
        self.feat_loss = FeatureConsistencyLoss(detach_target=detach_target_features)
        self.dice_loss = SoftDiceAnomalyLoss(threshold=dice_threshold, scale=dice_scale, batch=dice_batch)

    def forward(
        self,
        inputs: torch.Tensor,
        recon: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        feat_in: torch.Tensor | None = None,
        feat_target: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        zero = recon.new_zeros(()).float()
        terms = {"global": zero, "local": zero, "feat": zero, "dice": zero}
        total = zero
        if self.w_global:
            terms["global"] = self.global_loss(recon.float(), target.float())
            total = total + self.w_global * terms["global"]
        if self.w_local:
            terms["local"] = self.local_loss(recon.float(), target.float(), mask)
            total = total + self.w_local * terms["local"]
        if self.w_feat:
            if feat_in is None or feat_target is None:
                raise ValueError("ARTASynLoss: w_feat > 0 needs feat_in and feat_target (bottleneck features)")
            terms["feat"] = self.feat_loss(feat_in, feat_target)
            total = total + self.w_feat * terms["feat"]
        if self.w_dice:
            terms["dice"] = self.dice_loss(inputs, recon, mask)
            total = total + self.w_dice * terms["dice"]
        return {"total": total, **terms}
