"""AnatPaste (Sato et al., iScience 2023): a patch of the image itself, pasted into the lungs
through a blurred shape. A baseline of the paper's Table S1 (ZhangLab AUC 0.9103).

The method, with the values of the authors' public code (``jun-sato/AnatPaste``,
``anatpaste.py``, class ``AnatPaste``; its training script uses the defaults):

1. Patch: area uniform in [0.02, 0.15] of the image, aspect (width / height) log-uniform in
   [0.3, 1 / 0.3], ``w = round(sqrt(area * aspect))``, ``h = round(sqrt(area / aspect))``, cut
   at a uniform position inside the image (CutPaste's patch, :func:`draw_patch_box`).
2. Colour jitter of the patch: brightness and contrast factors uniform in [0.9, 1.1]
   (``ColorJitter(0.1, 0.1, 0.1, 0.1)``; its saturation and hue do nothing to a gray image).
3. Paste centre: a uniformly drawn lung pixel (the authors segment the lungs with Otsu
   thresholding on the fly; we take the lung label map given, e.g. PBTSeg's).
4. Shape: an ellipse or a rectangle (probability 0.5 each) filling the patch's box shrunk by a
   margin of 10 pixels on every side, drawn at a peak opacity uniform integer in [150, 255),
   then blurred with a Gaussian of radius uniform integer in [0, 15) (Pillow
   ``GaussianBlur``), then multiplied by the binary lung mask.
5. The patch is blended into the image with that opacity (``out = I + a * (P - I)``).

How ours differs:

- Grayscale, one channel, values 0..255; the lungs are a label map input, not segmented here.
- Anomaly mask (the method has none; a reconstruction network needs one): opacity > 80/255,
  the rule of ART-ASyn (``docs/method.md`` section 2.5), together with every pixel that the
  blend changes by more than ``mask_change`` (10) grey levels: where the pasted patch differs
  much from the image, even the faint tail of the blurred shape changes it visibly, and a mask
  must cover what the synthesis changes (with opacity alone, 81 of 92 ``covidquex_normal_lung``
  images with PBTSeg lungs had such pixels outside the mask; mean mask area 2.8 % of the image,
  3.4 % with the change rule).
- The authors' code pastes the patch into an otherwise black image before blending, so where
  the blurred shape reaches past the patch's box (blur radius up to 14 > margin 10) it blends
  black: a dark halo. Ours takes what surrounds the patch from the image too (the image
  translated by the same offset, edges replicated), so the soft edge has no halo.
- The margin (10) and blur radius are pixels at 256 x 256 and scale with ``sqrt(H * W) / 256``;
  the margin is reduced where it would leave an empty shape (a thin patch).
- The paste is not restricted to keep the patch inside the image: its box may be cut by the
  image edge, as in the authors' code.

Example::

    >>> import numpy as np
    >>> from artasyn.baselines.anatpaste import RandAnatPasted
    >>> img = np.tile(np.arange(256, dtype=np.uint8), (256, 1))[None]
    >>> lung = np.zeros((1, 256, 256), np.uint8); lung[0, 60:200, 40:110] = 1; lung[0, 60:200, 150:220] = 2
    >>> out = RandAnatPasted(keys="image", lung_key="lung").set_random_state(0)({"image": img, "lung": lung})
    >>> out["anomaly_mask"].shape, bool(out["anomaly_mask"][lung == 0].any()), float(out["anomaly_label"][0])
    ((1, 256, 256), False, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..base import REFERENCE_SIZE
from ..constants import (
    ANATPASTE_BLUR_RANGE,
    ANATPASTE_MARGIN,
    ANATPASTE_MASK_CHANGE,
    ANATPASTE_PEAK_RANGE,
    PATCH_AREA_RATIO,
    PATCH_ASPECT_RATIO,
    PATCH_JITTER,
)
from .common import (
    MASK_THRESHOLD,
    RandLungAnomaly,
    RandLungAnomalyd,
    blend,
    draw_jitter,
    draw_patch_box,
    jitter_patch,
    lung_pixel,
)

__all__ = ["RandAnatPaste", "RandAnatPasted", "RandAnatPasteD", "RandAnatPasteDict"]


class AnatPasteParams(NamedTuple):
    """The random draws of one AnatPaste anomaly (pixels; ``centre`` is (row, col))."""

    source: tuple[int, int, int, int]  # top, left, height, width of the cut patch
    jitter: tuple[float, float, bool] | None  # brightness, contrast, brightness first
    centre: tuple[int, int]
    blur: int  # Gaussian radius at the reference size
    peak: int  # opacity of the shape, 0..255
    ellipse: bool


class RandAnatPaste(RandLungAnomaly):
    """AnatPaste on one 1 x H x W image (0..255) and its lung label map; see the module docstring.

    ``__call__(img, lung)`` returns ``(image, mask)`` (:class:`artasyn.baselines.common.RandLungAnomaly`).

    Args:
        prob: probability of synthesizing.
        area_ratio: patch area range, fraction of the image ([0.02, 0.15]).
        aspect_ratio: patch aspect drawn log-uniformly between this and its inverse (0.3).
        jitter: brightness and contrast jitter of the patch (0.1); 0 or None: none.
        margin: shrink of the shape inside the patch box, pixels at 256 (10).
        blur_range: Gaussian radius, uniform integer in ``[low, high)`` at 256 ((0, 15)).
        peak_range: peak opacity, uniform integer in ``[low, high)`` of 255 ((150, 255)).
        p_ellipse: probability of an ellipse rather than a rectangle (0.5).
        threshold: the mask is opacity > threshold (80 of 255) ...
        mask_change: ... or a change of the pixel by more than this many grey levels (10).
        reference_size: size at which pixel constants are given (256); None: fixed.
    """

    variant = "anatpaste"

    def __init__(
        self,
        prob: float = 1.0,
        area_ratio: Sequence[float] = PATCH_AREA_RATIO,
        aspect_ratio: float = PATCH_ASPECT_RATIO,
        jitter: float | None = PATCH_JITTER,
        margin: float = ANATPASTE_MARGIN,
        blur_range: Sequence[int] = ANATPASTE_BLUR_RANGE,
        peak_range: Sequence[int] = ANATPASTE_PEAK_RANGE,
        p_ellipse: float = 0.5,
        threshold: float = MASK_THRESHOLD,
        reference_size: int | None = REFERENCE_SIZE,
        mask_change: float = ANATPASTE_MASK_CHANGE,
    ) -> None:
        super().__init__(prob, threshold, reference_size)
        self.mask_change = float(mask_change)
        self.area_ratio = tuple(area_ratio)
        self.aspect_ratio = aspect_ratio
        self.jitter = jitter
        self.margin = margin
        self.blur_range = (int(blur_range[0]), int(blur_range[1]))
        self.peak_range = (int(peak_range[0]), int(peak_range[1]))
        self.p_ellipse = p_ellipse

    def randomize(self, image: np.ndarray, lung: np.ndarray) -> None:  # type: ignore[override]
        """Draw the patch, its jitter, the lung pixel, the blur, the opacity and the shape."""
        super().randomize(image, lung)
        if not self._do_transform:
            return
        source = draw_patch_box(self.R, image.shape, self.area_ratio, self.aspect_ratio)
        jitter = draw_jitter(self.R, self.jitter)
        centre = lung_pixel(self.R, lung)
        if centre is None:
            return
        blur = int(self.R.randint(*self.blur_range))
        peak = int(self.R.randint(*self.peak_range))
        ellipse = bool(self.R.random_sample() < self.p_ellipse)
        self._params = AnatPasteParams(source, jitter, centre, blur, peak, ellipse)

    def opacity(self, shape: Sequence[int], lung: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
        """The drawn shape's opacity (0..255 float32, lungs only) and the image box it covers."""
        p = self._params
        h, w = int(shape[0]), int(shape[1])
        s = self._scale(shape)
        (_, _, ch, cw), (cy, cx) = p.source, p.centre
        m = int(round(self.margin * s))
        my, mx = min(m, ch // 2), min(m, cw // 2)  # keep at least a one-pixel shape
        y0, y1 = cy - ch // 2 + my, cy + ch // 2 - my
        x0, x1 = cx - cw // 2 + mx, cx + cw // 2 - mx
        radius = p.blur * s
        pad = int(np.ceil(3.0 * radius)) + 2
        oy, ox = y0 - pad, x0 - pad
        canvas = Image.new("L", (x1 - x0 + 1 + 2 * pad, y1 - y0 + 1 + 2 * pad), 0)
        box = (x0 - ox, y0 - oy, x1 - ox, y1 - oy)
        draw = ImageDraw.Draw(canvas)
        (draw.ellipse if p.ellipse else draw.rectangle)(box, fill=p.peak)
        if radius > 0:
            canvas = canvas.filter(ImageFilter.GaussianBlur(radius))
        a = np.asarray(canvas, np.float32)
        r0, r1 = max(oy, 0), min(oy + a.shape[0], h)
        c0, c1 = max(ox, 0), min(ox + a.shape[1], w)
        window = (slice(r0, r1), slice(c0, c1))
        a = a[r0 - oy : r1 - oy, c0 - ox : c1 - ox] * (lung[window] > 0)
        return a, window

    def render(self, image: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blend the drawn patch; returns (float32 image, float32 {0, 1} mask), both H x W."""
        p = self._params
        h, w = image.shape
        alpha, (rows, cols) = self.opacity(image.shape, lung)
        (sy, sx, ch, cw), (cy, cx) = p.source, p.centre
        dy, dx = (cy - ch // 2) - sy, (cx - cw // 2) - sx  # destination = source + offset
        ri = np.clip(np.arange(rows.start, rows.stop) - dy, 0, h - 1)
        ci = np.clip(np.arange(cols.start, cols.stop) - dx, 0, w - 1)
        src = image[ri[:, None], ci[None, :]].astype(np.float32)
        if p.jitter is not None:
            src = jitter_patch(src, image[sy : sy + ch, sx : sx + cw], *p.jitter)
        out = blend(image, src, alpha / 255.0, (rows, cols))
        mask = np.zeros(image.shape, np.float32)
        changed = np.abs(out[rows, cols] - image[rows, cols].astype(np.float32)) > self.mask_change
        mask[rows, cols] = (alpha > self.threshold) | changed
        return out, mask


class RandAnatPasted(RandLungAnomalyd):
    """Dictionary :class:`RandAnatPaste`: writes ``d[mask_key]`` and ``d[label_key]`` like
    :class:`artasyn.synthesis.RandARTAnomalyd` (arguments: keys, lung_key, mask_key, label_key,
    prob, allow_missing_keys; the others go to :class:`RandAnatPaste`). Also reachable as
    ``RandARTAnomalyd(variant="anatpaste")`` and ``RandARTTwinsd(variant="anatpaste")``."""

    synthesizer = RandAnatPaste


RandAnatPasteD = RandAnatPasteDict = RandAnatPasted
