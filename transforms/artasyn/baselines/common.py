"""What the baseline anomaly syntheses (AnatPaste, CutPaste, Perlin noise) share.

The baselines of :mod:`artasyn.baselines.anatpaste`, :mod:`artasyn.baselines.cutpaste` and
:mod:`artasyn.baselines.perlin` follow the contract of :class:`artasyn.synthesis.RandARTAnomaly`, so that
:class:`artasyn.synthesis.RandARTAnomalyd` and :class:`artasyn.synthesis.RandARTTwinsd` take
them through ``variant``:

- ``__call__(img, lung)`` on a 1 x H x W image (0..255) and its lung label map (1 x H x W or
  H x W; lungs = ``> 0``) returns ``(image, mask)``: the synthetic image in the input's type
  and dtype, and the binary anomaly mask (1 x H x W float32, the image's container type);
- ``randomize(image, lung)`` draws every random quantity from ``self.R`` (and nothing else);
  ``render(image, lung)`` is deterministic given those draws;
- ``last_painted``, ``last_no_lung``, ``no_lung_count`` as in :class:`RandARTAnomaly` (and
  ``faint_count``, the anomalies discarded for an empty mask, see below): an empty
  lung map leaves the image unchanged (empty mask), logs a warning naming the source file and
  sets the MetaTensor flag ``artasyn_no_lung``.

Every baseline blends a source ``src`` into the image with an opacity ``alpha`` in [0, 1]
that is zero outside the lungs: ``out = image + alpha * (src - image)``; pixels where
``alpha == 0`` keep their exact value. The anomaly mask is ``alpha > threshold`` (80/255,
the rule of ART-ASyn, ``docs/method.md`` section 2.5), so where a soft edge blends, it changes the image by
at most ``threshold`` times the source-image difference outside the mask. A drawn anomaly whose
mask comes out empty (too faint) is discarded: the image is returned unchanged, label 0.

:class:`RandLungAnomalyd` is the dictionary wrapper the baselines' ``...d`` transforms specialise.

Example (a lung pixel drawn from ``R``; the blend leaves ``alpha == 0`` pixels exact)::

    >>> import numpy as np
    >>> from artasyn.baselines.common import blend, lung_pixel
    >>> lung = np.zeros((8, 8), np.uint8); lung[2:4, 5] = 1
    >>> row, col = lung_pixel(np.random.RandomState(0), lung); bool(lung[row, col])
    True
    >>> lung_pixel(np.random.RandomState(0), np.zeros((8, 8))) is None
    True
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends
from PIL import Image, ImageEnhance

from ..base import (
    REFERENCE_SIZE,
    anomaly_label,
    check_image_and_lung,
    empty_mask_like,
    size_scale,
    source_name,
    source_of,
    synthesis_outputs,
    tag_synthesis,
)
from ..constants import MASK_THRESHOLD, PATCH_AREA_RATIO, PATCH_ASPECT_RATIO

__all__ = [
    "RandLungAnomaly",
    "RandLungAnomalyd",
    "lung_pixel",
    "draw_patch_box",
    "draw_jitter",
    "jitter_patch",
    "blend",
]

logger = logging.getLogger(__name__)


def lung_pixel(R: np.random.RandomState, lung: np.ndarray) -> tuple[int, int] | None:
    """A lung pixel ``(row, col)`` drawn uniformly from ``R``; None when the map has no lung."""
    idx = np.flatnonzero(lung.ravel() > 0)
    if idx.size == 0:
        return None
    k = int(idx[R.randint(idx.size)])
    return k // lung.shape[1], k % lung.shape[1]


def draw_patch_box(
    R: np.random.RandomState, shape, area_ratio=PATCH_AREA_RATIO, aspect_ratio: float = PATCH_ASPECT_RATIO
) -> tuple[int, int, int, int]:
    """CutPaste's patch: area uniform in ``area_ratio`` of the image, aspect (width / height)
    log-uniform between ``aspect_ratio`` and its inverse, ``(w, h) = round(sqrt(area * aspect)),
    round(sqrt(area / aspect))``; its top-left corner uniform so that it lies in the image.
    Returns ``(top, left, height, width)``."""
    h, w = int(shape[0]), int(shape[1])
    area = R.uniform(area_ratio[0], area_ratio[1]) * h * w
    lo, hi = sorted((np.log(aspect_ratio), -np.log(aspect_ratio)))
    aspect = float(np.exp(R.uniform(lo, hi)))
    ch = min(max(int(round(np.sqrt(area / aspect))), 1), h)
    cw = min(max(int(round(np.sqrt(area * aspect))), 1), w)
    return int(R.uniform(0, h - ch)), int(R.uniform(0, w - cw)), ch, cw


def draw_jitter(R: np.random.RandomState, jitter: float | None) -> tuple[float, float, bool] | None:
    """Brightness and contrast factors uniform in ``[max(0, 1 - jitter), 1 + jitter]`` and their
    order (torchvision ``ColorJitter(brightness=jitter, contrast=jitter)``); None for no jitter."""
    if not jitter:
        return None
    lo, hi = max(0.0, 1.0 - jitter), 1.0 + jitter
    return float(R.uniform(lo, hi)), float(R.uniform(lo, hi)), bool(R.random_sample() < 0.5)


def jitter_patch(
    x: np.ndarray, patch: np.ndarray, brightness: float, contrast: float, brightness_first: bool
) -> np.ndarray:
    """Grayscale colour jitter (0..255 floats), as torchvision's ``ColorJitter`` on a PIL image:
    brightness multiplies (``x * b``), contrast blends with the rounded mean ``m`` of the cut
    ``patch`` (``m + c * (x - m)``), each clipped to 0..255, in the drawn order. ``x`` is what
    the jitter is applied to (the patch or a window around it). Saturation and hue, which the
    CutPaste/AnatPaste code also jitters, do nothing to a gray image."""

    def bright(v):
        return np.clip(v * brightness, 0, 255)

    def contr(v, ref):
        m = np.floor(ref.mean() + 0.5) if ref.size else 0.0
        return np.clip(m + contrast * (v - m), 0, 255)

    x = x.astype(np.float32)
    if brightness_first:
        return contr(bright(x), bright(patch.astype(np.float32)))
    return bright(contr(x, patch))


def blend(image: np.ndarray, src: np.ndarray, alpha: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """``image + alpha * (src - image)`` inside ``box`` (``src`` and ``alpha`` are the box's
    size, ``alpha`` in [0, 1]); float32 H x W, exact copies of the image where ``alpha == 0``."""
    out = image.astype(np.float32, copy=True)
    region = out[box]
    out[box] = np.where(alpha > 0, region + alpha * (src - region), region)
    return out


def sharpen(x: np.ndarray, factor: float) -> np.ndarray:
    """Pillow ``ImageEnhance.Sharpness`` of a uint8 array."""
    return np.asarray(ImageEnhance.Sharpness(Image.fromarray(x)).enhance(factor))


class RandLungAnomaly(RandomizableTransform):
    """Base of the baseline array transforms (see the module docstring for the contract).

    Subclasses set ``variant`` (the name ``RandARTAnomalyd`` takes) and implement
    ``randomize(image, lung)`` (setting ``self._params``, None when there is nothing to paint)
    and ``render(image, lung) -> (float32 H x W image, float32 H x W {0, 1} mask)``.

    Args:
        prob: probability of synthesizing (else the image comes back with an empty mask).
        threshold: the mask is ``opacity > threshold`` (0..255; 80, as ART-ASyn).
        reference_size: size (256) at which pixel constants are given; they scale with
            ``sqrt(H * W) / reference_size``. ``None`` keeps them fixed.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]
    variant = ""
    #: restricted to the lungs: always (the meta flag ``artasyn_base_lung_mask`` of RandARTAnomaly)
    base_lung_mask = True

    def __init__(
        self, prob: float = 1.0, threshold: float = MASK_THRESHOLD, reference_size: int | None = REFERENCE_SIZE
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.threshold = float(threshold)
        self.reference_size = reference_size
        self.no_lung_count = 0
        self.faint_count = 0  # drawn anomalies discarded because their mask came out empty
        self.last_painted = False
        self.last_no_lung = False
        self._params: Any = None

    def _scale(self, shape) -> float:
        return size_scale(shape, self.reference_size) if self.reference_size else 1.0

    def randomize(self, image: np.ndarray, lung: np.ndarray) -> None:  # type: ignore[override]
        super().randomize(None)
        self._params = None

    def render(self, image: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __call__(
        self,
        img,
        lung,
        randomize: bool = True,
        key: str = "image",
        lung_key: str = "lung",
        source: str | None = None,
    ):
        im, lu = check_image_and_lung(img, lung, key, lung_key)
        if randomize:
            self.randomize(im, lu)
        self.last_no_lung = bool(self._do_transform and not (lu > 0).any())
        if self.last_no_lung:
            self.no_lung_count += 1
            logger.warning(
                "%s: empty lung map, image left unchanged (source: %s)", self.variant, source or source_name(img)
            )
        self.last_painted = self._params is not None and not self.last_no_lung
        out, mask = im, np.zeros(im.shape, np.float32)
        if self.last_painted:
            drawn, drawn_mask = self.render(im, lu)
            # an anomaly too faint for the mask (a tiny, heavily blurred shape) is not painted at all
            self.last_painted = bool(drawn_mask.any())
            self.faint_count += not self.last_painted
            if self.last_painted:
                mask = drawn_mask
                if np.issubdtype(im.dtype, np.integer):
                    out = np.clip(np.round(drawn), 0, 255).astype(im.dtype)
                else:
                    out = drawn.astype(im.dtype, copy=False)
        return synthesis_outputs(
            out,
            mask,
            img,
            artasyn_variant=self.variant,
            artasyn_base_lung_mask=self.base_lung_mask,
            artasyn_no_lung=self.last_no_lung,
        )


class RandLungAnomalyd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of a :class:`RandLungAnomaly` (set ``synthesizer`` in a subclass).

    Replaces ``d[key]`` by the synthetic image (same type), writes ``d[mask_key]`` (binary
    1 x H x W float32 in the image's container type) and ``d[label_key]``
    (``torch.tensor([1.0])`` when painted, ``[0.0]`` when not) and ``d["artasyn_variant"]``,
    as :class:`artasyn.synthesis.RandARTAnomalyd` does. Other keyword arguments go to the
    array transform.
    """

    backend = RandLungAnomaly.backend
    synthesizer: type[RandLungAnomaly] = RandLungAnomaly

    def __init__(
        self,
        keys: KeysCollection = "image",
        lung_key: str = "lung",
        mask_key: str = "anomaly_mask",
        label_key: str = "anomaly_label",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.lung_key, self.mask_key, self.label_key = lung_key, mask_key, label_key
        self.synth = self.synthesizer(prob=1.0, **kwargs)

    @property
    def no_lung_count(self) -> int:
        return self.synth.no_lung_count

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.synth.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if len(keys) > 1:
            raise ValueError(f"{type(self).__name__} synthesizes one image key at a time, got {keys}")
        for key in keys:
            if self.lung_key not in d:
                raise KeyError(
                    f"{type(self).__name__}: lung label map key '{self.lung_key}' not in the data (keys: {list(d)})"
                )
            img = d[key]
            if self._do_transform:
                d[key], d[self.mask_key] = self.synth(
                    img, d[self.lung_key], key=str(key), lung_key=self.lung_key, source=source_of(d, key)
                )
                painted = self.synth.last_painted
            else:
                check_image_and_lung(img, d[self.lung_key], str(key), self.lung_key)
                d[self.mask_key] = empty_mask_like(img)
                painted = False
            d[self.label_key] = anomaly_label(painted)
            no_lung = bool(self._do_transform and self.synth.last_no_lung)
            tag_synthesis(d, (key, self.mask_key), self.synth.variant, self.synth.base_lung_mask, no_lung)
        return d
