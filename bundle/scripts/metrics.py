"""Metrics of the evaluation (``docs/method.md`` section 4): image-level AP / AUC and Dice per tau.

AP and AUC are MONAI's ``AveragePrecision`` and ``ROCAUC`` handlers on (score, label), see
:func:`score_output`. Dice, for every tau of the sweep, is reported twice:

- ``dice_tau{t}``: MONAI's :class:`monai.handlers.MeanDice`, the mean over images of the
  per-image Dice (a "macro" Dice). MONAI's ``reduction`` options only reduce per-image
  values, they cannot pool pixels, so
- ``micro_dice_tau{t}``: :class:`MicroDice` (built on MONAI's ``CumulativeIterationMetric``)
  pools the true / false positive and false negative pixel counts of all images first,
  ``2 TP / (2 TP + FP + FN)``: the paper's (micro) Dice.

Only diseased images with a lesion mask enter Dice; :func:`dice_output` gives the others an
empty prediction and an empty ground truth, which ``MeanDice`` ignores (``ignore_empty``) and
which add no pixel to the micro counts.

The decisions of the checkpoint's thresholds (:mod:`scripts.thresholds`; ``evaluate.json``,
:func:`additional_metrics` with ``decisions=True``) are scored on the items'
``pred_label`` (1 abnormal) and ``abs_mask`` (``anomaly_map > pixel_threshold``):

- ``sensitivity``: :class:`LabelSensitivity`, the share of diseased images labelled abnormal;
- ``specificity``: :class:`LabelSpecificity`, the share of healthy images labelled normal;
- ``healthy_mask_rate``: :class:`HealthyMaskRate`, the share of healthy images whose absolute
  mask is not empty (what a user would see painted on a healthy film);
- ``micro_dice_absolute``: :class:`MicroDice` of the absolute masks.

A metric with no data is NaN (``null`` in ``metrics.json``), never 0: both Dice metrics when no
evaluated image has a lesion mask (MONAI's ``MeanDice`` alone would report 0.0, see
:class:`MeanDiceOrNaN`), AUC and AP when the set holds one class only, the decision metrics
when the checkpoint has no thresholds (or the set lacks the class they count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.handlers import ROCAUC, AveragePrecision, IgniteMetricHandler, MeanDice
from monai.metrics import CumulativeIterationMetric

__all__ = [
    "HealthyMaskRate",
    "LabelSensitivity",
    "LabelSpecificity",
    "MeanDiceOrNaN",
    "MicroDice",
    "MicroDiceMetric",
    "additional_metrics",
    "decision_metrics",
    "dice_handlers",
    "dice_output",
    "key_metric",
    "score_output",
    "tau_name",
]


class MicroDiceMetric(CumulativeIterationMetric):
    """Micro (pooled) Dice of binary masks: sums TP, FP, FN over all images, then Dice.

    ``y_pred`` and ``y``: batch-first ``B x C x H x W`` or lists of channel-first tensors,
    binary (values > 0.5 are foreground). :meth:`aggregate` returns a scalar tensor, NaN when
    no image had any foreground in either mask.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if y is None:
            raise ValueError("MicroDiceMetric needs y (the ground-truth masks)")
        if y_pred.shape != y.shape:
            raise ValueError(f"y_pred and y shapes differ: {tuple(y_pred.shape)} vs {tuple(y.shape)}")
        p = (y_pred > 0.5).flatten(1)
        g = (y > 0.5).flatten(1)
        tp = (p & g).sum(1)
        fp = (p & ~g).sum(1)
        fn = (~p & g).sum(1)
        return torch.stack([tp, fp, fn], dim=1).double()

    def aggregate(self) -> torch.Tensor:
        buf = self.get_buffer()
        if not isinstance(buf, torch.Tensor) or buf.numel() == 0:
            return torch.tensor(float("nan"))
        tp, fp, fn = buf.sum(0)
        denom = 2 * tp + fp + fn
        return (2 * tp / denom).float() if denom > 0 else torch.tensor(float("nan"))


class MicroDice(IgniteMetricHandler):
    """Ignite handler of :class:`MicroDiceMetric` (the paper's pooled Dice)."""

    def __init__(self, output_transform: Callable = lambda x: x, save_details: bool = False) -> None:
        super().__init__(metric_fn=MicroDiceMetric(), output_transform=output_transform, save_details=save_details)


class MeanDiceOrNaN(MeanDice):
    """MONAI's :class:`~monai.handlers.MeanDice`, but NaN when no image had a lesion to score.

    ``MeanDice`` ignores images with an empty ground truth (``ignore_empty``); when every image
    is ignored its mean is 0.0, which reads as a measured Dice of zero. Here it is NaN, as
    :class:`MicroDice` is.
    """

    def compute(self):
        buf = self.metric_fn.get_buffer()
        empty = not isinstance(buf, torch.Tensor) or buf.numel() == 0 or bool(torch.isnan(buf).all())
        result = super().compute()
        return float("nan") if empty else result


def _items(output) -> list[dict]:
    return output if isinstance(output, list) else [output]


def score_output(output, score_key: str = "score", label_key: str = "label"):
    """Output transform for ``ROCAUC`` / ``AveragePrecision``: (scores, labels) as lists."""
    items = _items(output)
    return [o[score_key] for o in items], [o[label_key] for o in items]


class dice_output:  # noqa: N801 (used like a function in configs)
    """Output transform for Dice at tau number ``index``: ``(pred masks, lesion masks)``.

    Items that are not diseased with a lesion mask, or have no ``mask_key`` (an absolute mask
    of a checkpoint without thresholds), get an empty prediction and an empty ground truth
    (ignored by ``MeanDice``, no pixels for ``MicroDice``).
    """

    def __init__(
        self,
        index: int,
        mask_key: str = "pred_mask",
        label_key: str = "gt_mask",
        has_mask_key: str = "gt_available",
        class_key: str = "label",
    ) -> None:
        self.index = int(index)
        self.mask_key, self.label_key, self.has_mask_key, self.class_key = mask_key, label_key, has_mask_key, class_key

    def __call__(self, output):
        preds, gts = [], []
        for o in _items(output):
            g = torch.as_tensor(o[self.label_key]).float()
            if self.mask_key not in o:
                preds.append(torch.zeros_like(g).reshape(1, *g.shape[-2:]))
                gts.append(torch.zeros_like(preds[-1]))
                continue
            p = o[self.mask_key][self.index : self.index + 1].float()
            g = g.to(p.device)
            use = float(torch.as_tensor(o.get(self.has_mask_key, 1.0)).reshape(-1)[0]) > 0.5
            if self.class_key in o:
                use = use and float(torch.as_tensor(o[self.class_key]).reshape(-1)[0]) > 0.5
            if not use:
                p, g = torch.zeros_like(p), torch.zeros_like(p)
            preds.append(p)
            gts.append(g.reshape(p.shape))
        return preds, gts


def _flag(o: dict, key: str) -> bool | None:
    """``o[key] > 0.5`` for a ``(1,)`` value, ``None`` when the item has no ``key``."""
    if key not in o or o[key] is None:
        return None
    return float(torch.as_tensor(o[key]).reshape(-1)[0]) > 0.5


class _ImageShare(Metric):
    """The share of the counted images that are hits (ignite ``Metric``, summed over processes); NaN when none."""

    def __init__(self, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    def judge(self, o: dict) -> bool | None:
        """``True`` / ``False`` for a counted item, ``None`` for one not counted."""
        raise NotImplementedError

    @reinit__is_reduced
    def reset(self) -> None:
        self._hits = 0
        self._count = 0

    @reinit__is_reduced
    def update(self, output) -> None:
        for o in _items(output):
            hit = self.judge(o)
            if hit is not None:
                self._count += 1
                self._hits += int(hit)

    @sync_all_reduce("_hits", "_count")
    def compute(self) -> float:
        return float(self._hits) / float(self._count) if self._count else float("nan")


class LabelSensitivity(_ImageShare):
    """Sensitivity of the predicted label: diseased images (``label_key`` 1) with ``pred_key`` 1 (abnormal)."""

    def __init__(self, pred_key: str = "pred_label", label_key: str = "label", **kwargs) -> None:
        self.pred_key, self.label_key = pred_key, label_key
        super().__init__(**kwargs)

    def judge(self, o: dict) -> bool | None:
        pred, label = _flag(o, self.pred_key), _flag(o, self.label_key)
        return None if pred is None or label is not True else pred


class LabelSpecificity(_ImageShare):
    """Specificity of the predicted label: healthy images (``label_key`` 0) with ``pred_key`` 0 (normal)."""

    def __init__(self, pred_key: str = "pred_label", label_key: str = "label", **kwargs) -> None:
        self.pred_key, self.label_key = pred_key, label_key
        super().__init__(**kwargs)

    def judge(self, o: dict) -> bool | None:
        pred, label = _flag(o, self.pred_key), _flag(o, self.label_key)
        return None if pred is None or label is not False else not pred


class HealthyMaskRate(_ImageShare):
    """The share of healthy images (``label_key`` 0) whose ``mask_key`` (the absolute mask) has a pixel."""

    def __init__(self, mask_key: str = "abs_mask", label_key: str = "label", **kwargs) -> None:
        self.mask_key, self.label_key = mask_key, label_key
        super().__init__(**kwargs)

    def judge(self, o: dict) -> bool | None:
        if _flag(o, self.label_key) is not False or o.get(self.mask_key) is None:
            return None
        return bool((torch.as_tensor(o[self.mask_key]) > 0.5).any())


def decision_metrics(prefix: str = "", pred_key: str = "pred_label", mask_key: str = "abs_mask") -> dict:
    """``sensitivity``, ``specificity``, ``healthy_mask_rate`` and ``micro_dice_absolute`` (module docstring)."""
    return {
        f"{prefix}sensitivity": LabelSensitivity(pred_key=pred_key),
        f"{prefix}specificity": LabelSpecificity(pred_key=pred_key),
        f"{prefix}healthy_mask_rate": HealthyMaskRate(mask_key=mask_key),
        f"{prefix}micro_dice_absolute": MicroDice(output_transform=dice_output(0, mask_key=mask_key)),
    }


def tau_name(tau: float) -> str:
    """``0.2 -> "0.2"``: the suffix of the Dice metric names."""
    return f"{float(tau):g}"


def dice_handlers(
    taus: Sequence[float], micro: bool = True, mean: bool = True, prefix: str = "", save_details: bool = True
) -> dict:
    """The Dice metrics of every tau, for an evaluator's ``additional_metrics``.

    Returns ``{"{prefix}dice_tau{t}": MeanDiceOrNaN, "{prefix}micro_dice_tau{t}": MicroDice}``
    with the tau at position ``i`` read from channel ``i`` of ``pred_mask``; both are NaN when
    no evaluated image has a lesion mask.
    """
    out: dict = {}
    for i, tau in enumerate(taus):
        if micro:
            out[f"{prefix}micro_dice_tau{tau_name(tau)}"] = MicroDice(output_transform=dice_output(i))
        if mean:
            out[f"{prefix}dice_tau{tau_name(tau)}"] = MeanDiceOrNaN(
                include_background=True, output_transform=dice_output(i), save_details=save_details
            )
    return out


def key_metric(prefix: str = "") -> dict:
    """``{"{prefix}auc": ROCAUC}`` of the image score: the evaluator's ``key_val_metric``."""
    return {f"{prefix}auc": ROCAUC(output_transform=score_output)}


def additional_metrics(taus: Sequence[float], prefix: str = "", decisions: bool = False) -> dict:
    """AP of the image score and the Dice metrics of every tau (:func:`dice_handlers`): ``additional_metrics``.

    ``decisions``: also the metrics of the thresholded decisions (:func:`decision_metrics`),
    for an evaluation that applies a checkpoint's thresholds (``evaluate.json``).
    """
    metrics = {f"{prefix}ap": AveragePrecision(output_transform=score_output), **dice_handlers(taus, prefix=prefix)}
    if decisions:
        metrics.update(decision_metrics(prefix))
    return metrics
