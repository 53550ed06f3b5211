"""CutPaste (Li et al., CVPR 2021): a rectangle cut from the image and pasted elsewhere, here
inside the lungs. A baseline for the paper's comparison (Table S1).

The method ("CutPaste", not "CutPaste-Scar"), with the values of the paper and of the public
PyTorch code that AnatPaste builds on (``CutPasteNormal``):

1. Patch: area uniform in [0.02, 0.15] of the image, aspect (width / height) log-uniform in
   [0.3, 1 / 0.3], ``w = round(sqrt(area * aspect))``, ``h = round(sqrt(area / aspect))``, cut
   at a uniform position inside the image (:func:`artasyn.baselines.common.draw_patch_box`).
2. Colour jitter of the patch: brightness and contrast factors uniform in [0.9, 1.1]
   (``ColorJitter(0.1, ...)``; saturation and hue do nothing to a gray image).
3. Paste: at a random location, hard-edged (the patch replaces the pixels).

How ours differs:

- Grayscale, one channel, values 0..255.
- Restricted to the lungs: the patch is centred on a uniformly drawn lung pixel (the paper:
  anywhere in the image), cut by the image edge where it reaches past it, and only its part
  inside the lungs (label map ``> 0``) is pasted. The anomaly mask is exactly that part, and
  the image changes nowhere else.

Example::

    >>> import numpy as np
    >>> from artasyn.baselines.cutpaste import RandCutPasted
    >>> img = np.tile(np.arange(256, dtype=np.uint8), (256, 1))[None]
    >>> lung = np.zeros((1, 256, 256), np.uint8); lung[0, 60:200, 40:110] = 1; lung[0, 60:200, 150:220] = 2
    >>> out = RandCutPasted(keys="image", lung_key="lung").set_random_state(0)({"image": img, "lung": lung})
    >>> changed = out["image"] != img
    >>> bool(changed.any()), bool((changed & (out["anomaly_mask"] == 0)).any())
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..base import REFERENCE_SIZE
from ..constants import PATCH_AREA_RATIO, PATCH_ASPECT_RATIO, PATCH_JITTER
from .common import (
    MASK_THRESHOLD,
    RandLungAnomaly,
    RandLungAnomalyd,
    draw_jitter,
    draw_patch_box,
    jitter_patch,
    lung_pixel,
)

__all__ = ["RandCutPaste", "RandCutPasted", "RandCutPasteD", "RandCutPasteDict"]


class CutPasteParams(NamedTuple):
    """The random draws of one CutPaste anomaly (pixels; ``centre`` is (row, col))."""

    source: tuple[int, int, int, int]  # top, left, height, width of the cut patch
    jitter: tuple[float, float, bool] | None  # brightness, contrast, brightness first
    centre: tuple[int, int]


class RandCutPaste(RandLungAnomaly):
    """CutPaste on one 1 x H x W image (0..255) and its lung label map; see the module docstring.

    ``__call__(img, lung)`` returns ``(image, mask)`` (:class:`artasyn.baselines.common.RandLungAnomaly`).

    Args:
        prob: probability of synthesizing.
        area_ratio: patch area range, fraction of the image ([0.02, 0.15]).
        aspect_ratio: patch aspect drawn log-uniformly between this and its inverse (0.3).
        jitter: brightness and contrast jitter of the patch (0.1); 0 or None: none.
        threshold, reference_size: unused by the hard paste (kept for the common signature).
    """

    variant = "cutpaste"

    def __init__(
        self,
        prob: float = 1.0,
        area_ratio: Sequence[float] = PATCH_AREA_RATIO,
        aspect_ratio: float = PATCH_ASPECT_RATIO,
        jitter: float | None = PATCH_JITTER,
        threshold: float = MASK_THRESHOLD,
        reference_size: int | None = REFERENCE_SIZE,
    ) -> None:
        super().__init__(prob, threshold, reference_size)
        self.area_ratio = tuple(area_ratio)
        self.aspect_ratio = aspect_ratio
        self.jitter = jitter

    def randomize(self, image: np.ndarray, lung: np.ndarray) -> None:  # type: ignore[override]
        """Draw the patch, its jitter and the lung pixel it is centred on."""
        super().randomize(image, lung)
        if not self._do_transform:
            return
        source = draw_patch_box(self.R, image.shape, self.area_ratio, self.aspect_ratio)
        jitter = draw_jitter(self.R, self.jitter)
        centre = lung_pixel(self.R, lung)
        if centre is not None:
            self._params = CutPasteParams(source, jitter, centre)

    def render(self, image: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Paste the drawn patch; returns (float32 image, float32 {0, 1} mask), both H x W."""
        p = self._params
        h, w = image.shape
        (sy, sx, ch, cw), (cy, cx) = p.source, p.centre
        top, left = cy - ch // 2, cx - cw // 2
        r0, r1, c0, c1 = max(top, 0), min(top + ch, h), max(left, 0), min(left + cw, w)
        patch = image[sy : sy + ch, sx : sx + cw]
        src = patch[r0 - top : r1 - top, c0 - left : c1 - left].astype(np.float32)
        if p.jitter is not None:
            src = jitter_patch(src, patch, *p.jitter)
        inside = lung[r0:r1, c0:c1] > 0
        out = image.astype(np.float32, copy=True)
        out[r0:r1, c0:c1] = np.where(inside, src, out[r0:r1, c0:c1])
        mask = np.zeros(image.shape, np.float32)
        mask[r0:r1, c0:c1] = inside
        return out, mask


class RandCutPasted(RandLungAnomalyd):
    """Dictionary :class:`RandCutPaste`: writes ``d[mask_key]`` and ``d[label_key]`` like
    :class:`artasyn.synthesis.RandARTAnomalyd` (arguments: keys, lung_key, mask_key, label_key,
    prob, allow_missing_keys; the others go to :class:`RandCutPaste`). Also reachable as
    ``RandARTAnomalyd(variant="cutpaste")`` and ``RandARTTwinsd(variant="cutpaste")``."""

    synthesizer = RandCutPaste


RandCutPasteD = RandCutPasteDict = RandCutPasted
