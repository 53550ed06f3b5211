"""The brush of ART-ASyn and its stamp rendering (``docs/method.md`` section 2.1).

A brush is a grayscale *alpha texture* (uint8, ``H x W``): a small smoky, streaky blob whose
alpha is used with one flat gray colour. This module gives

- :func:`make_brush_texture`: a procedural texture of the same character as the authors'
  (about 106 x 168, mostly dark: mean alpha about 16/255, median about 2, 90th percentile
  about 48, 99th about 186, a few bright streaks), seeded and cached;
- :func:`load_brush_texture` / :func:`resolve_brush_texture`: a user's texture image
  (loaded as 8-bit grayscale) or the procedural one;
- :class:`StampBank`: pre-rendered *jittered stamps* (resized to an integer width, rotated
  by a quantized angle, bicubic, canvas expanded, cropped to the non-zero box), built
  lazily and cached under a memory budget;
- :func:`paint_stamps`: "over"-compositing of stamps of one colour onto an alpha canvas with
  the exact integer arithmetic of Pillow's ``alpha_composite`` (done as masked pastes) (so the statistics of the
  authors' PIL pipeline are kept), including the floored opacity (``int(p * opacity)``)
  and the top-left placement of the stamp's non-zero box at ``(int(x - w/2), int(y - h/2))``.

Because every stamp of one image has the same colour, compositing only changes the alpha:
the colour of the painted layer is that gray wherever its alpha is non-zero.

Example::

    >>> import numpy as np
    >>> from artasyn.synthesis.brush import StampBank, make_brush_texture, paint_stamps
    >>> bank = StampBank(make_brush_texture(seed=0), base_width=80)
    >>> from PIL import Image
    >>> canvas = Image.new("L", (256, 256), 0)
    >>> box = paint_stamps(canvas, bank, xs=[128.0], ys=[128.0], widths=[60], angles=[30.0],
    ...                    opacity=[0.2])
    >>> int(np.asarray(canvas).max()) > 0
    True
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image
from scipy import ndimage

from ..constants import BRUSH_TEXTURE_SIZE, STAMP_ANGLE_STEP, STAMP_CACHE_BYTES

__all__ = [
    "BRUSH_TEXTURE_QUANTILES",
    "make_brush_texture",
    "load_brush_texture",
    "resolve_brush_texture",
    "StampBank",
    "paint_stamps",
    "stamp_pastes",
    "painted_box",
    "pil_over_alpha_table",
    "crop_to_nonzero",
]

#: quantile knots (fraction of pixels, alpha value) of the procedural texture's histogram:
#: about 45% zero, median 2, p75 16, p90 48, p95 76, p99 186, max 255, mean about 16 (the
#: character of the authors' texture, section 2.1).
BRUSH_TEXTURE_QUANTILES = (
    (0.0, 0.0),
    (0.455, 0.0),
    (0.50, 2.0),
    (0.60, 7.0),
    (0.70, 10.0),
    (0.75, 16.0),
    (0.80, 24.0),
    (0.85, 33.0),
    (0.90, 48.0),
    (0.95, 76.0),
    (0.97, 99.0),
    (0.98, 130.0),
    (0.99, 186.0),
    (0.995, 211.0),
    (0.998, 233.0),
    (1.0, 255.0),
)


def _soft_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise, normalised to zero mean and unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-12)


@functools.lru_cache(maxsize=16)
def _make_brush_texture_cached(seed: int, height: int, width: int) -> np.ndarray:
    """Procedural brush alpha of the authors' character (section 2.1), built in three parts.

    - *Where* it is non-zero: the lowest 45.5% of a coverage field (smooth noise minus the
      elliptical distance to the blob centre) are transparent, so the non-zero part fills the
      box irregularly, as the authors' does, and cropping keeps the aspect ratio.
    - *How bright*: a faint smoke (multi-octave noise in a broad envelope) plus a few thin,
      slanted streaks concentrated in a central core, so the bright alpha mass has about the
      spread of the authors' (second moments about 0.17 x 0.24 of the box).
    - The histogram: the brightness field is rank-mapped onto :data:`BRUSH_TEXTURE_QUANTILES`.

    The envelope widths were tuned so that A_final's statistics on real images match the
    authors' (``tests/test_synthesis.py``), the spill outside the lungs included.
    """
    rng = np.random.default_rng(seed)
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    v, u = yy / max(h - 1, 1), xx / max(w - 1, 1)  # 0..1
    scale = min(h, w) / BRUSH_TEXTURE_SIZE[0]  # feature sizes are tuned at the authors' size
    smoke = (
        _soft_noise(rng, (h, w), 9.0 * scale)
        + 0.6 * _soft_noise(rng, (h, w), 4.0 * scale)
        + 0.35 * _soft_noise(rng, (h, w), 1.5 * scale)
    )
    cy, cx = rng.uniform(0.62, 0.70), rng.uniform(0.45, 0.55)
    broad = np.exp(-(((v - cy) / 0.7) ** 2) - ((u - cx) / 0.9) ** 2)
    core = np.exp(-0.5 * (((v - cy) / 0.4) ** 2 + ((u - cx) / 0.5) ** 2))
    field = 0.35 * (smoke + 1.5) * broad

    # streaks: a few long, thin, slightly slanted strokes around the core, like one brush drag
    n_streaks = int(rng.integers(5, 9))
    angle0 = rng.uniform(-0.35, -0.1)
    for k in range(n_streaks):
        ang = angle0 + rng.normal(0.0, 0.06)
        length = rng.uniform(0.25, 0.5) * w
        thick = rng.uniform(1.2, 3.0) * scale
        xc, yc = (cx + rng.normal(0.0, 0.125)) * w, (cy + rng.normal(0.0, 0.125)) * h
        if k == n_streaks - 1:  # the brightest, long one just right of and below the centre
            length, thick, xc, yc = 0.4 * w, 3.2 * scale, (cx + 0.08) * w, (cy + 0.04) * h
        gain = 2.6 if k == n_streaks - 1 else rng.uniform(0.6, 1.6)
        ca, sa = math.cos(ang), math.sin(ang)
        dx, dy = xx - (xc + 0.5 * length * ca), yy - (yc + 0.5 * length * sa)
        along = -(dx * ca + dy * sa)  # distance back along the streak from its head
        across = -dx * sa + dy * ca
        taper = np.clip(along / (0.15 * length), 0, 1) * np.clip((length - along) / length, 0, 1)
        wobble = 1.0 + 0.3 * _soft_noise(rng, (h, w), 3.0 * scale)
        field += gain * taper * wobble * np.exp(-0.5 * (across / thick) ** 2) * core
    field += 0.02 * _soft_noise(rng, (h, w), 1.0)

    # support: the lowest coverage values become the transparent pixels
    q, val = np.array(BRUSH_TEXTURE_QUANTILES).T
    zero_fraction = q[np.flatnonzero(val > 0)[0] - 1]
    dist = np.sqrt(((v - cy) / max(cy, 1 - cy)) ** 2 + ((u - cx) / max(cx, 1 - cx)) ** 2)
    coverage = _soft_noise(rng, (h, w), 5.0 * scale) + 0.5 * smoke - 1.5 * dist
    flat = field.ravel().copy()
    flat[np.argsort(coverage.ravel(), kind="stable")[: int(round(zero_fraction * h * w))]] = -np.inf

    # shape the histogram: rank-map the field onto the target quantile curve
    ranks = np.empty(flat.size, np.float64)
    ranks[np.argsort(flat, kind="stable")] = (np.arange(flat.size) + 0.5) / flat.size
    tex = np.clip(np.round(np.interp(ranks, q, val).reshape(h, w)), 0, 255).astype(np.uint8)
    tex.setflags(write=False)
    return tex


def make_brush_texture(seed: int = 0, size: Sequence[int] = BRUSH_TEXTURE_SIZE) -> np.ndarray:
    """A procedural brush alpha texture (uint8, ``size = (height, width)``), cached per ``(seed, size)``.

    Smoky, streaky and mostly dark, with a histogram shaped like the authors' texture
    (:data:`BRUSH_TEXTURE_QUANTILES`). The returned array is read-only (it is cached).
    """
    height, width = int(size[0]), int(size[1])
    if height < 8 or width < 8:
        raise ValueError(f"brush texture size must be at least 8 x 8, got {tuple(size)}")
    return _make_brush_texture_cached(int(seed), height, width)


def load_brush_texture(path: Union[str, Path]) -> np.ndarray:
    """Load a user's brush texture image as an 8-bit grayscale alpha array (``H x W``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"brush texture image not found: {path}")
    with Image.open(path) as im:
        tex = np.array(im.convert("L"), dtype=np.uint8)
    if not tex.any():
        raise ValueError(f"brush texture {path} is fully transparent (all zero)")
    return tex


def resolve_brush_texture(brush_texture=None) -> np.ndarray:
    """``None`` -> procedural texture of seed 0; ``int`` -> procedural texture of that seed;
    ``str``/``Path`` -> an image file; a 2-D array -> used as is (cast to uint8)."""
    if brush_texture is None:
        return make_brush_texture(0)
    if isinstance(brush_texture, (int, np.integer)) and not isinstance(brush_texture, bool):
        return make_brush_texture(int(brush_texture))
    if isinstance(brush_texture, (str, Path)):
        return load_brush_texture(brush_texture)
    arr = np.asarray(brush_texture)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"brush texture must be a 2-D alpha array, got shape {arr.shape}")
    return np.clip(arr, 0, 255).astype(np.uint8)


def crop_to_nonzero(alpha: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Crop an alpha array to its non-zero box (like PIL ``getbbox``); returns (crop, (row0, col0)).

    An all-zero array is returned whole (PIL's ``crop(None)``)."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return alpha, (0, 0)
    cols = np.flatnonzero(alpha.any(axis=0))
    return alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], (int(rows[0]), int(cols[0]))


@functools.lru_cache(maxsize=1)
def pil_over_alpha_table() -> np.ndarray:
    """``T[s * 256 + d]`` = alpha of a source alpha ``s`` composited over a destination alpha ``d``
    with Pillow's integer ``alpha_composite`` rounding (``(s*255 + d*(255-s) + 128) / 255``)."""
    s = np.arange(256, dtype=np.int64)[:, None]
    d = np.arange(256, dtype=np.int64)[None, :]
    t = s * 255 + d * (255 - s) + 0x80
    out = ((t >> 8) + t) >> 8
    out = np.where(s == 0, d, out)
    table = out.astype(np.uint8).ravel()
    table.setflags(write=False)
    return table


class StampBank:
    """Pre-rendered jittered stamps of one brush size, built lazily and cached.

    The base brush is the texture cropped to its non-zero box, resized (bicubic) to
    ``base_width`` with its aspect kept (height ``int(width / ratio)``) and cropped again;
    a stamp of width ``w`` and angle ``a`` is that base resized to ``w`` (aspect of the base),
    cropped, rotated by ``a`` degrees counter-clockwise (bicubic, expanded canvas) and
    cropped, exactly as a PIL RGBA brush would be (PIL resamples the alpha of an RGBA
    image like an ``L`` image).

    Speed trick (documented approximation): rotation angles are quantized to
    ``angle_step`` degrees (default 5; the angle is uniform over 360 degrees and the texture
    is a soft blob, so this does not change the statistics), widths are exact integers. The
    cache holds at most ``max_bytes`` of stamps (oldest dropped first; a full bank takes about
    8 MiB at 256 x 256, 125 MiB at 1024 x 1024 with the width step of
    :func:`artasyn.synthesis.strokes.plan_strokes`). The per-threshold boxes of all cached stamps live in
    one numpy table, ``boxes[slot, t]``, so that :func:`stamp_pastes` places a batch of stamps
    with one fancy index.

    Args:
        texture: uint8 alpha texture (``H x W``).
        base_width: width of the base brush in pixels (80 or 50 at 256 x 256).
        angle_step: angle quantization in degrees.
        max_bytes: memory budget of the cache.
    """

    def __init__(
        self,
        texture: np.ndarray,
        base_width: int,
        angle_step: float = STAMP_ANGLE_STEP,
        max_bytes: int = STAMP_CACHE_BYTES,
    ):
        tex, _ = crop_to_nonzero(np.asarray(texture, dtype=np.uint8))
        self.texture = tex
        ratio = tex.shape[1] / tex.shape[0]
        base_width = max(int(base_width), 1)
        base_h = max(int(base_width / ratio), 1)
        base = np.asarray(Image.fromarray(tex).resize((base_width, base_h), Image.BICUBIC))
        self.base, _ = crop_to_nonzero(base)
        self.base_image = Image.fromarray(np.ascontiguousarray(self.base))
        self.ratio = self.base.shape[1] / self.base.shape[0]
        self.angle_step = float(angle_step)
        self.n_angles = max(1, int(round(360.0 / self.angle_step)))
        self.max_bytes = int(max_bytes)
        self._cache: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self._bytes = 0
        self._thresholds = np.arange(1, 256, dtype=np.int32)
        # per cached stamp (by slot): boxes[slot, t] = (row0, row1, col0, col1, height, width);
        # one numpy table, so that a batch of stamps is placed with one fancy index
        self.boxes = np.zeros((0, 256, 6), dtype=np.int32)
        self._free: list[int] = []

    @property
    def width(self) -> int:
        """Width of the base brush after cropping (the jitter range refers to it)."""
        return int(self.base.shape[1])

    @property
    def height(self) -> int:
        return int(self.base.shape[0])

    def angle_bin(self, angles: np.ndarray) -> np.ndarray:
        """Quantize angles (degrees) to bin indices."""
        return np.round(np.asarray(angles, dtype=np.float64) / self.angle_step).astype(np.int64) % self.n_angles

    def _render(self, width: int, abin: int):
        h = max(int(width / self.ratio), 1)
        im = self.base_image.resize((width, h), Image.BICUBIC)
        arr, _ = crop_to_nonzero(np.asarray(im))
        im = Image.fromarray(np.ascontiguousarray(arr)).rotate(
            abin * self.angle_step, resample=Image.BICUBIC, expand=True
        )
        arr, _ = crop_to_nonzero(np.asarray(im))
        arr = np.ascontiguousarray(arr)
        # box of the pixels whose floored alpha stays > 0, for every threshold t = 1..255:
        # rows (first, last), cols (first, last); all -1 when nothing reaches t
        t = self._thresholds
        boxes = np.full((256, 4), -1, dtype=np.int32)
        for k, prof in enumerate((arr.max(axis=1), arr.max(axis=0))):
            n = prof.size
            first = np.searchsorted(np.maximum.accumulate(prof.astype(np.int32)), t, side="left")
            last = n - 1 - np.searchsorted(np.maximum.accumulate(prof[::-1].astype(np.int32)), t, side="left")
            ok = first < n
            boxes[1:, 2 * k] = np.where(ok, first, -1)
            boxes[1:, 2 * k + 1] = np.where(ok, last, -1)
        boxes[0] = (0, arr.shape[0] - 1, 0, arr.shape[1] - 1)
        return arr, boxes

    def _slot(self) -> int:
        if not self._free:
            n = len(self.boxes)
            grown = np.zeros((max(2 * n, 64), 256, 6), dtype=np.int32)
            grown[:n] = self.boxes
            self.boxes = grown
            self._free = list(range(len(grown) - 1, n - 1, -1))
        return self._free.pop()

    def get(self, width: int, abin: int):
        """The stamp of integer ``width`` and angle bin ``abin``: ``(alpha uint8 array, slot, PIL core
        image)``; ``self.boxes[slot, t] = (row0, row1, col0, col1, height, width)``: the non-zero box
        (inclusive) of ``alpha >= t`` (all -1 when nothing reaches t) and the stamp's size."""
        key = (int(width), int(abin))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        arr, boxes = self._render(*key)
        slot = self._slot()
        self.boxes[slot, :, :4] = boxes
        self.boxes[slot, :, 4:] = arr.shape
        item = (arr, slot, Image.fromarray(arr).im)
        self._cache[key] = item
        self._bytes += item[0].nbytes + self.boxes[0].nbytes
        while self._bytes > self.max_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old[0].nbytes + self.boxes[0].nbytes
            self._free.append(old[1])
        return item


#: opacities are quantized to 1/OPACITY_LEVELS for the floor look-up tables (cached); the
#: floored alpha int(p * opacity) then differs by at most 1, for under 3% of pixels
OPACITY_LEVELS = 4096
_LUT_CACHE: dict[int, list] = {}


def _floor_lut(level: int) -> list:
    lut = _LUT_CACHE.get(level)
    if lut is None:
        lut = ((np.arange(256) * level) // OPACITY_LEVELS).clip(0, 255).tolist()
        _LUT_CACHE[level] = lut
    return lut


def paint_stamps(
    canvas: Image.Image,
    bank: StampBank,
    xs: Sequence[float],
    ys: Sequence[float],
    widths: Sequence[int],
    angles: Sequence[float],
    opacity: Sequence[float],
) -> tuple[int, int, int, int] | None:
    """Composite stamps, in order, "over" the alpha ``canvas`` (a PIL ``L`` image, modified in place).

    Stamp ``i`` is the bank's stamp of ``widths[i]`` and ``angles[i]`` (degrees) whose alpha is
    floored to ``int(p * opacity[i])`` (opacity = opacity * flow of the jitter), cropped to its
    non-zero box of size ``w x h`` and placed with its top-left corner at
    ``(int(xs[i] - w/2), int(ys[i] - h/2))`` (x = column, y = row), clipped to the canvas.
    The alpha arithmetic is exactly Pillow's ``alpha_composite`` (a masked paste of 255 has the
    same integer rounding). Returns the painted box ``(row0, row1, col0, col1)`` (exclusive
    ends) or None when nothing was painted.
    """
    W, H = canvas.size
    boxes, cores, luts, _ = stamp_pastes(bank, xs, ys, widths, angles, opacity, (H, W))
    paste = canvas.im.paste
    for box, core, lut in zip(boxes.tolist(), cores, luts):
        paste(255, box, core.point(lut, None))
    return painted_box(boxes, (H, W))


def stamp_pastes(
    bank: StampBank,
    xs: Sequence[float],
    ys: Sequence[float],
    widths: Sequence[int],
    angles: Sequence[float],
    opacity: Sequence[float],
    shape: Sequence[int],
) -> tuple[list, list, list, np.ndarray]:
    """The pastes that :func:`paint_stamps` does, computed for many stamps at once: the canvas
    boxes ``[left, top, right, bottom]`` (``K x 4`` int64 array), the stamps' PIL core images, the floor look-up tables,
    and the indices of the kept stamps (stamps that floor to nothing or miss the canvas of
    ``shape = (H, W)`` are dropped). Paste ``i`` is
    ``canvas.im.paste(255, boxes[i], cores[i].point(luts[i], None))``, in order."""
    H, W = int(shape[0]), int(shape[1])
    n = len(xs)
    if n == 0:
        return np.zeros((0, 4), np.int64), [], [], np.zeros(0, np.int64)
    abins = bank.angle_bin(angles).tolist()
    levels = np.round(np.asarray(opacity, dtype=np.float64) * OPACITY_LEVELS).astype(np.int64)
    # smallest p with int(p * opacity) >= 1 (0: nothing survives)
    thresh = np.where(levels > 0, -(-OPACITY_LEVELS // np.maximum(levels, 1)), 0)
    thresh = np.where(thresh > 255, 0, thresh)
    # the stamps (rendered on a cache miss) and their boxes at the opacity's threshold, gathered
    # in one Python pass; the placement arithmetic is vectorized
    get, cached = bank.get, bank._cache.get
    items = [cached(k) or get(*k) for k in zip(widths, abins)]
    slots = np.fromiter([it[1] for it in items], dtype=np.int64, count=n)
    geo = bank.boxes[slots, thresh].astype(np.int64)
    br0, br1, bc0, bc1, sh, sw = geo.T
    # top-left of the non-zero box at (int(x - w/2), int(y - h/2)) (Python's int() truncates)
    top = np.trunc(np.asarray(ys, np.float64) - (br1 - br0 + 1) / 2).astype(np.int64) - br0
    left = np.trunc(np.asarray(xs, np.float64) - (bc1 - bc0 + 1) / 2).astype(np.int64) - bc0
    keep = np.flatnonzero((thresh > 0) & (br0 >= 0) & (top < H) & (left < W) & (top + sh > 0) & (left + sw > 0))
    boxes = np.stack([left[keep], top[keep], left[keep] + sw[keep], top[keep] + sh[keep]], axis=1)
    cores = [items[i][2] for i in keep.tolist()]
    lut_cache = _LUT_CACHE
    luts = [lut_cache.get(lv) or _floor_lut(lv) for lv in levels[keep].tolist()]
    return boxes, cores, luts, keep


def painted_box(boxes: Sequence[Sequence[int]], shape: Sequence[int]) -> tuple[int, int, int, int] | None:
    """The box ``(row0, row1, col0, col1)`` (exclusive ends, clipped to ``shape``) covered by paste
    boxes ``[left, top, right, bottom]`` (``K x 4``); None when there are none or they miss the canvas."""
    b = np.asarray(boxes).reshape(-1, 4)
    if len(b) == 0:
        return None
    r_lo, c_lo = max(int(b[:, 1].min()), 0), max(int(b[:, 0].min()), 0)
    r_hi, c_hi = min(int(b[:, 3].max()), int(shape[0])), min(int(b[:, 2].max()), int(shape[1]))
    if r_lo >= r_hi or c_lo >= c_hi:
        return None
    return r_lo, r_hi, c_lo, c_hi
