"""Scoring and decisions (``docs/method.md`` section 4).

- :mod:`artasyn.scoring.maps`: the anomaly map, the image score and the masks per tau
  (:func:`anomaly_map`, :func:`image_score`, :func:`anomaly_masks`, :class:`AnomalyScored`),
  and absolute masks.
- :mod:`artasyn.scoring.thresholds`: decision thresholds calibrated on validation images, a
  normal / abnormal label and an absolute mask (:func:`calibrate_thresholds`,
  :class:`AnomalyDecisiond`; our addition).
- :mod:`artasyn.scoring.inferers`: :class:`SmoothedInputInferer`, the network run on a slightly
  smoothed image (``score_input_sigma``; our addition).

Example::

    >>> import torch
    >>> from artasyn.scoring import anomaly_map, image_score
    >>> x, r = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    >>> x[0, 0, 0, 0] = 1.0
    >>> float(image_score(anomaly_map(x, r))[0])
    0.25
"""

from .inferers import SmoothedInputInferer
from .maps import (
    DEFAULT_TAUS,
    MAP_MODES,
    MIN_THRESHOLD,
    AnomalyScoreD,
    AnomalyScored,
    AnomalyScoreDict,
    absolute_mask,
    anomaly_map,
    anomaly_masks,
    anomaly_scores,
    drop_small_components,
    empty_mask_threshold,
    image_score,
    mask_values,
    min_mask_pixels,
)
from .thresholds import (
    MASK_GATES,
    PIXEL_RULES,
    AnomalyDecisionD,
    AnomalyDecisiond,
    AnomalyDecisionDict,
    calibrate_thresholds,
    dice_threshold,
    f1_threshold,
    quantile_threshold,
    specificity_threshold,
)

__all__ = [
    "DEFAULT_TAUS",
    "MAP_MODES",
    "MASK_GATES",
    "MIN_THRESHOLD",
    "PIXEL_RULES",
    "SmoothedInputInferer",
    "AnomalyDecisionD",
    "AnomalyDecisionDict",
    "AnomalyDecisiond",
    "AnomalyScoreD",
    "AnomalyScoreDict",
    "AnomalyScored",
    "absolute_mask",
    "anomaly_map",
    "anomaly_masks",
    "anomaly_scores",
    "calibrate_thresholds",
    "dice_threshold",
    "drop_small_components",
    "empty_mask_threshold",
    "f1_threshold",
    "image_score",
    "mask_values",
    "min_mask_pixels",
    "quantile_threshold",
    "specificity_threshold",
]
