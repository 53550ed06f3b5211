"""What every step of the method shares: the LA-layer convention, size scaling, 8-bit and
float32 conversions, input checks and the source name of an image (``docs/method.md``,
"Conventions").

**LA layers.** The synthesis steps of section 2 pass anomaly layers as ``2 x H x W`` float32
arrays: channel 0 the gray colour, channel 1 the alpha, both in 0..255 and not premultiplied
(every brush colour is gray, so one colour channel is enough). They hold integer values:
every step rounds as the authors' 8-bit Pillow RGBA pipeline does. :func:`as_layer` reads
one, :func:`empty_layer` makes a transparent one.

**Sizes.** The paper's pixel constants are given at ``REFERENCE_SIZE`` (256); an
``H x W`` image scales them by :func:`size_scale`, ``sqrt(H * W) / 256``.

**Images.** ART-ASyn works on ``1 x H x W`` grayscale images in 0..255 with a lung label map
of the same size (:func:`check_image_and_lung`); outputs keep the input's container type
(:func:`float32_like`).

Example::

    >>> import numpy as np
    >>> from artasyn.base import as_layer, size_scale, to_uint8, check_image_and_lung
    >>> size_scale((1, 512, 512))
    2.0
    >>> as_layer(np.zeros((2, 8, 8))).dtype
    dtype('float32')
    >>> to_uint8(np.array([-3.0, 0.5, 1.5, 254.6, 300.0])).tolist()
    [0, 0, 2, 255, 255]
    >>> check_image_and_lung(np.zeros((3, 8, 8)), np.zeros((8, 8)))
    Traceback (most recent call last):
    ...
    ValueError: ART-ASyn expects a 1xHxW grayscale image, got key 'image' with shape (3, 8, 8)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

from .constants import REFERENCE_SIZE

__all__ = [
    "as_bool",
    "REFERENCE_SIZE",
    "LAYER_CHANNELS",
    "size_scale",
    "as_layer",
    "empty_layer",
    "check_layer_shape",
    "to_uint8",
    "clip_uint8",
    "float32_like",
    "synthesis_outputs",
    "empty_mask_like",
    "tag_synthesis",
    "anomaly_label",
    "check_image_and_lung",
    "source_name",
]

#: channels of an LA layer: gray colour, alpha
LAYER_CHANNELS = 2


def size_scale(shape: Sequence[int], reference_size: int | None = REFERENCE_SIZE) -> float:
    """Scale of an ``... x H x W`` image relative to the reference size: ``sqrt(H * W) / reference_size``
    (1.0 when ``reference_size`` is None or 0: constants kept fixed)."""
    if not reference_size:
        return 1.0
    h, w = int(shape[-2]), int(shape[-1])
    return float(np.sqrt(h * w) / reference_size)


def as_layer(layer: Any, name: str = "layer") -> np.ndarray:
    """A 2 x H x W float32 numpy LA layer from any array-like (checks the shape)."""
    arr = convert_data_type(layer, np.ndarray, dtype=np.float32)[0]
    if arr.ndim != 3 or arr.shape[0] != LAYER_CHANNELS:
        raise ValueError(f"{name} must be a 2xHxW LA layer (gray colour, alpha), got shape {tuple(arr.shape)}")
    return arr


def empty_layer(shape: Sequence[int]) -> np.ndarray:
    """A transparent 2 x H x W float32 LA layer for an image of ``shape`` (``... x H x W``)."""
    return np.zeros((LAYER_CHANNELS, int(shape[-2]), int(shape[-1])), np.float32)


def check_layer_shape(layer: np.ndarray, image_shape: Sequence[int]) -> None:
    """Raise a ValueError naming both shapes unless the layer's ``H x W`` is the image's."""
    if tuple(layer.shape[1:]) != tuple(image_shape)[-2:]:
        raise ValueError(f"anomaly layer shape {tuple(layer.shape)} does not match image shape {tuple(image_shape)}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image as uint8: rounded to the nearest integer (halves to even) and clipped to 0..255;
    a uint8 array is returned as is."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def clip_uint8(values: np.ndarray) -> np.ndarray:
    """Integer-valued layer values as uint8: clipped to 0..255, fractions truncated (the cast of
    Pillow's 8-bit pipeline)."""
    return np.clip(values, 0, 255).astype(np.uint8)


def float32_like(arr: np.ndarray, dst: Any) -> Any:
    """``arr`` as float32 in the container type of ``dst`` (numpy, torch or MetaTensor, whose
    metadata it keeps)."""
    return convert_to_dst_type(arr, dst, dtype=torch.float32 if isinstance(dst, torch.Tensor) else np.float32)[0]


def synthesis_outputs(out: np.ndarray, mask: np.ndarray, img: Any, **meta: Any) -> tuple[Any, Any]:
    """The ``(image, mask)`` pair a synthesis transform returns: the H x W synthetic image as
    ``1 x H x W`` in ``img``'s type and dtype, the mask as ``1 x H x W`` float32 in ``img``'s
    container type; MetaTensor outputs get ``meta`` (e.g. ``artasyn_variant``) in their metadata."""
    out_t = convert_to_dst_type(out[None], img)[0]
    mask_t = float32_like(mask[None], img)
    for t in (out_t, mask_t):
        if isinstance(t, MetaTensor):
            t.meta.update(meta)
    return out_t, mask_t


def empty_mask_like(img: Any) -> Any:
    """An all-zero anomaly mask of ``img``'s shape, float32, in ``img``'s container type."""
    return float32_like(np.zeros(tuple(img.shape), np.float32), img)


def tag_synthesis(d: dict, keys: Sequence[Hashable], variant: str, base_lung_mask: bool, no_lung: bool) -> None:
    """Record the synthesis settings in ``d["artasyn_variant"]`` and in the metadata of every
    MetaTensor under ``keys`` (``artasyn_variant``, ``artasyn_base_lung_mask``, ``artasyn_no_lung``)."""
    d["artasyn_variant"] = variant
    for k in keys:
        t = d.get(k)
        if isinstance(t, MetaTensor):
            t.meta.update(artasyn_variant=variant, artasyn_base_lung_mask=base_lung_mask, artasyn_no_lung=no_lung)


def anomaly_label(painted: bool) -> torch.Tensor:
    """The image label a synthesis dictionary transform writes: float32 tensor ``[1.0]`` when an
    anomaly was painted, ``[0.0]`` otherwise (the same type for every item, so batches collate)."""
    return torch.tensor([1.0 if painted else 0.0], dtype=torch.float32)


def check_image_and_lung(
    img: Any, lung: Any, image_key: str = "image", lung_key: str = "lung"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 1xHxW image and its 1xHxW (or HxW) lung label map; returns numpy 2-D views
    ``(image, lung label array)`` in their own dtypes. Raises a ValueError naming keys and shapes."""
    shape = tuple(img.shape)
    if len(shape) != 3 or shape[0] != 1:
        raise ValueError(f"ART-ASyn expects a 1xHxW grayscale image, got key '{image_key}' with shape {shape}")
    lshape = tuple(lung.shape)
    if lshape != shape and lshape != shape[1:]:
        raise ValueError(
            f"lung label map key '{lung_key}' has shape {lshape}, "
            f"which does not match image key '{image_key}' shape {shape}"
        )
    im = convert_data_type(img, np.ndarray)[0]
    lu = convert_data_type(lung, np.ndarray)[0]
    return im.reshape(shape[1:]), lu.reshape(shape[1:])


def source_name(img: Any, default: str | None = "<unknown>") -> str | None:
    """The source file of an image (MetaTensor ``meta["filename_or_obj"]``), else ``default``.

    >>> source_name(MetaTensor(np.zeros((1, 2, 2)), meta={"filename_or_obj": "chest.png"}))
    'chest.png'
    >>> source_name(np.zeros((1, 2, 2)))
    '<unknown>'
    """
    if isinstance(img, MetaTensor):
        name = img.meta.get("filename_or_obj")
        if name:
            return str(name)
    return default


def source_of(d: Mapping[Hashable, Any], key: Hashable) -> str | None:
    """The source file of ``d[key]`` in a data dictionary: its metadata, else ``d[f"{key}_path"]``.

    The bundle's datalists carry ``image_path`` beside ``image``, which still names the file
    after ``EnsureTyped(track_meta=False)`` has dropped the metadata.

    >>> source_of({"image": np.zeros((1, 2, 2)), "image_path": "chest.png"}, "image")
    'chest.png'
    >>> source_of({"image": np.zeros((1, 2, 2))}, "image") is None
    True
    """
    name = source_name(d.get(key), None)
    if name is None and d.get(f"{key}_path"):
        name = str(d[f"{key}_path"])
    return name


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


def as_bool(value, name: str = "value") -> bool:
    """A boolean setting as it reaches a transform from a config: a bool, 0/1, or a string.

    ``python -m monai.bundle run ... --resume false`` hands the config the *string* ``"false"``
    (python-fire keeps what is not a Python literal as text), which ``bool()`` reads as True.
    This reads ``true/yes/on/1`` and ``false/no/off/0`` (any case) and refuses anything else.

    >>> as_bool("false"), as_bool("True"), as_bool(0), as_bool(True)
    (False, True, False, True)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")
