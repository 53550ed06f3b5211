"""Perlin-noise anomalies (DRAEM, Zavrtanik et al., ICCV 2021, as anomalib generates them),
restricted to the lungs. A baseline for the paper's comparison (Table S1).

The method, with the values of DRAEM's code and of anomalib's ``PerlinAnomalyGenerator``
(``src/anomalib/data/utils/generators/perlin.py``):

1. Perlin noise: gradient noise on a grid of ``2**i x 2**j`` cells over the image padded to the
   next power of two, ``i`` and ``j`` uniform integers in [0, 6) each; random unit gradients
   at the grid vertices, quintic fade ``6t^5 - 15t^4 + 10t^3``, times sqrt(2) (values about
   [-1, 1]); rotated by an angle uniform in [-90, 90) degrees (bilinear, zero fill).
2. Mask: noise > 0.5.
3. Texture source: anomalib without an anomaly-source folder uses the noise itself,
   ``0.5 * noise + 0.25`` (DRAEM uses DTD texture images instead); three distinct augmenters
   out of ten applied to it: contrast factor in [0.5, 2], brightness factor in [0.8, 1.2],
   sharpness 2, hue/saturation, solarize at a threshold in [32, 128) of 255, posterize to 4
   bits, invert, autocontrast (anomalib: AutoAugment), equalize, rotation in [-45, 45) degrees.
4. Blend: ``out = I * (1 - M) + beta * T * M + (1 - beta) * I * M``, ``beta`` uniform in
   [0.2, 1.0) (DRAEM: ``1 - beta`` with beta in [0, 0.8), the same).

How ours differs:

- Grayscale, one channel, values 0..255 (texture ``(0.5 * noise + 0.25) * 255``); the
  hue/saturation augmenter does nothing to a gray texture; autocontrast stands in for
  AutoAugment (a policy learned on natural images), as in DRAEM's list.
- ``texture="image"`` takes the image itself as the texture source, an option with no outside
  data (DTD is not shipped).
- Restricted to the lungs: the mask is ``(noise > 0.5) & (lung > 0)``; where it is empty the
  noise is drawn again (at most ``max_tries`` times, then the image is left unchanged with
  label 0), so that an anomaly is (nearly) always painted. The image changes only inside the
  mask (a hard mask: no blending margin).
- The noise is drawn in ``randomize`` (the field is the random draw); ``render`` only blends.

Example::

    >>> import numpy as np
    >>> from artasyn.baselines.perlin import RandPerlinAnomalyd, perlin_noise
    >>> perlin_noise((224, 224), (4, 8), np.zeros((5, 9))).shape
    (224, 224)
    >>> img = np.full((1, 256, 256), 80, np.uint8)
    >>> lung = np.zeros((1, 256, 256), np.uint8); lung[0, 60:200, 40:110] = 1; lung[0, 60:200, 150:220] = 2
    >>> out = RandPerlinAnomalyd(keys="image", lung_key="lung").set_random_state(0)({"image": img, "lung": lung})
    >>> bool(out["anomaly_mask"][lung == 0].any()), float(out["anomaly_label"][0])
    (False, 1.0)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from ..base import REFERENCE_SIZE
from .common import MASK_THRESHOLD, RandLungAnomaly, RandLungAnomalyd, sharpen

__all__ = [
    "AUGMENTERS",
    "perlin_noise",
    "augment_texture",
    "RandPerlinAnomaly",
    "RandPerlinAnomalyd",
    "RandPerlinAnomalyD",
    "RandPerlinAnomalyDict",
]

logger = logging.getLogger(__name__)

#: the texture augmenters (anomalib's list, grayscale), three distinct ones per anomaly
AUGMENTERS = (
    "contrast",
    "brightness",
    "sharpness",
    "hue_saturation",
    "solarize",
    "posterize",
    "invert",
    "autocontrast",
    "equalize",
    "rotate",
)


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: Sequence[int], res: Sequence[int], angles: np.ndarray) -> np.ndarray:
    """2-D Perlin noise (float32 ``H x W``, about [-1, 1]).

    ``res = (ry, rx)``: grid cells along rows and columns of the image padded to the next power
    of two (the noise is cropped to ``H x W``); ``angles``: ``(ry + 1) x (rx + 1)`` gradient
    directions (radians) at the grid vertices."""
    h, w = int(shape[0]), int(shape[1])
    ph, pw = _next_pow2(h), _next_pow2(w)
    ry, rx = int(res[0]), int(res[1])
    if ph % ry or pw % rx:
        raise ValueError(f"perlin_noise: {res} cells do not divide the padded size {(ph, pw)}")
    sy, sx = ph // ry, pw // rx  # pixels per cell
    fy = (np.arange(sy, dtype=np.float32) / sy)[None, :, None, None]  # position inside the cell
    fx = (np.arange(sx, dtype=np.float32) / sx)[None, None, None, :]
    gy, gx = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)

    def corner(dy: int, dx: int) -> np.ndarray:  # (cells y, pixels y, cells x, pixels x)
        sel = (slice(dy, dy + ry), slice(dx, dx + rx))
        return (fy - dy) * gy[sel][:, None, :, None] + (fx - dx) * gx[sel][:, None, :, None]

    u, v = _fade(fy), _fade(fx)
    n00, n10, n01, n11 = corner(0, 0), corner(1, 0), corner(0, 1), corner(1, 1)
    left = n00 + u * (n10 - n00)
    right = n01 + u * (n11 - n01)
    noise = np.float32(np.sqrt(2.0)) * (left + v * (right - left))
    return np.ascontiguousarray(noise.reshape(ph, pw)[:h, :w])


def _rotate(x: np.ndarray, angle: float) -> np.ndarray:
    """Rotation about the centre (bilinear, zero fill) of a float32 or uint8 array."""
    mode = "F" if x.dtype == np.float32 else "L"
    return np.asarray(Image.fromarray(x, mode).rotate(angle, resample=Image.BILINEAR, fillcolor=0))


def augment_texture(texture: np.ndarray, ops: Sequence[tuple[str, float]]) -> np.ndarray:
    """Apply the augmenters ``ops`` (``(name, parameter)`` pairs of :data:`AUGMENTERS`) in order
    to a uint8 ``H x W`` texture; returns uint8."""
    x = texture
    for name, v in ops:
        if name == "contrast":
            m = float(x.mean())
            x = np.clip(np.round(m + v * (x.astype(np.float32) - m)), 0, 255).astype(np.uint8)
        elif name == "brightness":
            x = np.clip(np.round(x.astype(np.float32) * v), 0, 255).astype(np.uint8)
        elif name == "sharpness":
            x = sharpen(x, v)
        elif name == "solarize":
            x = np.where(x >= v, 255 - x, x).astype(np.uint8)
        elif name == "posterize":
            x = x & np.uint8((0xFF << (8 - int(v))) & 0xFF)
        elif name == "invert":
            x = 255 - x
        elif name == "autocontrast":
            x = np.asarray(ImageOps.autocontrast(Image.fromarray(x)))
        elif name == "equalize":
            x = np.asarray(ImageOps.equalize(Image.fromarray(x)))
        elif name == "rotate":
            x = _rotate(x, v)
        elif name != "hue_saturation":  # nothing to do on a gray texture
            raise ValueError(f"unknown texture augmenter {name!r}; known: {AUGMENTERS}")
    return x


class PerlinParams(NamedTuple):
    """The random draws of one Perlin anomaly."""

    noise: np.ndarray  # the rotated Perlin field, float32 H x W
    ops: tuple[tuple[str, float], ...]  # texture augmenters and their parameters
    beta: float  # opacity of the texture


class RandPerlinAnomaly(RandLungAnomaly):
    """Perlin-noise anomaly on one 1 x H x W image (0..255) and its lung label map; see the
    module docstring.

    ``__call__(img, lung)`` returns ``(image, mask)`` (:class:`artasyn.baselines.common.RandLungAnomaly`).

    Args:
        prob: probability of synthesizing.
        scale_exponents: grid cells ``2**i`` per axis, ``i`` uniform integer in ``[low, high)`` ((0, 6)).
        rotation_range: rotation of the noise in degrees ((-90, 90)).
        noise_threshold: the mask is noise > this (0.5).
        texture: ``"noise"`` (anomalib's default source, the noise itself) or ``"image"``.
        num_augmenters: distinct texture augmenters per anomaly (3).
        contrast_range, brightness_range, sharpness, solarize_range, posterize_bits,
            texture_rotation_range: the augmenters' parameters ((0.5, 2), (0.8, 1.2), 2,
            (32, 128), 4, (-45, 45)).
        beta_range: opacity of the texture inside the mask ((0.2, 1.0)).
        max_tries: redraws of the noise while its mask misses the lungs (10).
        threshold, reference_size: unused by the hard mask (kept for the common signature).
    """

    variant = "perlin"

    def __init__(
        self,
        prob: float = 1.0,
        scale_exponents: Sequence[int] = (0, 6),
        rotation_range: Sequence[float] = (-90.0, 90.0),
        noise_threshold: float = 0.5,
        texture: str = "noise",
        num_augmenters: int = 3,
        contrast_range: Sequence[float] = (0.5, 2.0),
        brightness_range: Sequence[float] = (0.8, 1.2),
        sharpness: float = 2.0,
        solarize_range: Sequence[float] = (32, 128),
        posterize_bits: int = 4,
        texture_rotation_range: Sequence[float] = (-45.0, 45.0),
        beta_range: Sequence[float] = (0.2, 1.0),
        max_tries: int = 10,
        threshold: float = MASK_THRESHOLD,
        reference_size: int | None = REFERENCE_SIZE,
    ) -> None:
        super().__init__(prob, threshold, reference_size)
        if texture not in ("noise", "image"):
            raise ValueError(f"texture must be 'noise' or 'image', got {texture!r}")
        if not 0 <= num_augmenters <= len(AUGMENTERS):
            raise ValueError(f"num_augmenters must be in [0, {len(AUGMENTERS)}], got {num_augmenters}")
        self.scale_exponents = (int(scale_exponents[0]), int(scale_exponents[1]))
        self.rotation_range = tuple(rotation_range)
        self.noise_threshold = noise_threshold
        self.texture = texture
        self.num_augmenters = num_augmenters
        self.augmenter_ranges = {
            "contrast": tuple(contrast_range),
            "brightness": tuple(brightness_range),
            "sharpness": (sharpness, sharpness),
            "hue_saturation": (0.0, 0.0),
            "solarize": tuple(solarize_range),
            "posterize": (posterize_bits, posterize_bits),
            "invert": (0.0, 0.0),
            "autocontrast": (0.0, 0.0),
            "equalize": (0.0, 0.0),
            "rotate": tuple(texture_rotation_range),
        }
        self.beta_range = tuple(beta_range)
        self.max_tries = max(1, int(max_tries))

    def draw_noise(self, shape: Sequence[int]) -> np.ndarray:
        """One rotated Perlin field from ``self.R``."""
        ry, rx = (2 ** int(self.R.randint(*self.scale_exponents)) for _ in range(2))
        angles = 2 * np.pi * self.R.random_sample((ry + 1, rx + 1))
        noise = perlin_noise(shape, (ry, rx), angles)
        return _rotate(noise, float(self.R.uniform(*self.rotation_range)))

    def randomize(self, image: np.ndarray, lung: np.ndarray) -> None:  # type: ignore[override]
        """Draw the noise (again while its mask misses the lungs), the augmenters and beta."""
        super().randomize(image, lung)
        inside = lung > 0
        if not self._do_transform or not inside.any():
            return
        for _ in range(self.max_tries):
            noise = self.draw_noise(image.shape)
            if (inside & (noise > self.noise_threshold)).any():
                break
        else:
            logger.warning("perlin: no noise mask met the lungs in %d draws, image left unchanged", self.max_tries)
            return
        names = self.R.choice(len(AUGMENTERS), self.num_augmenters, replace=False)
        ops = tuple((AUGMENTERS[i], float(self.R.uniform(*self.augmenter_ranges[AUGMENTERS[i]]))) for i in names)
        beta = float(self.R.uniform(*self.beta_range))
        self._params = PerlinParams(noise, ops, beta)

    def render(self, image: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blend the augmented texture inside the mask; returns (float32 image, float32 {0, 1} mask)."""
        p = self._params
        mask = (p.noise > self.noise_threshold) & (lung > 0)
        if self.texture == "noise":
            source = np.clip(np.round((0.5 * p.noise + 0.25) * 255.0), 0, 255).astype(np.uint8)
        else:
            source = np.clip(np.round(image), 0, 255).astype(np.uint8)
        tex = augment_texture(source, p.ops).astype(np.float32)
        out = image.astype(np.float32, copy=True)
        out[mask] += p.beta * (tex[mask] - out[mask])
        return out, mask.astype(np.float32)


class RandPerlinAnomalyd(RandLungAnomalyd):
    """Dictionary :class:`RandPerlinAnomaly`: writes ``d[mask_key]`` and ``d[label_key]`` like
    :class:`artasyn.synthesis.RandARTAnomalyd` (arguments: keys, lung_key, mask_key, label_key,
    prob, allow_missing_keys; the others go to :class:`RandPerlinAnomaly`). Also reachable as
    ``RandARTAnomalyd(variant="perlin")`` and ``RandARTTwinsd(variant="perlin")``."""

    synthesizer = RandPerlinAnomaly


RandPerlinAnomalyD = RandPerlinAnomalyDict = RandPerlinAnomalyd
