"""Compositing the anomaly layer over the image, and the anomaly mask (``docs/method.md`` section 2.5).

The synthetic image is the anomaly layer Z composited "over" the healthy image I (opaque),
with Pillow's integer ``alpha_composite`` arithmetic, then the per-pixel maximum with I: the
anomaly can only brighten the image. The anomaly mask is ``alpha(Z) > 80``.

For a non-integer (float) image the brightening ``max(0, over(Z, round(I)) - round(I))`` is
computed on the 8-bit image and added to the original values, so unpainted pixels are left
exactly as they were and nothing is ever darkened.

Example::

    >>> import numpy as np
    >>> from artasyn.synthesis.composite import CompositeAnomaly
    >>> img = np.full((1, 32, 32), 60, np.uint8)
    >>> z = np.zeros((2, 32, 32), np.float32); z[:, 8:24, 8:24] = np.array([200, 150])[:, None, None]
    >>> out, mask = CompositeAnomaly()(img, z)
    >>> int(out.max()), float(mask.sum())
    (142, 256.0)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

from ..base import as_layer, check_layer_shape, float32_like, to_uint8
from ..constants import MASK_THRESHOLD

__all__ = [
    "brighten_over",
    "composite_over_image",
    "anomaly_mask",
    "CompositeAnomaly",
    "CompositeAnomalyd",
    "CompositeAnomalyD",
    "CompositeAnomalyDict",
]


def brighten_over(image_u8: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Brightening (>= 0, integer-valued int32) that "over"-compositing a layer of ``colour`` and
    ``alpha`` (0..255) onto the opaque uint8 ``image_u8`` gives, followed by the maximum with
    the image (Pillow ``alpha_composite`` then ``ImageChops.lighter``)."""
    i = image_u8.astype(np.int32)
    a = np.clip(alpha, 0, 255).astype(np.int32)
    c = np.clip(colour, 0, 255).astype(np.int32)
    # over an opaque background Pillow's coefficients reduce to coef1 = a * 128
    coef1 = a << 7
    t = c * coef1 + i * ((255 << 7) - coef1) + (0x80 << 7)
    out = (((t >> 8) + t) >> 8) >> 7
    return np.maximum(out - i, 0)


def composite_over_image(image: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """H x W image (0..255, any real dtype) with the LA ``layer`` composited over it, never darker."""
    img_u8 = to_uint8(image)
    delta = brighten_over(img_u8, layer[0], layer[1])
    if image.dtype == np.uint8:
        return (img_u8.astype(np.int32) + delta).astype(np.uint8)
    return image + delta.astype(image.dtype)


def anomaly_mask(alpha: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Binary float32 mask ``alpha > threshold``."""
    return (np.asarray(alpha) > threshold).astype(np.float32)


class CompositeAnomaly(Transform):
    """Section 2.5: composite an anomaly layer over a 1 x H x W image and threshold its alpha.

    Args:
        threshold: the mask is ``alpha > threshold`` (80 of 255).

    ``__call__(image, layer)`` returns ``(synthetic image, mask)``: the image in the input's
    type and dtype (1 x H x W, never darker than the input), the mask 1 x H x W float32 in the
    image's container type.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, threshold: float = MASK_THRESHOLD) -> None:
        self.threshold = threshold

    def __call__(self, image, layer):
        shape = tuple(image.shape)
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"CompositeAnomaly expects a 1xHxW image, got shape {shape}")
        arr = as_layer(layer)
        check_layer_shape(arr, shape)
        im = convert_data_type(image, np.ndarray)[0][0]
        out = composite_over_image(im, arr)[None]
        mask = anomaly_mask(arr[1], self.threshold)[None]
        return convert_to_dst_type(out, image)[0], float32_like(mask, image)


class CompositeAnomalyd(MapTransform):
    """Dictionary :class:`CompositeAnomaly`: composites ``d[layer_key]`` over ``d[key]`` (in place)
    and writes the mask to ``d[mask_key]``; removes the layer unless ``keep_layer``."""

    backend = CompositeAnomaly.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        layer_key: str = "anomaly_layer",
        mask_key: str = "anomaly_mask",
        threshold: float = MASK_THRESHOLD,
        keep_layer: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.layer_key, self.mask_key, self.keep_layer = layer_key, mask_key, keep_layer
        self.compositor = CompositeAnomaly(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], d[self.mask_key] = self.compositor(d[key], d[self.layer_key])
        if not self.keep_layer:
            d.pop(self.layer_key, None)
        return d


CompositeAnomalyD = CompositeAnomalyDict = CompositeAnomalyd
