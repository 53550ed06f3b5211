"""Anomaly scoring of the detector (``docs/method.md`` section 4): map, image score, masks per tau.

The reconstruction network (section 3) returns the healthy version ``r`` of an image ``x``
(both in [0, 1]). From the pair:

- :func:`anomaly_map`: the per-pixel squared error ``(x - r)^2`` (the paper's map; options:
  ``mode="positive"`` keeps only where the input is brighter than its healthy
  reconstruction, ``relu(x - r)^2``, the sign of an opacity; ``mode="signed"`` keeps ``x - r``
  itself, plus ``intensity`` times ``x`` (an opacity the network partly reconstructs is still
  bright); ``sigma`` smooths ``x - r`` with a Gaussian first, which drops the pixel-scale error
  of fine detail);
- :func:`image_score`: the image-level score, the mean of the map (optionally over the lung
  pixels only);
- :func:`anomaly_masks`: one binary mask per relative threshold ``tau``,
  ``|x - r| >= max(min_threshold, tau * m)`` where ``m`` is the largest ``|x - r|`` of *that
  image* (the authors take ``m`` over the whole test batch, which makes a mask depend on the
  batch it was computed in; section 4); with the map's options, ``|x - r|`` is the square
  root of the map;
- :func:`anomaly_scores` computes the three at once, :class:`AnomalyScored` is its dictionary
  transform (an evaluator's post-transform);
- :func:`absolute_mask`: the mask of one absolute threshold on the map, ``amap > t`` (the
  decision thresholds calibrated on healthy validation images, :mod:`artasyn.scoring.thresholds`),
  optionally without its connected components of fewer than ``min_px`` pixels
  (:func:`drop_small_components`; :func:`min_mask_pixels`, the default ``min_px`` of a map
  size); :func:`mask_values`, the map values such a mask is drawn from, and
  :func:`empty_mask_threshold`, the lowest threshold at which it is empty.

Example::

    >>> import torch
    >>> from artasyn.scoring import anomaly_scores
    >>> x, r = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    >>> x[0, 0, 0] = 1.0
    >>> amap, score, masks = anomaly_scores(x, r, taus=(0.2,))
    >>> float(score[0]), int(masks.sum())
    (0.0625, 1)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform
from scipy import ndimage

from ..base import as_bool
from ..constants import DEFAULT_TAUS, MIN_MASK_AREA_FRACTION, MIN_THRESHOLD

__all__ = [
    "DEFAULT_TAUS",
    "MAP_MODES",
    "MIN_THRESHOLD",
    "AnomalyScored",
    "AnomalyScoreD",
    "AnomalyScoreDict",
    "absolute_mask",
    "anomaly_map",
    "anomaly_masks",
    "anomaly_scores",
    "drop_small_components",
    "empty_mask_threshold",
    "image_score",
    "mask_values",
    "min_mask_pixels",
]
#: ``squared``: ``(x - r)^2`` (the paper); ``positive``: ``relu(x - r)^2`` (brightening only);
#: ``signed``: ``x - r`` plus ``intensity * x`` (the error's sign kept, brightness added)
MAP_MODES = ("squared", "positive", "signed")


def _pair(image, recon) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.as_tensor(image).float()
    recon = torch.as_tensor(recon).float().to(image.device)
    if image.shape != recon.shape:
        raise ValueError(f"image and reconstruction shapes differ: {tuple(image.shape)} vs {tuple(recon.shape)}")
    return image, recon


def _inside(lung, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
    """The lung pixels as an ``H x W`` bool map, ``None`` when there is no lung (or no map)."""
    if lung is None:
        return None
    inside = (torch.as_tensor(lung, device=device) > 0).reshape(shape[-2:])
    return inside if bool(inside.any()) else None  # no lung found: the whole image, rather than nothing


def _smooth(diff: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return diff
    from monai.networks.layers import GaussianFilter

    flat = diff.reshape(-1, 1, *diff.shape[-2:])
    return GaussianFilter(2, float(sigma)).to(diff.device)(flat).reshape(diff.shape)


def _checked_options(mode: str, intensity: float) -> float:
    """``intensity`` as a float, after checking the map's ``mode`` and that weight (``ValueError``)."""
    if mode not in MAP_MODES:
        raise ValueError(f"mode must be one of {MAP_MODES}, got {mode!r}")
    intensity = float(intensity)
    if intensity != 0.0 and mode != "signed":
        raise ValueError(f"intensity {intensity} needs mode 'signed' (mode {mode!r} squares the error)")
    if not math.isfinite(intensity) or intensity < 0:
        raise ValueError(f"intensity must be a finite number >= 0, got {intensity}")
    return intensity


def anomaly_map(
    image: torch.Tensor, recon: torch.Tensor, mode: str = "squared", sigma: float = 0.0, intensity: float = 0.0
) -> torch.Tensor:
    """``(image - recon)^2`` per pixel, the shape of ``image`` (channel-first ``C x H x W``).

    ``mode="positive"``: ``relu(image - recon)^2``, only where the input is brighter than its
    reconstruction (an opacity; a reconstruction brighter than the input is not one).
    ``mode="signed"``: ``(image - recon) + intensity * image``, not squared: the error ranks
    every pixel by how much brighter than its reconstruction it is (where ``positive`` ties
    all the darker ones at 0), and ``intensity > 0`` adds the brightness itself, in the
    error's units (the part of an opacity that the network reconstructs as bright as it is
    shows only there). The map's values can be negative; thresholds calibrated on it are on its
    scale. ``sigma > 0``: ``image - recon`` is first smoothed by a Gaussian of that standard
    deviation in pixels (not the intensity). The defaults are the paper's map.

    >>> import torch
    >>> x, r = torch.tensor([[[0.5, 0.25]]]), torch.tensor([[[0.25, 0.5]]])
    >>> anomaly_map(x, r, "positive").tolist(), anomaly_map(x, r, "signed", intensity=0.5).tolist()
    ([[[0.0625, 0.0]]], [[[0.5, -0.125]]])
    """
    intensity = _checked_options(mode, intensity)
    image, recon = _pair(image, recon)
    diff = _smooth(image - recon, sigma)
    if mode == "signed":
        return diff + intensity * image if intensity else diff
    if mode == "positive":
        diff = diff.clamp_min(0)
    return diff * diff


def image_score(amap: torch.Tensor, lung: torch.Tensor | None = None) -> torch.Tensor:
    """The image score: the mean of the anomaly map, shape ``(1,)``.

    With a lung map ``lung`` (``H x W`` or ``1 x H x W``, > 0 inside) the mean is taken over
    the lung pixels; an empty lung map scores the whole image.
    """
    amap = torch.as_tensor(amap).float()
    inside = _inside(lung, amap.shape, amap.device)
    if inside is None:
        return amap.mean().reshape(1)
    return amap.reshape(-1, *amap.shape[-2:]).mean(dim=0)[inside].mean().reshape(1)


def anomaly_masks(
    image: torch.Tensor,
    recon: torch.Tensor,
    taus: Sequence[float] = DEFAULT_TAUS,
    min_threshold: float = MIN_THRESHOLD,
    lung: torch.Tensor | None = None,
    amap: torch.Tensor | None = None,
) -> torch.Tensor:
    """``len(taus) x H x W`` float masks in {0, 1}: ``|image - recon| >= max(min_threshold, tau * m)``.

    ``m`` is the largest ``|image - recon|`` of this image (over all channels). With a lung map
    ``lung`` the masks are zeroed outside the lungs (kept whole when the map is empty). With
    ``amap`` (from :func:`anomaly_map` with its options) the error is ``sqrt(amap)`` instead.
    """
    image, recon = _pair(image, recon)
    err = (image - recon).abs() if amap is None else torch.as_tensor(amap).float().clamp_min(0).sqrt()
    err = err.reshape(-1, *image.shape[-2:]).amax(dim=0)  # H x W over channels
    thr = torch.clamp(torch.as_tensor(list(taus), dtype=err.dtype, device=err.device) * err.max(), min=min_threshold)
    masks = (err[None] >= thr[:, None, None]).float()
    inside = _inside(lung, err.shape, err.device)
    if inside is not None:
        masks = masks * inside[None].float()
    return masks


def _plane_max(amap: torch.Tensor) -> torch.Tensor:
    """``H x W``: the largest value over the channels of a channel-first map."""
    amap = torch.as_tensor(amap).float()
    return amap.reshape(-1, *amap.shape[-2:]).amax(dim=0)


def mask_values(amap: torch.Tensor, lung: torch.Tensor | None = None) -> torch.Tensor:
    """The anomaly-map values a mask of :func:`absolute_mask` is drawn from, as a 1-D tensor.

    The largest value over the channels per pixel; with a lung map ``lung`` only the lung
    pixels (all of them when the map is empty), as :func:`absolute_mask` masks.
    """
    plane = _plane_max(amap)
    inside = _inside(lung, plane.shape, plane.device)
    return plane.reshape(-1) if inside is None else plane[inside]


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, sizes)`` of the 8-connected components of each ``H x W`` plane of a bool array.

    ``sizes[k]`` is the pixel count of component ``k`` (``sizes[0]``, the background, is 0);
    planes of a ``... x H x W`` array are labelled apart (no connection across them).
    """
    if mask.ndim == 2:
        structure = np.ones((3, 3), dtype=bool)
    else:
        structure = np.zeros((3,) * mask.ndim, dtype=bool)
        structure[(1,) * (mask.ndim - 2)] = True  # the 3 x 3 neighbourhood in the plane only
    labels, _ = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels, sizes


def min_mask_pixels(shape, fraction: float = MIN_MASK_AREA_FRACTION) -> int:
    """The smallest mask component kept by default on a map of ``shape`` (``... x H x W``): ``fraction`` of ``H * W``.

    >>> min_mask_pixels((1, 128, 128)), min_mask_pixels((256, 256)), min_mask_pixels((64, 64))
    (32, 128, 8)
    """
    if len(shape) < 2:
        raise ValueError(f"min_mask_pixels expects an H x W or ... x H x W shape, got {tuple(shape)}")
    return int(round(float(fraction) * int(shape[-2]) * int(shape[-1])))


def drop_small_components(mask, min_px: int):
    """``mask`` without its 8-connected components of fewer than ``min_px`` pixels.

    ``mask``: a binary ``H x W`` or ``... x H x W`` array or tensor (> 0 is set; each ``H x W``
    plane is labelled on its own, ``scipy.ndimage.label`` with 8-connectivity); the result has
    its type, shape and dtype. ``min_px <= 1`` returns ``mask`` unchanged.

    >>> import torch
    >>> m = torch.zeros(1, 6, 6)
    >>> m[0, 0, 0] = 1  # one speck
    >>> m[0, 3:5, 3:5] = 1  # a 2 x 2 blob
    >>> m[0, 2, 2] = 1  # touching the blob diagonally: same component
    >>> int(drop_small_components(m, 5).sum()), int(drop_small_components(m, 6).sum())
    (5, 0)
    """
    min_px = int(min_px)
    if min_px <= 1:
        return mask
    t = torch.as_tensor(mask)
    if t.ndim < 2:
        raise ValueError(f"drop_small_components expects an H x W or ... x H x W mask, got shape {tuple(t.shape)}")
    labels, sizes = _components((t > 0).cpu().numpy())
    keep = torch.as_tensor((sizes >= min_px)[labels], device=t.device)
    out = t * keep.to(t.dtype) if t.dtype != torch.bool else t & keep
    return out if isinstance(mask, torch.Tensor) else out.numpy()


def absolute_mask(
    amap: torch.Tensor, threshold: float, lung: torch.Tensor | None = None, min_px: int = 0
) -> torch.Tensor:
    """``1 x H x W`` float mask in {0, 1}: the pixels where the anomaly map exceeds ``threshold``.

    ``amap > threshold`` (strictly: a map of zeros, a perfect reconstruction, gives an empty
    mask whatever the threshold >= 0), over the channels' maximum, on the map's own scale (the
    squared error, or with the options of :func:`anomaly_map`). Unlike :func:`anomaly_masks`
    the threshold does not depend on the image, so a well-reconstructed image gets an empty
    mask. With a lung map ``lung`` the mask is zeroed outside the lungs (kept whole when the
    map is empty). With ``min_px > 1`` its 8-connected components of fewer than ``min_px``
    pixels (of the map, at its resolution) are dropped, after the lungs
    (:func:`drop_small_components`).
    """
    plane = _plane_max(amap)
    mask = (plane > float(threshold)).float()
    inside = _inside(lung, plane.shape, plane.device)
    if inside is not None:
        mask = mask * inside.float()
    return drop_small_components(mask[None], min_px)


def empty_mask_threshold(amap, lung=None, min_px: int = 0) -> float:
    """The lowest threshold ``t`` at which ``absolute_mask(amap, t, lung, min_px)`` is empty.

    One of the map's values (inside the lungs with ``lung``): its largest one when
    ``min_px <= 1``; else the value at which, lowering the threshold, an 8-connected component
    of ``min_px`` pixels first appears (found by bisection over the sorted values, one
    ``scipy.ndimage.label`` a step, ~17 steps at 256 x 256); the smallest value when no
    component ever gets that large. The mask is empty exactly for ``t >=`` this value, so the
    share of a set of images whose mask is not empty at ``t`` is the share of their values
    above ``t`` (the ``image_max`` rule of :func:`artasyn.scoring.thresholds.calibrate_thresholds`).
    ``amap``: ``H x W`` or channel-first (the channels' maximum, as :func:`absolute_mask`).

    >>> import torch
    >>> amap = torch.zeros(1, 6, 6)
    >>> amap[0, 0, 0] = 1.0  # a one-pixel outlier
    >>> amap[0, 3:5, 3:5] = torch.tensor([[0.5, 0.375], [0.25, 0.125]])
    >>> empty_mask_threshold(amap), empty_mask_threshold(amap, min_px=3)
    (1.0, 0.25)
    """
    plane = _plane_max(amap)
    inside = _inside(lung, plane.shape, plane.device)
    values = (plane.reshape(-1) if inside is None else plane[inside]).cpu().numpy()
    if values.size == 0:
        raise ValueError(f"empty_mask_threshold: the anomaly map has no pixel (shape {tuple(plane.shape)})")
    if int(min_px) <= 1:
        return float(values.max())
    p = plane.cpu().numpy()
    ins = None if inside is None else inside.cpu().numpy()
    candidates = np.unique(values)  # ascending; above the largest nothing is masked

    def masked(t: float) -> bool:  # a component of min_px pixels in {amap > t}
        m = p > t if ins is None else (p > t) & ins
        return int(m.sum()) >= min_px and int(_components(m)[1].max()) >= min_px

    lo, hi = 0, candidates.size - 1
    while lo < hi:  # the first candidate that leaves the mask empty (masked() falls with t)
        mid = (lo + hi) // 2
        if masked(candidates[mid]):
            lo = mid + 1
        else:
            hi = mid
    return float(candidates[lo])


def anomaly_scores(
    image: torch.Tensor,
    recon: torch.Tensor,
    taus: Sequence[float] = DEFAULT_TAUS,
    min_threshold: float = MIN_THRESHOLD,
    lung: torch.Tensor | None = None,
    score_in_lungs: bool = False,
    mask_in_lungs: bool = False,
    map_mode: str = "squared",
    map_sigma: float = 0.0,
    map_intensity: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(anomaly_map, score, masks)`` of one channel-first image and its reconstruction.

    See :func:`anomaly_map` (``map_mode``, ``map_sigma``, ``map_intensity``), :func:`image_score`
    (over the lungs when ``score_in_lungs``) and :func:`anomaly_masks` (inside the lungs when
    ``mask_in_lungs``; of a ``signed`` map, its positive part); ``lung`` is the PBTSeg label map
    of the image.
    """
    amap = anomaly_map(image, recon, map_mode, map_sigma, map_intensity)
    score = image_score(amap, lung if score_in_lungs else None)
    plain = map_mode == "squared" and map_sigma <= 0
    masks = anomaly_masks(image, recon, taus, min_threshold, lung if mask_in_lungs else None, None if plain else amap)
    return amap, score, masks


class AnomalyScored(MapTransform):
    """Dictionary transform of :func:`anomaly_scores`: the post-transform of an evaluator.

    Reads ``d[image_key]`` (the input in [0, 1]) and ``d[pred_key]`` (its reconstruction),
    both channel-first, and writes ``d[map_key]`` (:func:`anomaly_map` of ``map_mode``,
    ``map_sigma`` and ``map_intensity``; the squared error by default), ``d[score_key]`` (shape
    ``(1,)``) and ``d[mask_key]`` (``len(taus) x H x W``). When ``gt_key`` is in the item, the
    reference lesion mask and ``d[has_mask_key]`` are copied to ``d["gt_mask"]`` and
    ``d["gt_available"]``: a MONAI evaluator keeps only the keys that are new to the batch in
    its output, which is what its metric handlers read.

    Args:
        image_key, pred_key: the input and its reconstruction.
        taus: relative thresholds (paper default 0.2; Table S2 sweeps 0.2, 0.4, 0.6, 0.8).
        min_threshold: absolute floor of the threshold (0.03).
        lung_key: the PBTSeg label map, used when ``score_in_lungs`` / ``mask_in_lungs``.
        score_in_lungs, mask_in_lungs: score / mask inside the lungs only.
        map_mode, map_sigma, map_intensity: the anomaly map's options (:func:`anomaly_map`'s
            ``mode``, ``sigma``, ``intensity``; default the paper's).
        map_key, score_key, mask_key: output keys.
        gt_key, has_mask_key: the reference lesion mask and its availability flag (``None``: none).
    """

    def __init__(
        self,
        image_key: str = "image",
        pred_key: str = "pred",
        taus: Sequence[float] = DEFAULT_TAUS,
        min_threshold: float = MIN_THRESHOLD,
        lung_key: str | None = "lung",
        score_in_lungs: bool = False,
        mask_in_lungs: bool = False,
        map_key: str = "anomaly_map",
        score_key: str = "score",
        mask_key: str = "pred_mask",
        gt_key: str | None = "mask",
        has_mask_key: str | None = "has_mask",
        map_mode: str = "squared",
        map_sigma: float = 0.0,
        map_intensity: float = 0.0,
    ) -> None:
        super().__init__([image_key, pred_key])
        self.image_key, self.pred_key, self.lung_key = image_key, pred_key, lung_key
        self.taus = tuple(float(t) for t in taus)
        self.min_threshold = float(min_threshold)
        self.score_in_lungs = as_bool(score_in_lungs, "score_in_lungs")
        self.mask_in_lungs = as_bool(mask_in_lungs, "mask_in_lungs")
        self.map_key, self.score_key, self.mask_key = map_key, score_key, mask_key
        self.gt_key, self.has_mask_key = gt_key, has_mask_key
        if map_mode not in MAP_MODES:
            raise ValueError(f"map_mode must be one of {MAP_MODES}, got {map_mode!r}")
        self.map_mode, self.map_sigma = map_mode, float(map_sigma)
        self.map_intensity = _checked_options(map_mode, map_intensity)  # at construction, not at the first image

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        lung = d.get(self.lung_key) if self.lung_key else None
        amap, score, masks = anomaly_scores(
            d[self.image_key],
            d[self.pred_key],
            self.taus,
            self.min_threshold,
            lung,
            self.score_in_lungs,
            self.mask_in_lungs,
            self.map_mode,
            self.map_sigma,
            self.map_intensity,
        )
        d[self.map_key], d[self.score_key], d[self.mask_key] = amap, score, masks
        if self.gt_key and self.gt_key in d:
            d["gt_mask"] = d[self.gt_key]
            has = d.get(self.has_mask_key, 1.0) if self.has_mask_key else 1.0
            d["gt_available"] = torch.as_tensor(has, dtype=torch.float32).reshape(-1)[:1]
        return d


AnomalyScoreD = AnomalyScoreDict = AnomalyScored
