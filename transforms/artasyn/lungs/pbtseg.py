"""PBTSeg: progressive binary thresholding lung segmentation as MONAI transforms (``docs/method.md`` section 1).

Unsupervised, no weights: the image is thresholded at ``t = 50, 55, ..., 160``; at each
threshold the 8-connected dark components with a plausible lung shape are kept, and each side
keeps the largest plausible component seen so far. The result is a label map
(0 background, 1 right lung = image-left, 2 left lung = image-right).

The thresholding itself is :func:`artasyn.lungs.paper.pbtseg_lungs` (the authors' algorithm,
label maps identical to theirs) or, with ``mode="robust"``,
:func:`artasyn.lungs.robust.robust_lungs`; :class:`PBTSeg` resizes to the working size
(:mod:`artasyn.lungs.resample`), runs one of them and returns the label map at the input size.

Example::

    >>> import numpy as np
    >>> from artasyn import PBTSeg
    >>> img = np.full((1, 256, 256), 200, np.uint8)      # bright body
    >>> img[0, 60:180, 50:100] = 30                      # dark image-left lung field
    >>> img[0, 60:180, 156:206] = 30                     # dark image-right lung field
    >>> lung = PBTSeg()(img)
    >>> lung.shape, lung.dtype, sorted(np.unique(lung).tolist())
    ((1, 256, 256), dtype('uint8'), [0, 1, 2])
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.data.meta_tensor import MetaTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.misc import ensure_tuple, ensure_tuple_rep
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

from ..base import source_name
from ..constants import (
    CENTROID_BAND_DIVISOR,
    EARLY_STOP_THRESHOLD,
    MAX_BORDER_FRACTION,
    MAX_LUNG_AREA_FRACTION,
    MIN_LUNG_AREA_FRACTION,
    MIN_LUNG_SOLIDITY,
    PBTSEG_THRESHOLDS,
    REFERENCE_SIZE,
    SIDE_DIVISOR,
)
from .paper import brighten_border, pbtseg_lungs
from .resample import resize_bilinear_uint8, resize_nearest
from .robust import robust_lungs

__all__ = [
    "PBTSEG_MODES",
    "PBTSeg",
    "PBTSegd",
    "PBTSegD",
    "PBTSegDict",
    "brighten_border",
    "pbtseg_lungs",
    "resize_bilinear_uint8",
    "resize_nearest",
]

logger = logging.getLogger(__name__)

#: the paper's thresholds: 50, 55, ..., 160 (inclusive); the name this module has always exported
PAPER_THRESHOLDS = PBTSEG_THRESHOLDS

#: metadata keys written into the output MetaTensor's ``meta``
META_RIGHT_FOUND = "pbtseg_right_lung_found"
META_LEFT_FOUND = "pbtseg_left_lung_found"
META_MODE = "pbtseg_mode"
#: robust mode: how each lung was obtained (``artasyn.lungs.robust.LUNG_SOURCES``)
META_RIGHT_SOURCE = "pbtseg_right_lung_source"
META_LEFT_SOURCE = "pbtseg_left_lung_source"

#: ``PBTSeg(mode=...)``: the authors' algorithm, or the robust one of :mod:`artasyn.lungs.robust`
PBTSEG_MODES = ("paper", "robust")

# --------------------------------------------------------------------------------------------
# MONAI transforms
# --------------------------------------------------------------------------------------------


class PBTSeg(Transform):
    """PBTSeg lung segmentation of a chest X-ray (``docs/method.md`` section 1).

    Input: a ``1 x H x W`` image (numpy array, torch tensor or MetaTensor), rows the vertical
    axis (load PNGs with ``LoadImage(reverse_indexing=False)``, ``docs/method.md`` section 7),
    grey values in 0..255 (use :class:`artasyn.intensity.ScaleTo8Bit` for other ranges).
    Values are rounded to integers and clipped to [0, 255] (uint8, as the authors read images).

    The image is resized to ``spatial_size`` (default 256 x 256, the paper's) with
    :func:`resize_bilinear_uint8` (OpenCV ``INTER_LINEAR`` semantics: half-pixel centres, no
    antialiasing), optionally border-brightened (:func:`brighten_border`), segmented there, and
    the label map is brought back to ``H x W`` with :func:`resize_nearest`. With
    ``spatial_size=None`` it runs at the native size; every size-dependent constant is a
    fraction of the image (areas of ``H * W``, sixths and thirds), so 256 x 256 gives the same
    result either way.

    ``mode="robust"`` replaces the segmentation at the working size by
    :func:`artasyn.lungs.robust.robust_lungs` (exposure normalisation, per-side fallbacks,
    lung-field envelopes that take bright opacities in); the output format is the same, both
    lungs are always present, and a MetaTensor also gets ``meta["pbtseg_right_lung_source"]``
    and ``meta["pbtseg_left_lung_source"]`` (``"threshold"``, ``"mirror"`` or ``"template"``).

    Output: label map ``1 x H x W``, 0 background, 1 right lung (image-left), 2 left lung
    (image-right; wins where the two overlap), of type ``dtype`` (default uint8 /
    ``torch.uint8``), same container as the input. A MetaTensor keeps its metadata and gets
    ``meta["pbtseg_right_lung_found"]`` and ``meta["pbtseg_left_lung_found"]`` (bool).
    When no lung is found the map is empty and a warning is logged (once per source file,
    named from ``meta["filename_or_obj"]`` when known); a constant image is such a case.

    Raises:
        ValueError: the image is not ``1 x H x W``, or holds NaN / infinite values.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        spatial_size: int | Sequence[int] | None = REFERENCE_SIZE,
        brighten_border: bool = False,
        thresholds: Sequence[float] = PBTSEG_THRESHOLDS,
        min_area_fraction: float = MIN_LUNG_AREA_FRACTION,
        max_area_fraction: float = MAX_LUNG_AREA_FRACTION,
        min_solidity: float = MIN_LUNG_SOLIDITY,
        max_border_fraction: float = MAX_BORDER_FRACTION,
        centroid_band_divisor: int = CENTROID_BAND_DIVISOR,
        side_divisor: int = SIDE_DIVISOR,
        early_stop_threshold: float = EARLY_STOP_THRESHOLD,
        dtype: DtypeLike | torch.dtype = np.uint8,
        mode: str = "paper",
        robust_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """
        Args:
            spatial_size: working size, an int (square) or ``(h, w)``; ``None``: native size.
            brighten_border: apply :func:`brighten_border` at the working size first.
            thresholds: grey-level thresholds, in increasing order (paper: 50, 55, ..., 160).
            min_area_fraction, max_area_fraction: open range of a lung's area, as fractions of
                the working image (paper: 2000 and 10000 of 256 x 256 pixels).
            min_solidity: a lung's area over its convex-hull area must exceed this (0.6).
            max_border_fraction: limit of the convex hull's border-touch fraction (0.15).
            centroid_band_divisor: the centroid must lie strictly inside the central band
                between ``1/d`` and ``1 - 1/d`` of each axis (paper: sixths).
            side_divisor: side split of the bounding boxes (paper: thirds of the width).
            early_stop_threshold: stop at the first threshold above this that keeps no
                component (paper: 130).
            dtype: dtype of the label map.
            mode: ``"paper"`` (default): the authors' PBTSeg, label maps identical to theirs;
                ``"robust"``: :func:`artasyn.lungs.robust.robust_lungs` (exposure
                normalisation, per-side fallbacks, lung-field envelopes; both lungs always
                present). The threshold and shape arguments above apply to ``"paper"`` only.
            robust_kwargs: arguments of :func:`~artasyn.lungs.robust.robust_lungs`
                (``"robust"`` only).
        """
        if mode not in PBTSEG_MODES:
            raise ValueError(f"PBTSeg mode must be one of {PBTSEG_MODES}, got {mode!r}")
        if mode == "robust" and brighten_border:
            raise ValueError("PBTSeg(mode='robust') brightens the border itself: leave brighten_border=False")
        self.mode = mode
        self.robust_kwargs = dict(robust_kwargs or {})
        if spatial_size is not None:
            spatial_size = tuple(int(s) for s in ensure_tuple_rep(spatial_size, 2))
        self.spatial_size = spatial_size
        self.brighten_border = brighten_border
        self.params = {
            "thresholds": tuple(thresholds),
            "min_area_fraction": min_area_fraction,
            "max_area_fraction": max_area_fraction,
            "min_solidity": min_solidity,
            "max_border_fraction": max_border_fraction,
            "centroid_band_divisor": centroid_band_divisor,
            "side_divisor": side_divisor,
            "early_stop_threshold": early_stop_threshold,
        }
        self.dtype = dtype
        self._warned: set[str] = set()

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Segment the lungs of ``img`` (``1 x H x W``); returns the label map."""
        return self.segment(img)[0]

    def segment(self, img: NdarrayOrTensor, key: Hashable | None = None) -> tuple[NdarrayOrTensor, tuple[bool, bool]]:
        """Label map and ``(right_found, left_found)``; ``key`` only names the input in errors."""
        plane = self._to_uint8_plane(img, key)
        height, width = plane.shape
        work_size = self.spatial_size or (height, width)
        work = resize_bilinear_uint8(plane, work_size)
        sources = None
        if self.mode == "robust":
            right, left, sources = robust_lungs(work, **self.robust_kwargs)
        else:
            if self.brighten_border:
                work = brighten_border(work)
            right, left = pbtseg_lungs(work, **self.params)
        labels = np.zeros(work.shape, dtype=np.uint8)
        if right is not None:
            labels[right] = 1
        if left is not None:
            labels[left] = 2
        labels = resize_nearest(labels, (height, width))[None]
        found = (right is not None, left is not None)
        if not any(found):
            self._warn_no_lung(img)
        out = convert_to_dst_type(labels, dst=img, dtype=self.dtype)[0]
        if isinstance(out, MetaTensor):
            out.meta = dict(out.meta)  # never write into the input's dictionary
            out.meta[META_RIGHT_FOUND] = found[0]
            out.meta[META_LEFT_FOUND] = found[1]
            out.meta[META_MODE] = self.mode
            if sources is not None:
                out.meta[META_RIGHT_SOURCE], out.meta[META_LEFT_SOURCE] = sources
        return out, found

    @staticmethod
    def _to_uint8_plane(img: NdarrayOrTensor, key: Hashable | None) -> np.ndarray:
        where = f"key {key!r} with shape" if key is not None else "shape"
        shape = tuple(img.shape)
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"PBTSeg expects a 1xHxW image, got {where} {shape}")
        arr = convert_data_type(img, np.ndarray)[0][0]
        if arr.dtype == np.uint8:
            return arr
        if arr.dtype == bool:
            return arr.astype(np.uint8) * 255
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"PBTSeg got NaN or infinite values in the image ({where} {shape})")
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)

    def _warn_no_lung(self, img: NdarrayOrTensor) -> None:
        source = source_name(img, default=None)
        if source is None:
            logger.warning("PBTSeg found no lung (source unknown): the label map is empty.")
            return
        if source not in self._warned:
            self._warned.add(source)
            logger.warning("PBTSeg found no lung in %s: the label map is empty.", source)


class PBTSegd(MapTransform):
    """Dictionary-based :class:`PBTSeg`: segments ``d[key]`` into ``d[lung_key]``.

    For each image key, the label map (see :class:`PBTSeg` for type, dtype and metadata) is
    written to the matching ``lung_keys`` entry, and ``d[f"{key}_{found_postfix}"]`` gets a
    ``torch.bool`` tensor ``[right_found, left_found]`` (always the same type, so batches
    collate). Put it before any random transform so that ``CacheDataset`` caches lung maps.
    """

    backend = PBTSeg.backend

    def __init__(
        self,
        keys: KeysCollection,
        lung_keys: KeysCollection = "lung",
        found_postfix: str | None = "lungs_found",
        allow_missing_keys: bool = False,
        **pbtseg_kwargs,
    ) -> None:
        """
        Args:
            keys: image keys to segment.
            lung_keys: where to write each label map, one per key (default ``"lung"``).
            found_postfix: postfix of the found-lungs key; ``None`` writes no such key.
            allow_missing_keys: don't raise if a key is missing.
            pbtseg_kwargs: arguments of :class:`PBTSeg`.
        """
        super().__init__(keys, allow_missing_keys)
        self.lung_keys = ensure_tuple(lung_keys)
        if len(self.lung_keys) != len(self.keys):
            raise ValueError(
                f"PBTSegd needs one lung key per image key, got keys {self.keys} and lung_keys {self.lung_keys}"
            )
        self.found_postfix = found_postfix
        self.pbtseg = PBTSeg(**pbtseg_kwargs)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key, lung_key in self.key_iterator(d, self.lung_keys):
            d[lung_key], found = self.pbtseg.segment(d[key], key=key)
            if self.found_postfix is not None:
                d[f"{key}_{self.found_postfix}"] = torch.tensor(found, dtype=torch.bool)
        return d


PBTSegD = PBTSegDict = PBTSegd
