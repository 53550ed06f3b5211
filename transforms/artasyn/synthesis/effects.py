"""T_blur, T_cryst and the layer composition of ART-ASyn (``docs/method.md`` sections 2.2, 2.3).

Anomaly layers are **2 x H x W float32 "LA" layers** (gray colour, alpha; 0..255, not
premultiplied, integer values; see :mod:`artasyn.base`): every step rounds as the authors'
8-bit PIL RGBA pipeline does, so that the statistics of the synthesized anomalies match theirs.

- :class:`LayerGaussianBlur` (T_blur): Pillow's ``GaussianBlur`` (``radius`` is the standard
  deviation, approximated by three extended box blurs) on each channel independently, the
  colour channel included, so the colour fades to black at the blurred fringe as in the
  authors' RGBA blur.
- :class:`RandCrystallize` (T_cryst): Voronoi crystallization; ``num_seeds`` random seeds,
  every pixel joins its nearest seed (Euclidean distance transform with indices), every
  channel, alpha included, becomes its cell mean (floored to an integer). Zero-colour
  pixels count in the colour mean, as in the authors' code.
- :class:`ComposeAnomalyLayers`: scale the alphas (A x 0.4, C x 0.5, Cb x 0.5, floored) and
  composite "over" A in the order B, C, Cb, C, B with Pillow's integer ``alpha_composite``.

The dictionary versions (``...d``) read and write layers under key names (defaults:
``"anomaly_layer"`` for A and the composed Z, ``"anomaly_blur"`` for B, ``"anomaly_cryst"`` for
C, ``"anomaly_cryst_blur"`` for Cb).

Example::

    >>> import numpy as np
    >>> from artasyn.synthesis.effects import LayerGaussianBlur, RandCrystallize, ComposeAnomalyLayers
    >>> a = np.zeros((2, 64, 64), np.float32); a[:, 20:40, 20:40] = np.array([200, 120])[:, None, None]
    >>> b = LayerGaussianBlur(radius=8)(a)
    >>> c = RandCrystallize(num_seeds=50).set_random_state(0)(a)
    >>> z = ComposeAnomalyLayers()(a, b, c, LayerGaussianBlur(radius=3)(c))
    >>> z.shape
    (2, 64, 64)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends
from PIL import Image, ImageFilter
from scipy import ndimage

from ..base import REFERENCE_SIZE, as_layer, clip_uint8, float32_like, size_scale
from ..constants import (
    BASE_ALPHA_SCALE,
    BLUR_ALPHA_SCALE,
    BLUR_RADIUS,
    COMPOSE_ORDER,
    CRYST_ALPHA_SCALE,
    CRYST_BLUR_ALPHA_SCALE,
    NUM_CRYST_SEEDS,
)

__all__ = [
    "REFERENCE_SIZE",
    "size_scale",
    "as_layer",
    "pil_gaussian_blur",
    "crystallize",
    "pil_over",
    "floor_scale",
    "compose_layers",
    "LayerGaussianBlur",
    "RandCrystallize",
    "ComposeAnomalyLayers",
    "LayerGaussianBlurd",
    "RandCrystallized",
    "ComposeAnomalyLayersd",
    "LayerGaussianBlurD",
    "LayerGaussianBlurDict",
    "RandCrystallizeD",
    "RandCrystallizeDict",
    "ComposeAnomalyLayersD",
    "ComposeAnomalyLayersDict",
]


def pil_gaussian_blur(layer: np.ndarray, radius: float) -> np.ndarray:
    """Pillow ``GaussianBlur(radius)`` (standard deviation ``radius``, three box passes, edge pixels
    extended) of each channel of a C x H x W layer in 0..255; returns float32 integer values."""
    if radius <= 0:
        return layer.astype(np.float32, copy=True)
    flt = ImageFilter.GaussianBlur(radius=float(radius))
    out = np.empty(layer.shape, np.float32)
    for c in range(layer.shape[0]):
        out[c] = np.asarray(Image.fromarray(clip_uint8(layer[c])).filter(flt))
    return out


def voronoi_labels(shape: Sequence[int], seeds_rc: np.ndarray) -> np.ndarray:
    """Index of the nearest seed (Euclidean) of every pixel of an ``H x W`` grid; ``seeds_rc`` is
    ``N x 2`` integer (row, col). Coincident seeds: the last one owns the cell."""
    h, w = int(shape[0]), int(shape[1])
    ids = np.full((h, w), -1, dtype=np.int64)
    ids[seeds_rc[:, 0], seeds_rc[:, 1]] = np.arange(len(seeds_rc))
    ir, ic = ndimage.distance_transform_edt(ids < 0, return_distances=False, return_indices=True)
    return ids[ir, ic]


def crystallize(layer: np.ndarray, seeds_rc: np.ndarray) -> np.ndarray:
    """Replace every channel of a C x H x W layer by its Voronoi cell mean (floored), cells given by
    the seed points ``seeds_rc`` (``N x 2``, row, col)."""
    labels = voronoi_labels(layer.shape[-2:], seeds_rc).ravel()
    n = len(seeds_rc)
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    counts[counts == 0] = 1.0
    out = np.empty(layer.shape, np.float32)
    for c in range(layer.shape[0]):
        means = np.floor(np.bincount(labels, weights=layer[c].ravel(), minlength=n) / counts + 1e-9)
        out[c] = means.astype(np.float32)[labels].reshape(layer.shape[-2:])
    return out


def floor_scale(alpha: np.ndarray, factor: float) -> np.ndarray:
    """``int(p * factor)`` for every alpha value (Pillow ``point`` with a floored lambda)."""
    lut = np.floor(np.arange(256, dtype=np.float64) * float(factor)).clip(0, 255).astype(np.float32)
    return lut[clip_uint8(alpha)]


def pil_over(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """LA layer ``src`` composited "over" ``dst`` with Pillow's integer ``alpha_composite`` arithmetic
    (7 bits of extra precision, rounded divisions), in numpy. Both 2 x ... float32 integer-valued.
    (:func:`compose_layers` lets Pillow do the same, faster.)"""
    sc, sa = src[0].astype(np.int64), src[1].astype(np.int64)
    dc, da = dst[0].astype(np.int64), dst[1].astype(np.int64)
    outa255 = sa * 255 + da * (255 - sa)
    coef1 = (sa * (255 * 255 * 128)) // np.maximum(outa255, 1)
    coef2 = 255 * 128 - coef1
    t = sc * coef1 + dc * coef2 + (0x80 << 7)
    oc = (((t >> 8) + t) >> 8) >> 7
    t = outa255 + 0x80
    oa = ((t >> 8) + t) >> 8
    keep = sa == 0
    out = np.empty(dst.shape, np.float32)
    out[0] = np.where(keep, dc, oc)
    out[1] = np.where(keep, da, oa)
    return out


def compose_layers(
    base: np.ndarray,
    blur: np.ndarray | None = None,
    cryst: np.ndarray | None = None,
    cryst_blur: np.ndarray | None = None,
    base_scale: float = BASE_ALPHA_SCALE,
    blur_scale: float = BLUR_ALPHA_SCALE,
    cryst_scale: float = CRYST_ALPHA_SCALE,
    cryst_blur_scale: float = CRYST_BLUR_ALPHA_SCALE,
    order: Sequence[str] = COMPOSE_ORDER,
) -> np.ndarray:
    """Section 2.3 on numpy LA layers: scale each layer's alpha (floored), then composite the
    layers named in ``order`` over the scaled base. Missing (None) layers are skipped.
    Only the box where any layer has alpha is computed."""
    layers = {"blur": blur, "cryst": cryst, "cryst_blur": cryst_blur}
    scales = {"blur": blur_scale, "cryst": cryst_scale, "cryst_blur": cryst_blur_scale}
    for name in order:
        if name not in layers:
            raise ValueError(f"unknown layer name {name!r} in order; use 'blur', 'cryst', 'cryst_blur'")
    present = [b for b in (base, blur, cryst, cryst_blur) if b is not None]
    for p in present:
        if p.shape != base.shape:
            raise ValueError(f"all layers must have the base layer's shape {base.shape}, got {p.shape}")
    out = np.zeros(base.shape, np.float32)
    any_alpha = np.zeros(base.shape[1:], bool)
    for p in present:
        any_alpha |= p[1] > 0
    rows, cols = np.flatnonzero(any_alpha.any(1)), np.flatnonzero(any_alpha.any(0))
    if rows.size == 0:
        return out
    box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))

    def rgba(layer, f):
        """An RGBA Pillow image (gray colour, alpha floored to int(a * f)) of the boxed layer."""
        sub = clip_uint8(layer[box])
        c = Image.fromarray(np.ascontiguousarray(sub[0]))
        a = Image.fromarray(np.ascontiguousarray(sub[1]))
        if f != 1.0:
            a = a.point(np.floor(np.arange(256) * float(f)).clip(0, 255).astype(np.int64).tolist())
        return Image.merge("RGBA", (c, c, c, a))

    # Pillow's own alpha_composite: exactly the authors' integer arithmetic
    z = rgba(base, base_scale)
    cache = {}
    for name in order:
        if layers[name] is None:
            continue
        if name not in cache:
            cache[name] = rgba(layers[name], scales[name])
        z = Image.alpha_composite(z, cache[name])
    zz = np.asarray(z)
    out[(0, *box[1:])] = zz[..., 0]
    out[(1, *box[1:])] = zz[..., 3]
    return out


class LayerGaussianBlur(Transform):
    """T_blur (section 2.2): Pillow-semantics Gaussian blur of every channel of a layer.

    Args:
        radius: Pillow ``GaussianBlur`` radius (its standard deviation) at the reference size;
            8 for B, 3 for Cb (paper values).
        reference_size: image size at which ``radius`` is given; the radius scales with
            ``sqrt(H * W) / reference_size``. ``None`` keeps it fixed.

    Input/output: 2 x H x W LA layer (0..255), numpy or torch; the output has the input's type.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, radius: float = BLUR_RADIUS, reference_size: int | None = REFERENCE_SIZE) -> None:
        self.radius = float(radius)
        self.reference_size = reference_size

    def effective_radius(self, shape: Sequence[int]) -> float:
        return self.radius * size_scale(shape, self.reference_size)

    def __call__(self, layer):
        arr = as_layer(layer)
        out = pil_gaussian_blur(arr, self.effective_radius(arr.shape))
        return float32_like(out, layer)


class RandCrystallize(RandomizableTransform):
    """T_cryst (section 2.2): Voronoi crystallization of a layer with random seeds.

    Args:
        num_seeds: number of seed points at the reference size (paper: 500); scaled by the
            image area relative to ``reference_size**2`` so that cells keep their size.
        prob: probability of applying (else the layer is returned unchanged).
        reference_size: ``None`` keeps ``num_seeds`` fixed.

    Seeds are uniform integer (row, col) points of the grid (coincident seeds allowed, as in
    the authors' code); each pixel joins its nearest seed; each channel becomes its cell mean.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, num_seeds: int = NUM_CRYST_SEEDS, prob: float = 1.0, reference_size: int | None = REFERENCE_SIZE
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.num_seeds = int(num_seeds)
        self.reference_size = reference_size
        self._seeds: np.ndarray | None = None

    def effective_num_seeds(self, shape: Sequence[int]) -> int:
        if not self.reference_size:
            return self.num_seeds
        return max(1, int(round(self.num_seeds * size_scale(shape, self.reference_size) ** 2)))

    def randomize(self, shape: Sequence[int]) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        h, w = int(shape[-2]), int(shape[-1])
        n = self.effective_num_seeds(shape)
        self._seeds = np.stack([self.R.randint(0, h, size=n), self.R.randint(0, w, size=n)], axis=1)

    def __call__(self, layer, randomize: bool = True):
        arr = as_layer(layer)
        if randomize:
            self.randomize(arr.shape)
        if not self._do_transform or self._seeds is None:
            return layer
        out = crystallize(arr, self._seeds)
        return float32_like(out, layer)


class ComposeAnomalyLayers(Transform):
    """Layer composition (section 2.3): ``Z = A*0.4 <- B <- C*0.5 <- Cb*0.5 <- C*0.5 <- B``.

    ``__call__(base, blur=None, cryst=None, cryst_blur=None)`` takes 2 x H x W LA layers; a
    missing layer is skipped (so a chain may drop T_blur or T_cryst). Alpha scalings are
    floored like the authors' ``int(p * factor)``; compositing uses Pillow's integer
    ``alpha_composite``. Output: the composed layer Z, with the base layer's type.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        base_scale: float = BASE_ALPHA_SCALE,
        blur_scale: float = BLUR_ALPHA_SCALE,
        cryst_scale: float = CRYST_ALPHA_SCALE,
        cryst_blur_scale: float = CRYST_BLUR_ALPHA_SCALE,
        order: Sequence[str] = COMPOSE_ORDER,
    ) -> None:
        self.kwargs = dict(
            base_scale=base_scale,
            blur_scale=blur_scale,
            cryst_scale=cryst_scale,
            cryst_blur_scale=cryst_blur_scale,
            order=tuple(order),
        )

    def __call__(self, base, blur=None, cryst=None, cryst_blur=None):
        arrs = [
            None if x is None else as_layer(x, n)
            for x, n in zip((base, blur, cryst, cryst_blur), ("base", "blur", "cryst", "cryst_blur"))
        ]
        out = compose_layers(*arrs, **self.kwargs)
        return float32_like(out, base)


class LayerGaussianBlurd(MapTransform):
    """Dictionary :class:`LayerGaussianBlur`: blur ``d[key]`` into ``d[output_key]`` (default: in place)."""

    backend = LayerGaussianBlur.backend

    def __init__(
        self,
        keys: KeysCollection = "anomaly_layer",
        radius: float = BLUR_RADIUS,
        output_keys: KeysCollection | None = None,
        reference_size: int | None = REFERENCE_SIZE,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = (
            self.keys if output_keys is None else tuple([output_keys] if isinstance(output_keys, str) else output_keys)
        )
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"output_keys {self.output_keys} must match keys {self.keys} in length")
        self.blur = LayerGaussianBlur(radius=radius, reference_size=reference_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.blur(d[key])
        return d


class RandCrystallized(RandomizableTransform, MapTransform):
    """Dictionary :class:`RandCrystallize`: crystallize ``d[key]`` into ``d[output_key]``
    (default ``"anomaly_cryst"``); one seed set per call, shared by all keys."""

    backend = RandCrystallize.backend

    def __init__(
        self,
        keys: KeysCollection = "anomaly_layer",
        num_seeds: int = NUM_CRYST_SEEDS,
        prob: float = 1.0,
        output_keys: KeysCollection | None = "anomaly_cryst",
        reference_size: int | None = REFERENCE_SIZE,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.output_keys = (
            self.keys if output_keys is None else tuple([output_keys] if isinstance(output_keys, str) else output_keys)
        )
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"output_keys {self.output_keys} must match keys {self.keys} in length")
        self.cryst = RandCrystallize(num_seeds=num_seeds, prob=1.0, reference_size=reference_size)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.cryst.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        first = self.first_key(d)
        if first == ():
            return d
        if self._do_transform:
            self.cryst.randomize(as_layer(d[first]).shape)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.cryst(d[key], randomize=False) if self._do_transform else d[key]
        return d


class ComposeAnomalyLayersd(MapTransform):
    """Dictionary :class:`ComposeAnomalyLayers`: reads the layers under ``keys`` (the base A),
    ``blur_key``, ``cryst_key``, ``cryst_blur_key`` (each may be absent or None: skipped) and
    writes Z to ``output_key`` (default: the base key, in place). With ``remove_inputs`` the
    B, C, Cb layers are deleted from the dict afterwards."""

    backend = ComposeAnomalyLayers.backend

    def __init__(
        self,
        keys: KeysCollection = "anomaly_layer",
        blur_key: str | None = "anomaly_blur",
        cryst_key: str | None = "anomaly_cryst",
        cryst_blur_key: str | None = "anomaly_cryst_blur",
        output_key: str | None = None,
        remove_inputs: bool = True,
        allow_missing_keys: bool = False,
        **compose_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.blur_key, self.cryst_key, self.cryst_blur_key = blur_key, cryst_key, cryst_blur_key
        self.output_key = output_key
        self.remove_inputs = remove_inputs
        self.compose = ComposeAnomalyLayers(**compose_kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        extra = [d.get(k) if k is not None else None for k in (self.blur_key, self.cryst_key, self.cryst_blur_key)]
        for key in self.key_iterator(d):
            d[self.output_key or key] = self.compose(d[key], *extra)
        if self.remove_inputs:
            for k in (self.blur_key, self.cryst_key, self.cryst_blur_key):
                if k is not None:
                    d.pop(k, None)
        return d


LayerGaussianBlurD = LayerGaussianBlurDict = LayerGaussianBlurd
RandCrystallizeD = RandCrystallizeDict = RandCrystallized
ComposeAnomalyLayersD = ComposeAnomalyLayersDict = ComposeAnomalyLayersd
