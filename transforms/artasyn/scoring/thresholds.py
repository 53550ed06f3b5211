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
  exceed (the inverted-CDF quantile); the pixel threshold is one on the healthy images' anomaly
  maps, under one of two rules (:data:`PIXEL_RULES`): ``pooled``, the quantile of all their
  map values (at most ``1 - q`` of the healthy *pixels* masked), or ``image_max`` (the
  default), the quantile of each image's largest value still masked (at most ``1 - q`` of the
  healthy *images* with a non-empty mask; :func:`artasyn.scoring.empty_mask_threshold`);
- optionally a mask drops its 8-connected components of fewer than ``min_mask_px`` pixels
  (:func:`artasyn.scoring.drop_small_components`): the specks a healthy image leaves above a
  pooled threshold; ``image_max`` then takes the largest value that would still be masked;
- a third pixel rule, ``dice`` (:func:`dice_threshold`), sets the threshold on the *diseased*
  validation images that carry a lesion mask: the one of best micro Dice against those masks,
  the masks drawn as they will be (gate, lungs, ``min_mask_px``); without such images it falls
  back to ``image_max``, and says so in ``notes``;
- optionally masks are gated by the image decision (``mask_gate="image"``, :data:`MASK_GATES`):
  a mask is drawn only on an image whose score passes the image threshold at ``specificity``,
  so a healthy image the detector calls normal gets no mask whatever its map;
- beside the thresholds, ``healthy_peak``: the same quantile of each healthy image's largest map
  value (the ``image_max`` threshold, whatever the rule), a scale on which a map can be drawn
  the same way for every image (``scripts.inference.overlay_heatmap``);
- :func:`calibrate_thresholds` computes all of them; :class:`AnomalyDecisiond` applies them to
  an item: ``label = score > image_threshold`` (1 abnormal, 0 normal) and
  ``mask = anomaly_map > pixel_threshold`` without its components under ``min_mask_px``
  (:func:`artasyn.scoring.absolute_mask`), empty when a gate is given and ``score`` does not
  pass it.

Every rule is a strict ``>``: a value equal to its threshold is normal, so each threshold is a
value seen on validation (the highest one still called normal), and a perfect reconstruction
(a map of zeros) is never masked. numpy and scipy only (no scikit-learn).

Example (20 healthy scores 1..20, three diseased; one healthy map of five values)::

    >>> from artasyn.scoring.thresholds import calibrate_thresholds
    >>> t = calibrate_thresholds(
    ...     scores=[*range(1, 21), 18.5, 25, 30],
    ...     labels=[0] * 20 + [1] * 3,
    ...     healthy_maps=[[0.0, 0.0, 0.125, 0.25, 0.5]],
    ...     specificity=0.95,
    ...     pixel_quantile=0.75,
    ...     pixel_rule="pooled",
    ... )
    >>> t["image_threshold_specificity"], t["val_specificity"], round(t["val_sensitivity"], 3)
    (19.0, 0.95, 0.667)
    >>> t["image_threshold_f1"], t["f1"], t["pixel_threshold"]
    (20.0, 0.8, 0.25)

The same healthy map under the default rule, ``image_max``: its largest value, so it is left empty::

    >>> calibrate_thresholds([1.0], [0], [[0.0, 0.0, 0.125, 0.25, 0.5]])["pixel_threshold"]
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform

from ..base import as_bool
from ..constants import (
    DEFAULT_MASK_GATE,
    DEFAULT_PIXEL_QUANTILE,
    DEFAULT_PIXEL_RULE,
    DEFAULT_SPECIFICITY,
    DICE_RULE_CANDIDATES,
)
from .maps import _components, _plane_max, absolute_mask, empty_mask_threshold, mask_values, min_mask_pixels

__all__ = [
    "AnomalyDecisionD",
    "AnomalyDecisionDict",
    "AnomalyDecisiond",
    "MASK_GATES",
    "PIXEL_RULES",
    "calibrate_thresholds",
    "dice_threshold",
    "f1_threshold",
    "quantile_threshold",
    "specificity_threshold",
]

#: how the pixel threshold is set: on the healthy validation maps (``pooled``, ``image_max``) or on
#: the diseased ones with lesion masks (``dice``); see :func:`calibrate_thresholds`
PIXEL_RULES = ("pooled", "image_max", "dice")
#: which images get a mask: all (``none``) or those whose score passes the specificity threshold
MASK_GATES = ("none", "image")


def _share(q: float, name: str) -> float:
    q = float(q)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {q}")
    return q


def _array(values, name: str, flat: bool = True) -> np.ndarray:
    """``values`` as a float numpy array (1-D when ``flat``), checked finite."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    v = np.asarray(values)
    v = v.astype(np.float64) if not np.issubdtype(v.dtype, np.floating) else v
    v = v.reshape(-1) if flat else v
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


def _min_px(min_mask_px: int | None, shape, name: str) -> int:
    """``min_mask_px`` as an int: ``None`` is :func:`artasyn.scoring.min_mask_pixels` of ``shape`` (0 without one)."""
    if min_mask_px is None:
        return 0 if shape is None or len(shape) < 2 else min_mask_pixels(shape)
    if int(min_mask_px) < 0:
        raise ValueError(f"{name}: min_mask_px must be >= 0, got {min_mask_px}")
    return int(min_mask_px)


def _healthy_maps(maps, lungs, min_mask_px: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(pooled values, per-image empty-mask thresholds, min_mask_px)`` of the healthy images' maps."""
    if maps is None:
        maps = []
    if isinstance(maps, (np.ndarray, torch.Tensor)) and np.ndim(maps) <= 1:
        maps = [maps]  # one image's values
    lungs = [None] * len(maps) if lungs is None else list(lungs)
    if len(lungs) != len(maps):
        raise ValueError(f"{len(maps)} healthy maps but {len(lungs)} lung maps")
    maps = [torch.as_tensor(_array(m, f"healthy_maps[{i}]", flat=False)) for i, m in enumerate(maps)]
    min_mask_px = _min_px(min_mask_px, maps[0].shape if maps else None, "calibrate_thresholds")
    values, empty_at = [], []
    for i, (m, lung) in enumerate(zip(maps, lungs)):
        if m.numel() == 0:
            continue
        if m.ndim < 2:
            if min_mask_px > 1:
                raise ValueError(
                    f"min_mask_px {min_mask_px} needs the healthy maps as H x W arrays (connected components), "
                    f"got healthy_maps[{i}] with shape {tuple(m.shape)}"
                )
            if lung is not None:
                raise ValueError(f"healthy_lungs[{i}] given for a map of shape {tuple(m.shape)}, not H x W")
            m = m[None]
        values.append(mask_values(m, lung).numpy())
        empty_at.append(empty_mask_threshold(m, lung, min_mask_px))
    pooled = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    return pooled, np.asarray(empty_at, dtype=np.float64), min_mask_px


def _planes(maps, name: str) -> list[np.ndarray]:
    """Each map as an ``H x W`` float array (the channels' maximum)."""
    out = []
    for i, m in enumerate(maps):
        m = torch.as_tensor(_array(m, f"{name}[{i}]", flat=False))
        if m.ndim < 2:
            raise ValueError(f"{name}[{i}]: expected an H x W or channel-first map, got shape {tuple(m.shape)}")
        out.append(_plane_max(m).numpy())
    return out


def dice_threshold(
    maps,
    lesions,
    lungs=None,
    min_mask_px: int = 0,
    drawn=None,
    candidates: int = DICE_RULE_CANDIDATES,
) -> tuple[float, float] | None:
    """``(t, micro Dice)``: the pixel threshold whose masks best match the lesion masks, pooled over images.

    The mask of image ``i`` at ``t`` is drawn as :func:`artasyn.scoring.absolute_mask` draws it:
    ``map > t`` inside ``lungs[i]`` (the whole image when that lung map is ``None`` or empty),
    without its 8-connected components of fewer than ``min_mask_px`` pixels; an image with
    ``drawn[i]`` false gets no mask (its lesion pixels are all missed: the gate of
    :func:`calibrate_thresholds`). Micro Dice pools ``TP, FP, FN`` over the images. The
    thresholds tried are ``candidates`` quantiles (inverted CDF, 0 to ``1 - 1/candidates``) of
    the map values the masks are drawn from, over the drawn images (all of them when none is
    drawn); on equal Dice the highest threshold wins. ``None`` when the masks hold no lesion pixel.

    Args:
        maps: one ``H x W`` (or channel-first) anomaly map per image.
        lesions: the images' lesion masks, same planes (> 0.5 is lesion).
        lungs: one lung map (or ``None``) per image, > 0 inside.
        min_mask_px: the smallest component kept (0 or 1: all).
        drawn: one bool per image (default all true).
        candidates: how many thresholds are tried (>= 1).

    >>> import numpy as np
    >>> amap = np.zeros((8, 8))
    >>> amap[2:6, 2:6] = 0.5
    >>> amap[0, 0] = 0.9  # a lesion and a brighter speck
    >>> lesion = np.zeros((8, 8))
    >>> lesion[2:6, 2:6] = 1
    >>> dice_threshold([amap], [lesion])  # the speck is masked at every threshold below 0.9
    (0.0, 0.9696969696969697)
    >>> dice_threshold([amap], [lesion], min_mask_px=2)  # without specks of one pixel
    (0.0, 1.0)
    """
    planes = _planes(maps, "dice_threshold maps")
    gts = [np.asarray(g) > 0.5 for g in _planes(lesions, "dice_threshold lesions")]
    n = len(planes)
    if len(gts) != n:
        raise ValueError(f"dice_threshold: {n} maps but {len(gts)} lesion masks")
    for i, (p, g) in enumerate(zip(planes, gts)):
        if p.shape != g.shape:
            raise ValueError(f"dice_threshold: map {i} has shape {p.shape}, its lesion mask {g.shape}")
    lungs = [None] * n if lungs is None else list(lungs)
    drawn = np.ones(n, bool) if drawn is None else np.asarray(drawn, bool).reshape(-1)
    if len(lungs) != n or drawn.size != n:
        raise ValueError(f"dice_threshold: {n} maps but {len(lungs)} lung maps and {drawn.size} gate flags")
    if int(candidates) < 1:
        raise ValueError(f"dice_threshold: candidates must be >= 1, got {candidates}")
    lesion_px = int(sum(int(g.sum()) for g in gts))
    if lesion_px == 0:
        return None
    inside = []
    for p, lung in zip(planes, lungs):
        ins = None if lung is None else np.asarray(lung).reshape(p.shape) > 0
        inside.append(np.ones(p.shape, bool) if ins is None or not ins.any() else ins)
    use = [i for i in range(n) if drawn[i]] or list(range(n))
    values = np.concatenate([planes[i][inside[i]] for i in use])
    qs = np.arange(int(candidates)) / int(candidates)
    cands = np.unique(np.quantile(values, qs, method="inverted_cdf"))
    min_px = int(min_mask_px)
    missed = sum(int(gts[i].sum()) for i in range(n) if not drawn[i])  # lesions of images left unmasked
    idx = [i for i in range(n) if drawn[i]]
    if not idx:
        return float(cands[-1]), 0.0
    shapes = {planes[i].shape for i in idx}
    stackable = len(shapes) == 1
    best_t, best_d = float(cands[-1]), -1.0
    for t in cands:
        tp = fp = fn = 0
        groups = [idx] if stackable else [[i] for i in idx]
        for g in groups:
            m = np.stack([(planes[i] > t) & inside[i] for i in g])
            if min_px > 1 and m.any():
                labels, sizes = _components(m)
                m = (sizes >= min_px)[labels]
            gt = np.stack([gts[i] for i in g])
            k = int(np.count_nonzero(m & gt))
            tp, fp, fn = tp + k, fp + int(np.count_nonzero(m)) - k, fn + int(gt.sum()) - k
        d = 2.0 * tp / (2.0 * tp + fp + fn + missed)
        if d >= best_d:  # ascending candidates: on a tie the higher threshold wins
            best_t, best_d = float(t), float(d)
    return best_t, best_d


def calibrate_thresholds(
    scores,
    labels,
    healthy_maps=None,
    specificity: float = DEFAULT_SPECIFICITY,
    pixel_quantile: float = DEFAULT_PIXEL_QUANTILE,
    pixel_rule: str = DEFAULT_PIXEL_RULE,
    min_mask_px: int | None = None,
    healthy_lungs=None,
    mask_gate: str = DEFAULT_MASK_GATE,
    lesion_maps=None,
    lesion_masks=None,
    lesion_scores=None,
    lesion_lungs=None,
) -> dict:
    """The decision thresholds of a validation set, as a plain dictionary (JSON and ``torch.load`` safe).

    Args:
        scores: the image scores of the validation images.
        labels: their labels, 0 healthy, 1 diseased (> 0.5).
        healthy_maps: the anomaly maps of the healthy images, one array per image: ``H x W``
            (or channel-first, the channels' maximum), or 1-D values when ``min_mask_px <= 1``
            (a 1-D array alone is one image).
        specificity: share of the healthy images to keep normal.
        pixel_quantile: ``q`` of the pixel threshold.
        pixel_rule: ``"pooled"``: the quantile ``q`` of all the healthy map values (at most
            ``1 - q`` of the healthy pixels above it); ``"image_max"``: the quantile ``q`` of
            each healthy image's :func:`artasyn.scoring.empty_mask_threshold` (its largest
            value, or with ``min_mask_px`` the largest one still masked): at most ``1 - q`` of
            the healthy images get a non-empty mask.
        min_mask_px: masks drop their 8-connected components of fewer pixels (0 or 1: none;
            ``None``: :func:`artasyn.scoring.min_mask_pixels` of the first map's size, 0 for
            1-D values); ``val_healthy_mask_rate`` counts the masks after it, under either rule.
        healthy_lungs: one PBTSeg lung map (or ``None``) per healthy map: only the lung pixels
            count, as :func:`artasyn.scoring.absolute_mask` masks with ``mask_in_lungs``.
        mask_gate: ``"none"`` (every image gets its mask) or ``"image"`` (only an image whose
            score is above ``image_threshold_specificity`` gets one; the healthy maps must then
            be the healthy scores' images, in order). Without an image threshold (no healthy
            image) the gate cannot be applied: ``mask_gate`` is then recorded ``"none"``, with
            a note.
        lesion_maps, lesion_masks, lesion_scores, lesion_lungs: the diseased validation images
            that carry a lesion mask: their anomaly maps, masks, image scores (for the gate)
            and lung maps (or ``None``); used by ``pixel_rule="dice"`` (:func:`dice_threshold`).
            Without any, that rule falls back to ``image_max`` (recorded in ``pixel_rule``,
            with a note; ``pixel_rule_requested`` keeps ``"dice"``).

    Returns ``image_threshold_specificity`` (``None`` without healthy images), ``specificity``,
    ``val_specificity`` and ``val_sensitivity`` (measured at that threshold; ``None`` without
    the class), ``image_threshold_f1`` and ``f1`` (``None`` unless both classes are present),
    ``pixel_threshold`` (``None`` without healthy maps), ``pixel_quantile``, ``pixel_rule``,
    ``min_mask_px`` (the pixels, as applied), ``val_healthy_mask_rate`` (share of the healthy validation images whose
    mask is not empty at ``pixel_threshold``, after the gate), ``n_healthy``, ``n_diseased``, ``n_pixels``
    (healthy map values pooled), ``mask_gate`` (as applied), ``pixel_rule_requested``,
    ``val_lesion_dice`` (micro Dice of the masks on the lesion images at ``pixel_threshold``,
    ``None`` without them), ``n_lesion_images``, ``healthy_peak`` (the quantile ``q`` of each
    healthy image's :func:`artasyn.scoring.empty_mask_threshold`, whatever the rule: the level
    a healthy validation image's map reaches, for drawing maps on one scale; ``None`` without
    healthy maps) and ``notes`` (why a setting fell back).
    """
    if pixel_rule not in PIXEL_RULES:
        raise ValueError(f"pixel_rule must be one of {PIXEL_RULES}, got {pixel_rule!r}")
    if mask_gate not in MASK_GATES:
        raise ValueError(f"mask_gate must be one of {MASK_GATES}, got {mask_gate!r}")
    s = _array(scores, "scores")
    y = _labels(labels, s.size) > 0.5
    healthy, diseased = s[~y], s[y]
    t_spec = specificity_threshold(healthy, specificity)
    f1 = f1_threshold(s, y)
    min_px_given = min_mask_px
    values, empty_at, min_mask_px = _healthy_maps(healthy_maps, healthy_lungs, min_mask_px)
    notes: list[str] = []
    if mask_gate == "image" and t_spec is None:
        notes.append("mask_gate 'image' needs healthy validation images (an image threshold): masks are not gated")
        mask_gate = "none"
    if mask_gate == "image" and empty_at.size != healthy.size:
        raise ValueError(
            f"mask_gate 'image': {healthy.size} healthy scores but {empty_at.size} healthy maps "
            "(one per image, in order)"
        )

    def gate(x: np.ndarray) -> np.ndarray:
        return x > t_spec if mask_gate == "image" else np.ones(x.size, bool)

    lesion_maps = [] if lesion_maps is None else list(lesion_maps)
    lesion_masks = [] if lesion_masks is None else list(lesion_masks)
    if len(lesion_masks) != len(lesion_maps):
        raise ValueError(f"{len(lesion_maps)} lesion maps but {len(lesion_masks)} lesion masks")
    lesion_scores = _array([] if lesion_scores is None else lesion_scores, "lesion_scores")
    if mask_gate == "image" and lesion_scores.size != len(lesion_maps):
        raise ValueError(f"mask_gate 'image': {len(lesion_maps)} lesion maps but {lesion_scores.size} lesion scores")
    drawn = gate(lesion_scores) if mask_gate == "image" else np.ones(len(lesion_maps), bool)
    if min_px_given is None and values.size == 0 and lesion_maps:  # the default of the lesion maps' size
        min_mask_px = _min_px(None, np.shape(lesion_maps[0]), "calibrate_thresholds")
    requested, dice = pixel_rule, None
    if pixel_rule == "dice":
        dice = dice_threshold(lesion_maps, lesion_masks, lesion_lungs, min_mask_px, drawn) if lesion_maps else None
        if dice is None:
            pixel_rule = "image_max"
            notes.append(
                f"pixel_rule 'dice' needs diseased validation images with lesion masks ({len(lesion_maps)} given, "
                f"none with a lesion pixel): the pixel threshold is set by rule {pixel_rule!r} on the healthy maps"
            )
    if dice is not None:
        t_pixel = dice[0]
    else:
        t_pixel = quantile_threshold(values if pixel_rule == "pooled" else empty_at, pixel_quantile)
    if lesion_maps and t_pixel is not None:
        val_lesion_dice = _lesion_dice(lesion_maps, lesion_masks, lesion_lungs, min_mask_px, drawn, t_pixel)
    else:
        val_lesion_dice = None

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
        "pixel_threshold": t_pixel,
        "pixel_quantile": float(pixel_quantile),
        "pixel_rule": pixel_rule,
        "min_mask_px": min_mask_px,
        "val_healthy_mask_rate": None
        if t_pixel is None or empty_at.size == 0
        else float(np.mean((empty_at > t_pixel) & (gate(healthy) if mask_gate == "image" else True))),
        "n_healthy": int(healthy.size),
        "n_diseased": int(diseased.size),
        "n_pixels": int(values.size),
        "mask_gate": mask_gate,
        "pixel_rule_requested": requested,
        "val_lesion_dice": val_lesion_dice,
        "n_lesion_images": len(lesion_maps),
        "healthy_peak": quantile_threshold(empty_at, pixel_quantile),
        "notes": notes,
    }


def _lesion_dice(maps, lesions, lungs, min_px: int, drawn, t: float) -> float | None:
    """Micro Dice of the masks at ``t``, drawn by :func:`artasyn.scoring.absolute_mask`; ``None`` when all are empty."""
    planes = _planes(maps, "lesion maps")
    lungs = [None] * len(planes) if lungs is None else list(lungs)
    tp = fp = fn = 0
    for p, g, lung, d in zip(planes, lesions, lungs, drawn):
        g = np.asarray(g).reshape(p.shape) > 0.5
        m = absolute_mask(torch.from_numpy(p), t, None if lung is None else torch.as_tensor(lung), min_px)[0].numpy()
        m = (m > 0.5) & bool(d)
        k = int(np.count_nonzero(m & g))
        tp, fp, fn = tp + k, fp + int(m.sum()) - k, fn + int(g.sum()) - k
    return float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else None


class AnomalyDecisiond(MapTransform):
    """Dictionary transform: a normal / abnormal label and an absolute mask from fixed thresholds.

    Reads ``d[score_key]`` and ``d[map_key]`` (written by :class:`artasyn.scoring.AnomalyScored`)
    and writes ``d[label_key]`` = ``[1.0]`` when ``score > image_threshold`` (abnormal), else
    ``[0.0]``, and ``d[mask_key]`` = :func:`artasyn.scoring.absolute_mask` of the map at
    ``pixel_threshold`` without its 8-connected components of fewer than ``min_mask_px``
    pixels (``1 x H x W``). A threshold that is ``None`` writes nothing (e.g. a checkpoint
    without thresholds), so the item keeps what it had under that key.

    Args:
        image_threshold: image-score threshold (e.g. ``image_threshold_specificity`` of
            :func:`calibrate_thresholds`), or ``None``.
        pixel_threshold: anomaly-map threshold, or ``None``.
        min_mask_px: the smallest component kept in the mask, in map pixels (0: all; the
            ``min_mask_px`` the thresholds were calibrated with; ``None``:
            :func:`artasyn.scoring.min_mask_pixels` of each map's size).
        score_key, map_key: the inputs.
        lung_key: the PBTSeg label map, used when ``mask_in_lungs``.
        mask_in_lungs: zero the mask outside the lungs (whole image when none was found).
        label_key, mask_key: the outputs.
        mask_gate_threshold: ``None`` (default: every image gets its mask) or an image-score
            threshold: an image whose score is not above it gets an empty mask (the
            ``mask_gate="image"`` of :func:`calibrate_thresholds`, with its
            ``image_threshold_specificity``).
    """

    def __init__(
        self,
        image_threshold: float | None = None,
        pixel_threshold: float | None = None,
        min_mask_px: int | None = None,
        score_key: str = "score",
        map_key: str = "anomaly_map",
        lung_key: str | None = "lung",
        mask_in_lungs: bool = False,
        label_key: str = "pred_label",
        mask_key: str = "abs_mask",
        mask_gate_threshold: float | None = None,
    ) -> None:
        super().__init__([score_key, map_key])
        self.image_threshold = None if image_threshold is None else float(image_threshold)
        self.pixel_threshold = None if pixel_threshold is None else float(pixel_threshold)
        self.min_mask_px = None if min_mask_px is None else _min_px(min_mask_px, None, "AnomalyDecisiond")
        self.score_key, self.map_key, self.lung_key = score_key, map_key, lung_key
        self.mask_in_lungs = as_bool(mask_in_lungs, "mask_in_lungs")
        self.label_key, self.mask_key = label_key, mask_key
        self.mask_gate_threshold = None if mask_gate_threshold is None else float(mask_gate_threshold)

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
            amap = self._get(d, self.map_key)
            min_px = _min_px(self.min_mask_px, np.shape(amap), "AnomalyDecisiond")
            mask = absolute_mask(amap, self.pixel_threshold, lung, min_px)
            if self.mask_gate_threshold is not None:
                score = float(torch.as_tensor(self._get(d, self.score_key)).reshape(-1)[0])
                mask = mask if score > self.mask_gate_threshold else torch.zeros_like(mask)
            d[self.mask_key] = mask
        return d


AnomalyDecisionD = AnomalyDecisionDict = AnomalyDecisiond
