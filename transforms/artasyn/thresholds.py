"""Decision thresholds of the detector (``docs/method.md`` section 4, our addition to the paper).

The paper reports threshold-free image metrics (AP, AUC) and draws each lesion mask at a
threshold relative to *that image's* largest error (:func:`artasyn.scoring.anomaly_masks`), so
every image, a healthy one too, gets a mask and no image gets a verdict. To give decisions a
user can act on, as anomalib's adaptive thresholds do, thresholds are calibrated once on the
validation images (label 0 healthy, 1 diseased) and then kept fixed:

- :func:`specificity_threshold`: the image-score threshold that leaves at least
  ``specificity`` of the healthy images normal;
- :func:`f1_threshold`: the image-score threshold of the best F1 (diseased = positive), when
  both classes are there;
- :func:`quantile_threshold`: the value that at least a share ``q`` of the values do not
  exceed (the inverted-CDF quantile); on the healthy images' anomaly-map values it is the
  pixel threshold (:func:`artasyn.scoring.mask_values` gives those values);
- :func:`calibrate_thresholds` computes all of them; :class:`AnomalyDecisiond` applies them to
  an item: ``label = score > image_threshold`` (1 abnormal, 0 normal) and
  ``mask = anomaly_map > pixel_threshold`` (:func:`artasyn.scoring.absolute_mask`).

Every rule is a strict ``>``: a value equal to its threshold is normal, so each threshold is a
value seen on validation (the highest one still called normal), and a perfect reconstruction
(a map of zeros) is never masked. numpy only (no scikit-learn).

Example (20 healthy scores 1..20, three diseased)::

    >>> from artasyn.thresholds import calibrate_thresholds
    >>> t = calibrate_thresholds(
    ...     scores=[*range(1, 21), 18.5, 25, 30],
    ...     labels=[0] * 20 + [1] * 3,
    ...     healthy_values=[0.0, 0.0, 0.01, 0.02, 0.5],
    ...     specificity=0.95,
    ...     pixel_quantile=0.75,
    ... )
    >>> t["image_threshold_specificity"], t["val_specificity"], round(t["val_sensitivity"], 3)
    (19.0, 0.95, 0.667)
    >>> t["image_threshold_f1"], t["f1"], t["pixel_threshold"]
    (20.0, 0.8, 0.02)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform

from .base import as_bool
from .constants import DEFAULT_PIXEL_QUANTILE, DEFAULT_SPECIFICITY
from .scoring import absolute_mask

__all__ = [
    "AnomalyDecisionD",
    "AnomalyDecisionDict",
    "AnomalyDecisiond",
    "calibrate_thresholds",
    "f1_threshold",
    "quantile_threshold",
    "specificity_threshold",
]


def _share(q: float, name: str) -> float:
    q = float(q)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {q}")
    return q


def _array(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    v = np.asarray(values)
    v = v.astype(np.float64) if not np.issubdtype(v.dtype, np.floating) else v
    v = v.reshape(-1)
    bad = int((~np.isfinite(v)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} of {v.size} values are NaN or infinite")
    return v


def quantile_threshold(values, q: float) -> float | None:
    """The smallest of ``values`` that at least a share ``q`` of them do not exceed; ``None`` when empty.

    The inverted-CDF quantile (``numpy.quantile(..., method="inverted_cdf")``): the
    ``ceil(q * n)``-th smallest value, so the rule ``value > t`` flags at most ``1 - q`` of
    ``values`` (fewer with ties at ``t``). Linear time (``numpy.partition``).

    >>> quantile_threshold([5, 1, 4, 2, 3], 0.8), quantile_threshold([5, 1, 4, 2, 3], 0.81)
    (4.0, 5.0)
    """
    q = _share(q, "q")
    v = _array(values, "values")
    if v.size == 0:
        return None
    k = max(1, math.ceil(round(q * v.size, 9)))
    return float(np.partition(v, k - 1)[k - 1])


def specificity_threshold(healthy_scores, specificity: float = DEFAULT_SPECIFICITY) -> float | None:
    """The image-score threshold leaving at least ``specificity`` of ``healthy_scores`` normal (``score <= t``).

    :func:`quantile_threshold` of the healthy scores: the ``ceil(specificity * n)``-th smallest
    of the ``n`` healthy scores, so ``score > t`` calls at most ``1 - specificity`` of them
    abnormal. ``None`` without healthy scores.
    """
    return quantile_threshold(healthy_scores, _share(specificity, "specificity"))


def _labels(labels, n: int) -> np.ndarray:
    y = _array(labels, "labels")
    if y.size != n:
        raise ValueError(f"{n} scores but {y.size} labels")
    return (y > 0.5).astype(np.float64)


def f1_threshold(scores, labels) -> tuple[float, float] | None:
    """``(t, F1)``: the image-score threshold of the best F1 with ``score > t`` = diseased (label 1).

    Every cut between distinct scores is tried (vectorized over the sorted scores); the
    threshold is the score just below the cut, so ``t`` is one of ``scores`` (for a cut below
    the lowest score, the float just under it). On equal F1 the highest threshold (fewest
    images flagged) wins. ``None`` unless both classes are present.
    """
    s = _array(scores, "scores").astype(np.float64)
    y = _labels(labels, s.size)
    positives = float(y.sum())
    if positives == 0 or positives == y.size:
        return None
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp, fp = np.cumsum(y), np.cumsum(1.0 - y)
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # end of each run of equal scores
    f1 = 2.0 * tp[last] / (tp[last] + fp[last] + positives)
    best = int(np.argmax(f1))
    cut = int(last[best])
    t = s[cut + 1] if cut + 1 < s.size else np.nextafter(s[-1], -np.inf)
    return float(t), float(f1[best])


def _pooled(values) -> np.ndarray:
    """One 1-D array of ``values``: an array, or a sequence of arrays and numbers (pooled)."""
    if values is None:
        return np.zeros(0, dtype=np.float32)
    if isinstance(values, (list, tuple)):
        parts = [_array(v, "healthy_values") for v in values]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return _array(values, "healthy_values")


def calibrate_thresholds(
    scores,
    labels,
    healthy_values=None,
    specificity: float = DEFAULT_SPECIFICITY,
    pixel_quantile: float = DEFAULT_PIXEL_QUANTILE,
) -> dict:
    """The decision thresholds of a validation set, as a plain dictionary (JSON and ``torch.load`` safe).

    Args:
        scores: the image scores of the validation images.
        labels: their labels, 0 healthy, 1 diseased (> 0.5).
        healthy_values: the anomaly-map values of the healthy images, pooled (one array or a
            sequence of arrays, e.g. :func:`artasyn.scoring.mask_values` per image).
        specificity: share of the healthy images to keep normal.
        pixel_quantile: share of the healthy map values to keep unmasked.

    Returns ``image_threshold_specificity`` (``None`` without healthy images), ``specificity``,
    ``val_specificity`` and ``val_sensitivity`` (measured at that threshold; ``None`` without
    the class), ``image_threshold_f1`` and ``f1`` (``None`` unless both classes are present),
    ``pixel_threshold`` (``None`` without healthy values), ``pixel_quantile``, ``n_healthy``,
    ``n_diseased``, ``n_pixels`` (healthy map values pooled).
    """
    s = _array(scores, "scores")
    y = _labels(labels, s.size) > 0.5
    healthy, diseased = s[~y], s[y]
    t_spec = specificity_threshold(healthy, specificity)
    f1 = f1_threshold(s, y)
    values = _pooled(healthy_values)

    def rate(x: np.ndarray, flagged: bool) -> float | None:
        if t_spec is None or x.size == 0:
            return None
        return float(np.mean(x > t_spec) if flagged else np.mean(x <= t_spec))

    return {
        "image_threshold_specificity": t_spec,
        "specificity": float(specificity),
        "val_specificity": rate(healthy, flagged=False),
        "val_sensitivity": rate(diseased, flagged=True),
        "image_threshold_f1": None if f1 is None else f1[0],
        "f1": None if f1 is None else f1[1],
        "pixel_threshold": quantile_threshold(values, pixel_quantile),
        "pixel_quantile": float(pixel_quantile),
        "n_healthy": int(healthy.size),
        "n_diseased": int(diseased.size),
        "n_pixels": int(values.size),
    }


class AnomalyDecisiond(MapTransform):
    """Dictionary transform: a normal / abnormal label and an absolute mask from fixed thresholds.

    Reads ``d[score_key]`` and ``d[map_key]`` (written by :class:`artasyn.scoring.AnomalyScored`)
    and writes ``d[label_key]`` = ``[1.0]`` when ``score > image_threshold`` (abnormal), else
    ``[0.0]``, and ``d[mask_key]`` = :func:`artasyn.scoring.absolute_mask` of the map at
    ``pixel_threshold`` (``1 x H x W``). A threshold that is ``None`` writes nothing (e.g. a
    checkpoint without thresholds), so the item keeps what it had under that key.

    Args:
        image_threshold: image-score threshold (e.g. ``image_threshold_specificity`` of
            :func:`calibrate_thresholds`), or ``None``.
        pixel_threshold: anomaly-map threshold, or ``None``.
        score_key, map_key: the inputs.
        lung_key: the PBTSeg label map, used when ``mask_in_lungs``.
        mask_in_lungs: zero the mask outside the lungs (whole image when none was found).
        label_key, mask_key: the outputs.
    """

    def __init__(
        self,
        image_threshold: float | None = None,
        pixel_threshold: float | None = None,
        score_key: str = "score",
        map_key: str = "anomaly_map",
        lung_key: str | None = "lung",
        mask_in_lungs: bool = False,
        label_key: str = "pred_label",
        mask_key: str = "abs_mask",
    ) -> None:
        super().__init__([score_key, map_key])
        self.image_threshold = None if image_threshold is None else float(image_threshold)
        self.pixel_threshold = None if pixel_threshold is None else float(pixel_threshold)
        self.score_key, self.map_key, self.lung_key = score_key, map_key, lung_key
        self.mask_in_lungs = as_bool(mask_in_lungs, "mask_in_lungs")
        self.label_key, self.mask_key = label_key, mask_key

    def _get(self, d: Mapping, key: str):
        if key not in d:
            raise KeyError(
                f"AnomalyDecisiond needs {key!r} in the item (keys: {sorted(map(str, d))}); run AnomalyScored first"
            )
        return d[key]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.image_threshold is not None:
            score = float(torch.as_tensor(self._get(d, self.score_key)).reshape(-1)[0])
            d[self.label_key] = torch.tensor([1.0 if score > self.image_threshold else 0.0])
        if self.pixel_threshold is not None:
            lung = d.get(self.lung_key) if (self.mask_in_lungs and self.lung_key) else None
            d[self.mask_key] = absolute_mask(self._get(d, self.map_key), self.pixel_threshold, lung)
        return d


AnomalyDecisionD = AnomalyDecisionDict = AnomalyDecisiond
