"""Input helpers: one grey channel in 0..255, as PBTSeg and ART-ASyn expect (``docs/method.md``).

PBTSeg's thresholds (section 1) and ART-ASyn's brush colour and rib contrast (section 2) are
grey levels of an 8-bit image. These transforms bring other inputs there:

- :class:`ToGrayscale`: RGB / RGBA to one channel with the ITU-R 601 luma that PIL's
  ``convert("L")`` uses;
- :class:`ScaleTo8Bit`: 8-bit, 16-bit or float images to the 0..255 range, by a fixed rule;
- :class:`PercentileStretch`: optionally, each image's own percentiles to 0 and 255, so that
  images of another exposure or processing (brighter, duller, a higher black level) reach the
  network with the same contrast range. ``percentiles=None`` (the paper's setting) is the
  identity;
- :class:`ReflectGaussianSmooth`: a Gaussian smoothing with mirrored borders (MONAI's
  ``GaussianSmooth`` pads with zeros, which darkens a frame of the image); ``sigma=0`` is the
  identity. The bundle's ``score_input_sigma`` (off by default) uses it to show the network a
  slightly smoothed image (:class:`artasyn.scoring.SmoothedInputInferer`).

Example::

    >>> import numpy as np
    >>> from artasyn.intensity import ScaleTo8Bit, ToGrayscale
    >>> rgb = np.zeros((3, 4, 4), np.uint8); rgb[0] = 255                 # pure red
    >>> int(ToGrayscale()(rgb)[0, 0, 0])                                  # 0.299 * 255
    76
    >>> float(ScaleTo8Bit()(np.full((1, 2, 2), 65535, np.uint16)).max())
    255.0
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type, get_equivalent_dtype

from .base import source_name

__all__ = [
    "ToGrayscale",
    "ToGrayscaled",
    "ToGrayscaleD",
    "ToGrayscaleDict",
    "ScaleTo8Bit",
    "ScaleTo8Bitd",
    "ScaleTo8BitD",
    "ScaleTo8BitDict",
    "PercentileStretch",
    "PercentileStretchd",
    "PercentileStretchD",
    "PercentileStretchDict",
    "ReflectGaussianSmooth",
    "ReflectGaussianSmoothd",
    "ReflectGaussianSmoothD",
    "ReflectGaussianSmoothDict",
    "reflect_gaussian_smooth",
]

logger = logging.getLogger(__name__)

#: ITU-R 601-2 luma weights in PIL's 16-bit fixed point: L = (19595 R + 38470 G + 7471 B + 2**15) >> 16
_LUMA_FIXED = (19595, 38470, 7471)
_LUMA = (0.299, 0.587, 0.114)
#: uint16 images are divided by this: 65535 / 257 = 255
UINT16_DIVISOR = 257.0


def _where(key: Hashable | None) -> str:
    return f"key {key!r} with shape" if key is not None else "shape"


def _bad_shape(key: Hashable | None, shape: tuple) -> str:
    return f"ToGrayscale expects a CxHxW (C in 1, 3, 4) or HxWxC image, got {_where(key)} {shape}"


class ToGrayscale(Transform):
    """Convert an RGB or RGBA image to one grey channel (ITU-R 601 luma, like PIL ``"L"``).

    Accepted layouts (returned as ``1 x H x W``):

    - channel-first ``C x H x W`` with ``C`` in {1, 3, 4} (1: returned unchanged);
    - channel-last ``H x W x C`` with ``C`` in {3, 4}, recognised when the first dimension is
      not 1, 3 or 4 (so a channel-first reading always wins: a ``3 x H x 3`` array is
      channel-first); force it with ``channel_last=True``;
    - a plain ``H x W`` image (a channel is added).

    Alpha is ignored, as PIL does. uint8 input gives uint8 output with PIL's integer rounding
    (``(19595 R + 38470 G + 7471 B + 2**15) >> 16``, so it equals ``Image.convert("L")``);
    other dtypes give ``0.299 R + 0.587 G + 0.114 B`` in float32. A MetaTensor keeps its
    metadata. Any other shape raises ``ValueError`` naming it.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, channel_last: bool | None = None) -> None:
        """
        Args:
            channel_last: ``None`` detects the layout as above; ``True`` / ``False`` forces it.
        """
        self.channel_last = channel_last

    def __call__(self, img: NdarrayOrTensor, key: Hashable | None = None) -> NdarrayOrTensor:
        """Return ``img`` as ``1 x H x W`` grey; ``key`` only names the input in errors."""
        shape = tuple(img.shape)
        arr = convert_data_type(img, np.ndarray)[0]
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim != 3:
            raise ValueError(_bad_shape(key, shape))
        channel_last = self.channel_last
        if channel_last is None:
            channel_last = arr.shape[0] not in (1, 3, 4) and arr.shape[-1] in (3, 4)
        if channel_last:
            arr = np.moveaxis(arr, -1, 0)
        if arr.shape[0] not in (1, 3, 4):
            raise ValueError(_bad_shape(key, shape))
        if arr.shape[0] == 1:
            gray = arr
        elif arr.dtype == np.uint8:
            r, g, b = (arr[i].astype(np.uint32) for i in range(3))
            luma = (_LUMA_FIXED[0] * r + _LUMA_FIXED[1] * g + _LUMA_FIXED[2] * b + (1 << 15)) >> 16
            gray = luma.astype(np.uint8)[None]
        else:
            rgb = arr[:3].astype(np.float32)
            gray = (_LUMA[0] * rgb[0] + _LUMA[1] * rgb[1] + _LUMA[2] * rgb[2])[None]
        return convert_to_dst_type(np.ascontiguousarray(gray), dst=img, dtype=gray.dtype)[0]


class ScaleTo8Bit(Transform):
    """Scale an image into the 0..255 grey range that PBTSeg's thresholds assume.

    The rule, by input dtype and values:

    - ``uint8``: unchanged; ``bool``: 0 / 255;
    - ``uint16``: divided by 257 (65535 -> 255, the full 16-bit range; an image that uses
      only 12 bits stays dark: use ``ScaleIntensityRange`` first for such data);
    - other integers and floats: unchanged if all values lie in [0, 255], except that floats
      all within [0, 1] are multiplied by 255 (a float image in [0, 1] is the common
      normalized form; an all-dark 0..255 float image with no value above 1 is read so too);
    - anything else (negative values, values above 255): min-max scaled to [0, 255], with a
      logged warning naming the source file (a constant image then becomes 0).

    Output: same shape and container, dtype ``dtype`` (default float32; with ``np.uint8`` the
    values are rounded). NaN or infinite values raise ``ValueError``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, uint16_divisor: float = UINT16_DIVISOR, dtype: DtypeLike | torch.dtype = np.float32) -> None:
        """
        Args:
            uint16_divisor: divisor of uint16 images (257 maps 65535 to 255).
            dtype: output dtype.
        """
        self.uint16_divisor = uint16_divisor
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor, key: Hashable | None = None) -> NdarrayOrTensor:
        """Return ``img`` scaled to 0..255; ``key`` only names the input in messages."""
        arr = convert_data_type(img, np.ndarray)[0]
        if arr.dtype == np.uint8:
            out = arr.astype(np.float32)
        elif arr.dtype == bool:
            out = arr.astype(np.float32) * 255
        elif arr.dtype == np.uint16:
            out = arr.astype(np.float32) / np.float32(self.uint16_divisor)
        else:
            out = arr.astype(np.float32 if arr.dtype.itemsize <= 4 else np.float64)
            if out.size and not np.all(np.isfinite(out)):
                raise ValueError(f"ScaleTo8Bit got NaN or infinite values ({_where(key)} {tuple(img.shape)})")
            lo, hi = (float(out.min()), float(out.max())) if out.size else (0.0, 0.0)
            if np.issubdtype(arr.dtype, np.floating) and lo >= 0 and hi <= 1:
                out = out * 255
            elif lo < 0 or hi > 255:
                logger.warning(
                    "ScaleTo8Bit: %s %s (source: %s) has values in [%g, %g], outside 0..255: min-max scaled to 0..255.",
                    _where(key),
                    tuple(img.shape),
                    source_name(img),
                    lo,
                    hi,
                )
                out = (out - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(out)
        out = out.astype(np.float32)
        if get_equivalent_dtype(self.dtype, np.ndarray) == np.uint8:
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return convert_to_dst_type(out, dst=img, dtype=self.dtype)[0]


class ToGrayscaled(MapTransform):
    """Dictionary-based :class:`ToGrayscale`."""

    backend = ToGrayscale.backend

    def __init__(
        self, keys: KeysCollection, channel_last: bool | None = None, allow_missing_keys: bool = False
    ) -> None:
        """
        Args:
            keys: keys of the images to convert.
            channel_last: see :class:`ToGrayscale`.
            allow_missing_keys: don't raise if a key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.converter = ToGrayscale(channel_last=channel_last)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], key=key)
        return d


class ScaleTo8Bitd(MapTransform):
    """Dictionary-based :class:`ScaleTo8Bit`."""

    backend = ScaleTo8Bit.backend

    def __init__(
        self,
        keys: KeysCollection,
        uint16_divisor: float = UINT16_DIVISOR,
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the images to scale.
            uint16_divisor, dtype: see :class:`ScaleTo8Bit`.
            allow_missing_keys: don't raise if a key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleTo8Bit(uint16_divisor=uint16_divisor, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key], key=key)
        return d


class PercentileStretch(Transform):
    """Stretch each image linearly so that its ``lower`` and ``upper`` percentiles become 0 and 255.

    Values beyond are clipped to 0..255. MONAI's ``ScaleIntensityRangePercentiles(lower, upper,
    b_min=0, b_max=255, clip=True)`` does the work; this adds ``percentiles=None`` (the identity,
    so a config can switch the step off with a setting) and leaves a constant image as it is
    (MONAI would divide by zero). Percentiles are computed over the whole image, all channels.

    Example::

        >>> import numpy as np
        >>> img = np.linspace(40, 200, 101, dtype=np.float32).reshape(1, 1, 101)
        >>> out = PercentileStretch((1.0, 99.0))(img)
        >>> float(out.min()), float(out.max()), round(float(out[0, 0, 50]), 3)
        (0.0, 255.0, 127.5)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, percentiles: tuple[float, float] | list[float] | None = None) -> None:
        """
        Args:
            percentiles: ``(lower, upper)`` with ``0 <= lower < upper <= 100``, or ``None`` (no change).
        """
        if percentiles is not None:
            lo_hi = [float(v) for v in percentiles]
            if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] < lo_hi[1] <= 100.0:
                raise ValueError(
                    "PercentileStretch: percentiles must be (lower, upper) with 0 <= lower < upper <= 100, "
                    f"got {percentiles!r}"
                )
            percentiles = (lo_hi[0], lo_hi[1])
        self.percentiles = percentiles

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.percentiles is None:
            return img
        from monai.transforms import ScaleIntensityRange
        from monai.transforms.utils_pytorch_numpy_unification import percentile

        if 0 in tuple(img.shape):  # an empty image: nothing to stretch
            return img
        lo, hi = (float(v) for v in percentile(img, list(self.percentiles)))  # MONAI's percentiles, one pass
        if not hi > lo:  # a constant image (or a constant top / bottom): nothing to stretch
            return img
        return ScaleIntensityRange(lo, hi, b_min=0.0, b_max=255.0, clip=True)(img)


class PercentileStretchd(MapTransform):
    """Dictionary-based :class:`PercentileStretch`."""

    backend = PercentileStretch.backend

    def __init__(
        self,
        keys: KeysCollection,
        percentiles: tuple[float, float] | list[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the images to stretch.
            percentiles: see :class:`PercentileStretch`.
            allow_missing_keys: don't raise if a key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.stretch = PercentileStretch(percentiles)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.stretch(d[key])
        return d


def smoothing_sigma(sigma: float, owner: str) -> float:
    """``sigma`` as a float, checked ``>= 0`` (``ValueError`` naming ``owner`` otherwise)."""
    sigma = float(sigma)
    if not sigma >= 0.0:
        raise ValueError(f"{owner}: sigma must be >= 0, got {sigma}")
    return sigma


def reflect_gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A batch ``B x C x H x W`` (or ``B x C x H x W x D``) smoothed by a Gaussian of ``sigma``
    pixels, borders mirrored (:class:`ReflectGaussianSmooth`, batched; on ``x``'s device)."""
    sigma = smoothing_sigma(sigma, "reflect_gaussian_smooth")
    if sigma == 0.0:
        return x
    from monai.networks.layers import separable_filtering
    from monai.networks.layers.convutils import gaussian_1d

    kernel = gaussian_1d(torch.tensor(sigma), truncated=4.0).to(device=x.device, dtype=torch.float32)
    radius = (len(kernel) - 1) // 2
    if min(x.shape[2:]) <= radius:
        raise ValueError(
            f"reflect_gaussian_smooth: sigma {sigma} needs an image larger than {radius} pixels on every side, "
            f"got shape {tuple(x.shape)}"
        )
    return separable_filtering(x.float(), [kernel] * (x.ndim - 2), mode="reflect")


class ReflectGaussianSmooth(Transform):
    """Smooth each channel with a Gaussian of ``sigma`` pixels, the borders mirrored.

    MONAI's separable Gaussian (``gaussian_1d``, truncated at 4 sigma) with ``reflect`` padding
    instead of ``GaussianSmooth``'s zeros, so a bright image keeps its brightness up to its edge.
    ``sigma=0`` returns the input unchanged. Input ``C x H x W`` (or ``C x H x W x D``), any
    float or integer dtype; output float32 of the same container and metadata.

    Example::

        >>> import numpy as np
        >>> from monai.transforms import GaussianSmooth
        >>> img = np.full((1, 16, 16), 200.0, np.float32); img[0, 8, 8] = 255.0
        >>> out = ReflectGaussianSmooth(1.0)(img)
        >>> round(float(out[0, 0, 0]), 1), round(float(GaussianSmooth(1.0)(img)[0, 0, 0]), 1)  # the corner
        (200.0, 95.6)
        >>> round(float(out[0, 8, 8]), 1)                  # the bright pixel, spread over its neighbours
        208.1
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, sigma: float = 0.0) -> None:
        """
        Args:
            sigma: the Gaussian's standard deviation in pixels, ``>= 0`` (0: no change).
        """
        self.sigma = smoothing_sigma(sigma, "ReflectGaussianSmooth")

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.sigma == 0.0:
            return img
        x = convert_data_type(img, torch.Tensor, dtype=torch.float32)[0]
        x = x.as_tensor() if isinstance(x, MetaTensor) else x
        if x.ndim < 3:
            raise ValueError(f"ReflectGaussianSmooth expects a channel-first C x H x W image, got {tuple(x.shape)}")
        out = reflect_gaussian_smooth(x[None], self.sigma)[0]
        return convert_to_dst_type(out, dst=img, dtype=torch.float32)[0]


class ReflectGaussianSmoothd(MapTransform):
    """Dictionary-based :class:`ReflectGaussianSmooth`."""

    backend = ReflectGaussianSmooth.backend

    def __init__(self, keys: KeysCollection, sigma: float = 0.0, allow_missing_keys: bool = False) -> None:
        """
        Args:
            keys: keys of the images to smooth.
            sigma: see :class:`ReflectGaussianSmooth`.
            allow_missing_keys: don't raise if a key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.smooth = ReflectGaussianSmooth(sigma)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.smooth(d[key])
        return d


ToGrayscaleD = ToGrayscaleDict = ToGrayscaled
ScaleTo8BitD = ScaleTo8BitDict = ScaleTo8Bitd
PercentileStretchD = PercentileStretchDict = PercentileStretchd
ReflectGaussianSmoothD = ReflectGaussianSmoothDict = ReflectGaussianSmoothd
