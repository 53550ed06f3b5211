"""T_rib: anatomy-aware alpha scaling of the anomaly layer (``docs/method.md`` section 2.4).

- Soft lung mask ``S``: the binary lung (label map ``> 0``) dilated with a 7 x 7 square, then a
  Gaussian of kernel 31 x 31 and sigma 5.0 (OpenCV's sigma for that kernel size), border
  mirrored without repeating the edge pixel (OpenCV's default ``BORDER_REFLECT_101`` = scipy
  ``mode="mirror"``); values in [0, 1].
- Rib contrast ``R = 0.5 * I / 255 + 0.5``.
- New alpha: ``uint8(clip(alpha * R * S, 0, 255))`` (truncated), then a brightness
  enhancement by 1.5 (Pillow ``ImageEnhance.Brightness``: a blend with a black image,
  ``floor(1.5 * a)`` clipped to 255). The colour channel is unchanged.

Layers are 2 x H x W float32 "LA" layers (gray colour, alpha; 0..255), see :mod:`artasyn.base`.
Sizes (dilation, kernel, sigma) scale with ``sqrt(H * W) / 256``.

Example::

    >>> import numpy as np
    >>> from artasyn.synthesis.anatomy import RibIntensityScale
    >>> img = np.full((1, 64, 64), 128, np.uint8); lung = np.zeros((1, 64, 64)); lung[0, 20:40, 10:30] = 1
    >>> layer = np.zeros((2, 64, 64), np.float32); layer[:, 15:45, 5:35] = np.array([200, 100])[:, None, None]
    >>> RibIntensityScale()(layer, img, lung).shape
    (2, 64, 64)
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from scipy import ndimage

from ..base import (
    REFERENCE_SIZE,
    as_layer,
    check_image_and_lung,
    check_layer_shape,
    clip_uint8,
    float32_like,
    size_scale,
    to_uint8,
)
from ..constants import ALPHA_BRIGHTNESS, LUNG_DILATION, RIB_WEIGHT, SOFT_MASK_KERNEL, SOFT_MASK_SIGMA

_SOFT_CACHE: dict = {}

__all__ = [
    "soft_lung_mask",
    "rib_scale_alpha",
    "check_image_and_lung",
    "RibIntensityScale",
    "RibIntensityScaled",
    "RibIntensityScaleD",
    "RibIntensityScaleDict",
]


def soft_lung_mask(
    lung: np.ndarray,
    dilation: int = LUNG_DILATION,
    kernel_size: int = SOFT_MASK_KERNEL,
    sigma: float = SOFT_MASK_SIGMA,
    reference_size: int | None = REFERENCE_SIZE,
) -> np.ndarray:
    """Soft lung mask S (float32, H x W, 0..1, read-only) of a lung label map (lung = ``> 0``).

    The last 16 masks are cached by a hash of the lung (twins of one image share it).
    ``dilation`` (square side), ``kernel_size`` and ``sigma`` are given at ``reference_size``
    and scale with ``sqrt(H * W) / reference_size`` (odd sizes kept)."""
    binary = np.asarray(lung) > 0
    s = size_scale(binary.shape, reference_size)
    dil = max(1, int(round(dilation * s)) | 1)
    half = max(0, int(round((kernel_size // 2) * s)))
    sig = float(sigma) * s
    if not binary.any():
        return np.zeros(binary.shape, np.float32)
    key = hashlib.blake2b(
        np.packbits(binary).tobytes() + repr((binary.shape, dil, half, sig)).encode(), digest_size=16
    ).digest()
    hit = _SOFT_CACHE.get(key)
    if hit is not None:
        return hit
    # everything is computed on the lung's box plus the dilation and kernel radii: the same
    # values as on the whole image (the band around the box is zero, or the box reaches the
    # image edge, where the dilation sees background and the blur mirrors the image)
    rows, cols = np.flatnonzero(binary.any(1)), np.flatnonzero(binary.any(0))
    m = dil // 2 + half + 1
    box = (slice(max(rows[0] - m, 0), rows[-1] + 1 + m), slice(max(cols[0] - m, 0), cols[-1] + 1 + m))
    u8 = binary[box].astype(np.uint8)
    if dil > 1:  # square dilation (separable); outside the image counts as background
        u8 = ndimage.maximum_filter(u8, size=dil, mode="constant", cval=0)
    out = np.zeros(binary.shape, np.float32)
    if sig > 0:
        out[box] = ndimage.gaussian_filter(
            u8.astype(np.float32), sigma=sig, mode="mirror", truncate=(half + 0.25) / sig
        )
    else:
        out[box] = u8
    out = np.clip(out, 0.0, 1.0)
    out.setflags(write=False)
    if len(_SOFT_CACHE) >= 16:
        _SOFT_CACHE.pop(next(iter(_SOFT_CACHE)))
    _SOFT_CACHE[key] = out
    return out


def rib_scale_alpha(
    alpha: np.ndarray,
    image: np.ndarray,
    soft_mask: np.ndarray | None,
    rib_weight: float = RIB_WEIGHT,
    brightness: float = ALPHA_BRIGHTNESS,
    use_rib: bool = True,
) -> np.ndarray:
    """New alpha of T_rib: ``floor(min(255, brightness * uint8(clip(alpha * R * S))))`` with
    ``R = rib_weight * I/255 + (1 - rib_weight)`` (``use_rib=False``: R = 1; ``soft_mask=None``: S = 1)."""
    a = alpha.astype(np.float32)
    if use_rib:
        r = np.float32(rib_weight) * np.clip(image.astype(np.float32) / np.float32(255.0), 0, 1) + np.float32(
            1.0 - rib_weight
        )
        a = a * r
    if soft_mask is not None:
        a = a * soft_mask
    a = clip_uint8(a).astype(np.float32)
    if brightness != 1.0:
        a = np.clip(np.floor(a * np.float32(brightness)), 0, 255)
    return a


class RibIntensityScale(Transform):
    """T_rib (section 2.4): scale the alpha of an anomaly layer by the rib contrast R and the soft
    lung mask S, then brighten it by ``brightness``.

    Args:
        dilation: side of the square dilating the lung (7 at 256 x 256).
        kernel_size: Gaussian kernel size of the soft mask (31).
        sigma: Gaussian sigma of the soft mask (5.0).
        rib_weight: weight of the image in R (0.5: ``R = 0.5 * I/255 + 0.5``).
        brightness: brightness factor of the alpha (1.5).
        use_rib: apply R (``False``: lung mask only, as the ``base`` variant uses).
        reference_size: size at which the pixel constants are given (``None``: fixed).

    ``__call__(layer, image, lung)``: ``layer`` 2 x H x W LA, ``image`` 1 x H x W in 0..255,
    ``lung`` 1 x H x W label map. Returns the layer (input's type) with the new alpha.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        dilation: int = LUNG_DILATION,
        kernel_size: int = SOFT_MASK_KERNEL,
        sigma: float = SOFT_MASK_SIGMA,
        rib_weight: float = RIB_WEIGHT,
        brightness: float = ALPHA_BRIGHTNESS,
        use_rib: bool = True,
        reference_size: int | None = REFERENCE_SIZE,
    ) -> None:
        self.dilation, self.kernel_size, self.sigma = dilation, kernel_size, sigma
        self.rib_weight, self.brightness, self.use_rib = rib_weight, brightness, use_rib
        self.reference_size = reference_size

    def soft_mask(self, lung: np.ndarray) -> np.ndarray:
        return soft_lung_mask(lung, self.dilation, self.kernel_size, self.sigma, self.reference_size)

    def __call__(self, layer, image, lung, soft_mask: np.ndarray | None = None):
        arr = as_layer(layer)
        im, lu = check_image_and_lung(image, lung)
        check_layer_shape(arr, tuple(image.shape))
        s = self.soft_mask(lu) if soft_mask is None else soft_mask
        out = arr.copy()
        out[1] = rib_scale_alpha(arr[1], to_uint8(im), s, self.rib_weight, self.brightness, self.use_rib)
        return float32_like(out, layer)


class RibIntensityScaled(MapTransform):
    """Dictionary :class:`RibIntensityScale`: rescales the layer(s) under ``keys`` (default
    ``"anomaly_layer"``) using ``d[image_key]`` and ``d[lung_key]``."""

    backend = RibIntensityScale.backend

    def __init__(
        self,
        keys: KeysCollection = "anomaly_layer",
        image_key: str = "image",
        lung_key: str = "lung",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.lung_key = image_key, lung_key
        self.scaler = RibIntensityScale(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        check_image_and_lung(d[self.image_key], d[self.lung_key], self.image_key, self.lung_key)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key], d[self.image_key], d[self.lung_key])
        return d


RibIntensityScaleD = RibIntensityScaleDict = RibIntensityScaled
