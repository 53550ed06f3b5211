"""A_base: the brush-painted anomaly layer of ART-ASyn (``docs/method.md`` section 2.1).

:class:`RandBrushAnomaly` paints random brush strokes inside the lungs of a 1 x H x W image
(0..255) and returns the painted layer as a **2 x H x W float32 "LA" layer**: channel 0 the
gray colour (the 85th percentile of the image where the alpha is non-zero, else 0), channel 1
the alpha (0..255, integer values). See :mod:`artasyn.base` for the layer convention.

Per lung (label 1 = right lung = image-left, 2 = left lung = image-right), a number of stroke
segments n in {0, 1, 2, 3, 4, 10, ..., 14} (P(0) = 0.2, the others 0.8/9 each; both redrawn
until at least one segment). A segment joins two random pixels of its lung along a
quadratic Bezier curve (control point: midpoint plus a uniform offset in [-30, 30) per axis,
100 samples, rounded), then stamps two brushes (widths 80 and 50) at
``min(100, max(1, int(length / spacing)))`` distinct curve samples each, ``spacing =
max(1, int(0.05 * width))``; every stamp is jittered (width uniform integer in
``[int(0.3 * width), width)``, rotation uniform in [0, 360), alpha floored to
``int(p * opacity * flow)`` with opacity in [0.07, 0.3), flow in [0.67, 1.0)). Stamps are
composited "over" a transparent segment layer (all width-80 stamps, then all width-50
ones), the segment's alpha is floored to ``int(0.95 * a)`` and the segments are composited
over each other, all with Pillow's integer arithmetic (:func:`artasyn.synthesis.brush.paint_stamps`).

Pixel constants (brush widths, control offset) are given at 256 x 256 and scale with
``sqrt(H * W) / 256``.

Example::

    >>> import numpy as np
    >>> from artasyn.synthesis.strokes import RandBrushAnomaly
    >>> img = np.full((1, 256, 256), 100, np.uint8)
    >>> lung = np.zeros((1, 256, 256), np.uint8); lung[0, 60:200, 40:110] = 1; lung[0, 60:200, 150:220] = 2
    >>> layer = RandBrushAnomaly().set_random_state(0)(img, lung)
    >>> layer.shape, bool(layer[1].max() > 0)
    ((2, 256, 256), True)
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends
from PIL import Image

from ..base import REFERENCE_SIZE, check_image_and_lung, empty_layer, float32_like, size_scale, source_name, to_uint8
from ..constants import (
    BRUSH_WIDTHS,
    COLOUR_PERCENTILE,
    CONTROL_OFFSET,
    CURVE_SAMPLES,
    FLOW_RANGE,
    MAX_STAMPS,
    OPACITY_RANGE,
    P_ZERO_SEGMENTS,
    SEGMENT_COUNTS,
    SEGMENT_OPACITY,
    STAMP_ANGLE_STEP,
    STAMP_CACHE_BYTES,
    STAMP_SPACING_FRACTION,
    WIDTH_JITTER,
)
from .brush import StampBank, painted_box, resolve_brush_texture, stamp_pastes

__all__ = [
    "StrokePlan",
    "plan_strokes",
    "render_strokes",
    "source_name",
    "RandBrushAnomaly",
    "RandBrushAnomalyd",
    "RandBrushAnomalyD",
    "RandBrushAnomalyDict",
]

logger = logging.getLogger(__name__)


class StrokePlan:
    """The random draws of one A_base layer: per segment, per brush, the stamp centres (x, y),
    widths, angles and opacities (opacity * flow); plus the brush colour."""

    __slots__ = ("colour", "segments")

    def __init__(self, colour: int, segments: list) -> None:
        self.colour = colour
        self.segments = segments  # [[(xs, ys, widths, angles, opacity) per brush] per segment]

    @property
    def num_segments(self) -> int:
        return len(self.segments)

    @property
    def num_stamps(self) -> int:
        return sum(len(b[0]) for seg in self.segments for b in seg)


def _u8_percentile(image_u8: np.ndarray, q: float) -> float:
    """``np.percentile(image_u8, q)`` (linear interpolation) of a uint8 array from its histogram."""
    a = np.asarray(image_u8)
    if a.dtype != np.uint8:
        return float(np.percentile(a, q))
    n = a.size
    cum = np.cumsum(np.bincount(a.ravel(), minlength=256))
    quant = q / 100.0
    pos = quant * (n - 1)
    lo = min(max(int(np.floor(pos)), 0), n - 1)
    hi = min(lo + 1, n - 1)
    t = pos - np.floor(pos)
    a_lo = float(np.searchsorted(cum, lo, side="right"))  # the lo-th smallest value
    a_hi = float(np.searchsorted(cum, hi, side="right"))
    diff = a_hi - a_lo  # numpy's _lerp
    return a_hi - diff * (1 - t) if t >= 0.5 else a_lo + diff * t


def plan_strokes(
    R: np.random.RandomState,
    image_u8: np.ndarray,
    lung: np.ndarray,
    banks: Sequence[StampBank],
    scale: float,
    segment_counts: Sequence[int] = SEGMENT_COUNTS,
    p_zero: float = P_ZERO_SEGMENTS,
    control_offset: float = CONTROL_OFFSET,
    curve_samples: int = CURVE_SAMPLES,
    spacing_frac: float = STAMP_SPACING_FRACTION,
    max_stamps: int = MAX_STAMPS,
    width_jitter: float = WIDTH_JITTER,
    opacity_range: tuple[float, float] = OPACITY_RANGE,
    flow_range: tuple[float, float] = FLOW_RANGE,
    colour_percentile: float = COLOUR_PERCENTILE,
    width_step: int = 1,
) -> StrokePlan | None:
    """Draw every random quantity of A_base from ``R``; None when the lung map is empty.

    ``width_step``: jittered widths are drawn from the multiples of this step in the jitter
    range (1: every integer width, the authors' draw at 256 x 256; larger images use
    ``floor(scale)``, the 256 x 256 width grid scaled up, so that their stamp banks hold as many
    stamps as at 256 x 256)."""
    lungs = [np.flatnonzero(lung.ravel() == v) for v in (1, 2)]
    if not any(len(p) for p in lungs):
        return None
    counts = np.asarray(segment_counts)
    n_nonzero = max(int((counts != 0).sum()), 1)
    probs = np.where(counts == 0, p_zero, (1.0 - p_zero) / n_nonzero)
    probs = probs / probs.sum()
    while True:
        ns = [int(R.choice(counts, p=probs)) if len(p) else 0 for p in lungs]
        if sum(ns) > 0:
            break
    colour = int(_u8_percentile(image_u8, colour_percentile))
    w = lung.shape[1]
    # end points: 2 random pixels of the segment's lung, (x, y) = (col, row)
    ends = [pix[R.randint(0, len(pix), size=2 * n)] for pix, n in zip(lungs, ns) if n > 0]
    flat = np.concatenate(ends)
    nseg = flat.size // 2
    pts = np.stack([flat % w, flat // w], axis=1).astype(np.float32).reshape(nseg, 2, 2)
    p0, p1 = pts[:, 0], pts[:, 1]
    off = R.uniform(-control_offset * scale, control_offset * scale, size=(nseg, 2)).astype(np.float32)
    mid = (p0 + p1) / 2
    ctrl = mid + off
    lengths = np.linalg.norm(p1 - p0, axis=1) + np.linalg.norm(ctrl - mid, axis=1)
    t = np.linspace(0, 1, curve_samples, dtype=np.float32)[None, :, None]
    curves = np.round((1 - t) ** 2 * p0[:, None] + 2 * (1 - t) * t * ctrl[:, None] + t**2 * p1[:, None])  # nseg x S x 2
    nb = len(banks)
    bw = np.array([b.width for b in banks])
    spacing = np.maximum(1, (bw * spacing_frac).astype(np.int64))
    m = np.minimum(
        min(curve_samples, max_stamps), np.maximum(1, (lengths[:, None] / spacing[None, :]).astype(np.int64))
    )  # nseg x nb
    # distinct curve samples per (segment, brush): the first m of a random permutation
    perm = np.argsort(R.random_sample((nseg, nb, curve_samples)), axis=-1)
    sel = np.arange(curve_samples)[None, None, :] < m[..., None]
    seg_idx, brush_idx, _ = np.nonzero(sel)
    sample = perm[sel]
    lo = (bw * width_jitter).astype(np.int64)
    hi = np.maximum(bw, lo + 1)
    step = max(int(width_step), 1)
    if step == 1:
        widths = np.maximum(R.randint(lo[brush_idx], hi[brush_idx]), 1)
    else:  # multiples of step in [lo, hi) (at least one)
        k_lo = -(-lo // step)
        k_hi = np.maximum(-(-hi // step), k_lo + 1)
        widths = np.maximum(R.randint(k_lo[brush_idx], k_hi[brush_idx]) * step, 1)
    angles = R.uniform(0.0, 360.0, size=sample.size)
    opac = R.uniform(*opacity_range, size=sample.size) * R.uniform(*flow_range, size=sample.size)
    xy = curves[seg_idx, sample]
    bounds = np.concatenate([[0], np.cumsum(m.ravel())]).tolist()
    xs, ys, widths = xy[:, 0].tolist(), xy[:, 1].tolist(), widths.tolist()
    segments = []
    for i in range(nseg):
        seg = []
        for b in range(nb):
            a, z = bounds[i * nb + b], bounds[i * nb + b + 1]
            seg.append((xs[a:z], ys[a:z], widths[a:z], angles[a:z], opac[a:z]))
        segments.append(seg)
    return StrokePlan(colour, segments)


def render_strokes(
    plan: StrokePlan, shape: Sequence[int], banks: Sequence[StampBank], segment_opacity: float = SEGMENT_OPACITY
) -> np.ndarray:
    """Render a :class:`StrokePlan` into a 2 x H x W float32 LA layer.

    The placement of every stamp of the image is computed at once per brush
    (:func:`artasyn.synthesis.brush.stamp_pastes`); the pastes then run segment by segment, in the plan's
    order (the same pixels as :func:`artasyn.synthesis.brush.paint_stamps` per segment and brush)."""
    h, w = int(shape[0]), int(shape[1])
    seg_lut = np.floor(np.arange(256) * float(segment_opacity)).clip(0, 255).astype(np.int64).tolist()
    total = Image.new("L", (w, h), 0)
    canvas = Image.new("L", (w, h), 0)
    paste = canvas.im.paste
    # per brush: the pastes of all segments, and where each segment's pastes start
    per_brush = []
    for b, bank in enumerate(banks):
        cols = [[v for seg in plan.segments for v in seg[b][j]] for j in range(5)]
        counts = [len(seg[b][0]) for seg in plan.segments]
        boxes, cores, luts, keep = stamp_pastes(bank, *cols, (h, w))
        starts = np.searchsorted(keep, np.concatenate([[0], np.cumsum(counts)])).tolist()
        # each segment's painted box (over both brushes): min of the starts, max of the ends
        ends = (
            np.maximum.reduceat(boxes[:, 2:], np.minimum(starts[:-1], max(len(boxes) - 1, 0)), axis=0)
            if len(boxes)
            else None
        )
        firsts = (
            np.minimum.reduceat(boxes[:, :2], np.minimum(starts[:-1], max(len(boxes) - 1, 0)), axis=0)
            if len(boxes)
            else None
        )
        per_brush.append((boxes.tolist(), cores, luts, starts, firsts, ends))
    for i in range(len(plan.segments)):
        seg_boxes = []
        for boxes, cores, luts, starts, firsts, ends in per_brush:
            a, z = starts[i], starts[i + 1]
            if a == z:
                continue
            for box, core, lut in zip(boxes[a:z], cores[a:z], luts[a:z]):
                paste(255, box, core.point(lut, None))
            seg_boxes.append((*firsts[i], *ends[i]))
        box = painted_box(seg_boxes, (h, w))
        if box is None:
            continue
        pil_box = (box[2], box[0], box[3], box[1])
        # the segment's alpha x 0.95 (floored), composited over the layer (same rounding as stamps)
        total.im.paste(255, pil_box, canvas.im.crop(pil_box).point(seg_lut, None))
        canvas.paste(0, pil_box)
    alpha = np.asarray(total, dtype=np.float32)
    layer = empty_layer((h, w))
    layer[1] = alpha
    layer[0] = np.where(alpha > 0, np.float32(plan.colour), np.float32(0))
    return layer


class RandBrushAnomaly(RandomizableTransform):
    """A_base (section 2.1): paint random brush strokes inside the lungs.

    ``__call__(img, lung)``: ``img`` 1 x H x W in 0..255 (uint8 or float; numpy, torch or
    MetaTensor), ``lung`` 1 x H x W label map (1 right lung, 2 left lung). Returns the 2 x H x W
    float32 LA layer (gray colour, alpha) in the image's container type. An empty lung map
    gives an all-zero layer, a warning naming the source file, and ``self.no_lung_count += 1``.

    Args:
        prob: probability of painting (else an all-zero layer).
        brush_texture: None (procedural texture, seed 0), an int (procedural, that seed), a
            path to a grayscale texture image, or a 2-D uint8 alpha array.
        brush_widths: widths of the brushes at the reference size (80, 50).
        segment_counts, p_zero: the segment-count distribution per lung.
        control_offset: half-range of the Bezier control offset (30 px at the reference size).
        curve_samples: samples per curve (100); max_stamps: stamp cap per brush (100).
        spacing_frac: stamp spacing as a fraction of the brush width (0.05).
        width_jitter: the smallest jittered width as a fraction of the brush width (0.3).
        opacity_range, flow_range: jitter ranges of opacity and flow.
        segment_opacity: alpha factor of each segment layer (0.95).
        colour_percentile: the brush colour is this percentile of the image (85).
        angle_step: rotation quantization of the stamp bank in degrees (5).
        width_step: step of the jittered widths; ``None`` (default): ``floor(scale)`` with
            ``scale = sqrt(H * W) / reference_size`` (1 at 256 x 256: every integer width; 4 at
            1024 x 1024: the 256 x 256 widths scaled up), which keeps the stamp banks of large
            images small enough to stay cached.
        stamp_cache_bytes: memory budget of each stamp bank (256 MiB; a full bank takes about
            8 MiB at 256 x 256 and 125 MiB at 1024 x 1024).
        reference_size: size at which pixel constants are given (``None``: fixed).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        prob: float = 1.0,
        brush_texture: Any = None,
        brush_widths: Sequence[float] = BRUSH_WIDTHS,
        segment_counts: Sequence[int] = SEGMENT_COUNTS,
        p_zero: float = P_ZERO_SEGMENTS,
        control_offset: float = CONTROL_OFFSET,
        curve_samples: int = CURVE_SAMPLES,
        max_stamps: int = MAX_STAMPS,
        spacing_frac: float = STAMP_SPACING_FRACTION,
        width_jitter: float = WIDTH_JITTER,
        opacity_range: tuple[float, float] = OPACITY_RANGE,
        flow_range: tuple[float, float] = FLOW_RANGE,
        segment_opacity: float = SEGMENT_OPACITY,
        colour_percentile: float = COLOUR_PERCENTILE,
        angle_step: float = STAMP_ANGLE_STEP,
        width_step: int | None = None,
        stamp_cache_bytes: int = STAMP_CACHE_BYTES,
        reference_size: int | None = REFERENCE_SIZE,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.texture = resolve_brush_texture(brush_texture)
        self.width_step = width_step
        self.stamp_cache_bytes = int(stamp_cache_bytes)
        self.brush_widths = tuple(float(w) for w in brush_widths)
        self.plan_kwargs = dict(
            segment_counts=tuple(segment_counts),
            p_zero=p_zero,
            control_offset=control_offset,
            curve_samples=curve_samples,
            spacing_frac=spacing_frac,
            max_stamps=max_stamps,
            width_jitter=width_jitter,
            opacity_range=tuple(opacity_range),
            flow_range=tuple(flow_range),
            colour_percentile=colour_percentile,
        )
        self.segment_opacity = segment_opacity
        self.angle_step = angle_step
        self.reference_size = reference_size
        self._banks: dict[tuple[int, ...], list[StampBank]] = {}
        self._plan: StrokePlan | None = None
        self.no_lung_count = 0

    def banks(self, shape: Sequence[int]) -> list[StampBank]:
        """The stamp banks (one per brush width) for an image of ``shape`` (H, W), cached."""
        s = size_scale(shape, self.reference_size)
        widths = tuple(max(2, int(round(w * s))) for w in self.brush_widths)
        if widths not in self._banks:
            self._banks[widths] = [
                StampBank(self.texture, w, angle_step=self.angle_step, max_bytes=self.stamp_cache_bytes) for w in widths
            ]
        return self._banks[widths]

    def plan_args(self, shape: Sequence[int]) -> dict:
        """Keyword arguments of :func:`plan_strokes` for an image of ``shape`` (H, W)."""
        s = size_scale(shape, self.reference_size)
        step = self.width_step if self.width_step is not None else max(1, int(s))
        return dict(self.plan_kwargs, width_step=step)

    def randomize(self, image_u8: np.ndarray, lung: np.ndarray) -> None:  # type: ignore[override]
        """Draw everything for one layer (``image_u8``, ``lung``: H x W numpy)."""
        super().randomize(None)
        self._plan = None
        if not self._do_transform:
            return
        s = size_scale(image_u8.shape, self.reference_size)
        self._plan = plan_strokes(
            self.R, image_u8, lung, self.banks(image_u8.shape), s, **self.plan_args(image_u8.shape)
        )

    def render(self, shape: Sequence[int]) -> np.ndarray:
        """Render the last drawn plan as a numpy 2 x H x W layer (zeros when none)."""
        if self._plan is None:
            return empty_layer(shape)
        return render_strokes(self._plan, shape, self.banks(shape), self.segment_opacity)

    def _no_lung(self, img: Any) -> None:
        self.no_lung_count += 1
        logger.warning("ART-ASyn: empty lung map, nothing painted (source: %s)", source_name(img))

    def __call__(self, img, lung, randomize: bool = True):
        im, lu = check_image_and_lung(img, lung)
        im_u8 = to_uint8(im)
        if randomize:
            self.randomize(im_u8, lu)
        if self._do_transform and self._plan is None:
            self._no_lung(img)
        layer = self.render(im.shape)
        return float32_like(layer, img)


class RandBrushAnomalyd(RandomizableTransform, MapTransform):
    """Dictionary :class:`RandBrushAnomaly`: paints a layer from ``d[key]`` (the image, default
    ``"image"``) and ``d[lung_key]`` into ``d[layer_key]`` (default ``"anomaly_layer"``)."""

    backend = RandBrushAnomaly.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        lung_key: str = "lung",
        layer_key: str = "anomaly_layer",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.lung_key, self.layer_key = lung_key, layer_key
        self.painter = RandBrushAnomaly(prob=1.0, **kwargs)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.painter.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        for key in self.key_iterator(d):
            if self.lung_key not in d:
                raise KeyError(
                    f"RandBrushAnomalyd: lung label map key '{self.lung_key}' not in the data (keys: {list(d)})"
                )
            img, lung = d[key], d[self.lung_key]
            check_image_and_lung(img, lung, str(key), self.lung_key)
            if self._do_transform:
                d[self.layer_key] = self.painter(img, lung)
            else:
                d[self.layer_key] = float32_like(empty_layer(img.shape), img)
        return d


RandBrushAnomalyD = RandBrushAnomalyDict = RandBrushAnomalyd
