"""The whole ART-ASyn synthesis chain as MONAI transforms (``docs/method.md`` sections 2.1-2.6).

- :class:`RandARTAnomaly`: array transform, ``(image, lung) -> (synthetic image, mask)``.
- :class:`RandARTAnomalyd`: dictionary version; replaces ``d["image"]`` and writes
  ``d["anomaly_mask"]`` (1 x H x W float32, the image's container type) and
  ``d["anomaly_label"]`` (float32 torch tensor of shape (1,): 1.0 painted, 0.0 not).
- :class:`RandARTTwinsd`: one healthy image -> a list of dicts: the healthy sample plus k
  independent synthetic twins (k uniform in ``num_twins``), each with ``d["target"]`` = the
  healthy image (the training sample of section 3). MONAI flattens the list when collating.

Variants (seed, Table S1; section 2.6):

- ``"base"``: A_base alone (2.1) composited over the image (2.5). ``base_lung_mask=True``
  (our default) multiplies its alpha by the soft lung mask S of 2.4 (no rib contrast, no
  brightening), so that nothing is painted outside the (dilated) lungs; ``False`` is the
  literal reading (brush stamps centred in the lungs spill over their borders).
- ``"base_blur_cryst"``: 2.1-2.3 (A, T_blur, T_cryst, composition), no T_rib.
- ``"final"``: everything (A_final, ART-ASyn).
- ``"none"`` (dictionary transforms only): no synthesis.
- ``"anatpaste"``, ``"cutpaste"``, ``"perlin"`` (dictionary transforms only): the baselines of
  :mod:`artasyn.baselines` in place of ART-ASyn (their own arguments in ``**kwargs``).

The variant and the switch are recorded in MetaTensor metadata (``artasyn_variant``,
``artasyn_base_lung_mask``, ``artasyn_no_lung``) and in ``d["artasyn_variant"]``.

An empty lung map leaves the image unchanged (empty mask, label 0), logs a warning naming
the source file (``filename_or_obj``, or for the dictionary transforms ``d[f"{key}_path"]``
when the image carries no metadata, as after ``EnsureTyped(track_meta=False)``), sets
``artasyn_no_lung`` and counts it in ``no_lung_count``.

Example::

    >>> import numpy as np
    >>> from artasyn.synthesis import RandARTAnomalyd
    >>> img = np.full((1, 256, 256), 90, np.uint8)
    >>> lung = np.zeros((1, 256, 256), np.uint8); lung[0, 60:200, 40:110] = 1; lung[0, 60:200, 150:220] = 2
    >>> t = RandARTAnomalyd(keys="image", lung_key="lung").set_random_state(0)
    >>> out = t({"image": img, "lung": lung})
    >>> out["image"].shape, out["anomaly_mask"].shape, float(out["anomaly_label"][0])
    ((1, 256, 256), (1, 256, 256), 1.0)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends

from ..base import (
    REFERENCE_SIZE,
    anomaly_label,
    check_image_and_lung,
    empty_mask_like,
    size_scale,
    source_name,
    source_of,
    synthesis_outputs,
    tag_synthesis,
    to_uint8,
)
from ..baselines import BASELINES
from ..constants import (
    ALPHA_BRIGHTNESS,
    BASE_ALPHA_SCALE,
    BLUR_ALPHA_SCALE,
    BLUR_RADIUS,
    COMPOSE_ORDER,
    CRYST_ALPHA_SCALE,
    CRYST_BLUR_ALPHA_SCALE,
    CRYST_BLUR_RADIUS,
    LUNG_DILATION,
    MASK_THRESHOLD,
    NUM_CRYST_SEEDS,
    NUM_TWINS,
    RIB_WEIGHT,
    SOFT_MASK_KERNEL,
    SOFT_MASK_SIGMA,
)
from .anatomy import rib_scale_alpha, soft_lung_mask
from .composite import anomaly_mask, composite_over_image
from .effects import compose_layers, crystallize, pil_gaussian_blur
from .strokes import RandBrushAnomaly, plan_strokes, render_strokes

__all__ = [
    "VARIANTS",
    "RandARTAnomaly",
    "RandARTAnomalyd",
    "RandARTTwinsd",
    "RandARTAnomalyD",
    "RandARTAnomalyDict",
    "RandARTTwinsD",
    "RandARTTwinsDict",
]

logger = logging.getLogger(__name__)

#: synthesis variants of the array transform (Table S1); the dictionary ones also accept "none"
VARIANTS = ("base", "base_blur_cryst", "final")

_BRUSH_KEYS = (
    "brush_texture",
    "brush_widths",
    "segment_counts",
    "p_zero",
    "control_offset",
    "curve_samples",
    "max_stamps",
    "spacing_frac",
    "width_jitter",
    "opacity_range",
    "flow_range",
    "segment_opacity",
    "colour_percentile",
    "angle_step",
    "width_step",
    "stamp_cache_bytes",
)


def _bbox_slices(alpha: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    if rows.size == 0:
        return None
    h, w = alpha.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)),
    )


def _blur_cropped(layer: np.ndarray, radius: float) -> np.ndarray:
    """Pillow Gaussian blur computed on the layer's non-zero box plus the blur's support
    (identical to blurring the whole layer: the box border is zero, or the image edge)."""
    margin = int(np.ceil(3.0 * (radius + 1))) + 2
    box = _bbox_slices(layer[1] > 0, margin)
    out = np.zeros_like(layer)
    if box is None:
        return out
    out[(slice(None), *box)] = pil_gaussian_blur(layer[(slice(None), *box)], radius)
    return out


class RandARTAnomaly(RandomizableTransform):
    """ART-ASyn synthesis (section 2) of one 1 x H x W image with its lung label map.

    ``__call__(img, lung)`` returns ``(image, mask)``: the synthetic image (input's type and
    dtype; never darker than the input) and the binary anomaly mask (1 x H x W float32, the
    image's container type). ``self.last_painted`` says whether the last call painted.

    Args:
        variant: ``"base"``, ``"base_blur_cryst"`` or ``"final"`` (Table S1).
        base_lung_mask: for ``"base"``: multiply the alpha by the soft lung mask S (default True).
        prob: probability of synthesizing (else the image is returned with an empty mask).
        brush_texture: None (procedural, seed 0), int seed, image path or 2-D alpha array.
        blur_radius: T_blur radius (8, Pillow semantics); cryst_blur_radius: Cb radius (3).
        num_seeds: T_cryst seeds (500 at 256 x 256, scaled by area).
        base_scale, blur_scale, cryst_scale, cryst_blur_scale, order: section 2.3.
        dilation, soft_kernel, soft_sigma: soft lung mask S (7, 31, 5.0).
        rib_weight, brightness: T_rib (0.5, 1.5).
        threshold: mask threshold on the final alpha (80).
        reference_size: size (256) at which pixel constants are given; they scale with
            ``sqrt(H * W) / reference_size``. ``None`` keeps them fixed.
        **brush_kwargs: :class:`artasyn.synthesis.strokes.RandBrushAnomaly` arguments (brush_widths,
            control_offset, opacity_range, angle_step, width_step, stamp_cache_bytes, ...).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        variant: str = "final",
        base_lung_mask: bool = True,
        prob: float = 1.0,
        brush_texture: Any = None,
        blur_radius: float = BLUR_RADIUS,
        cryst_blur_radius: float = CRYST_BLUR_RADIUS,
        num_seeds: int = NUM_CRYST_SEEDS,
        base_scale: float = BASE_ALPHA_SCALE,
        blur_scale: float = BLUR_ALPHA_SCALE,
        cryst_scale: float = CRYST_ALPHA_SCALE,
        cryst_blur_scale: float = CRYST_BLUR_ALPHA_SCALE,
        order: Sequence[str] = COMPOSE_ORDER,
        dilation: int = LUNG_DILATION,
        soft_kernel: int = SOFT_MASK_KERNEL,
        soft_sigma: float = SOFT_MASK_SIGMA,
        rib_weight: float = RIB_WEIGHT,
        brightness: float = ALPHA_BRIGHTNESS,
        threshold: float = MASK_THRESHOLD,
        reference_size: int | None = REFERENCE_SIZE,
        **brush_kwargs: Any,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        unknown = set(brush_kwargs) - set(_BRUSH_KEYS)
        if unknown:
            raise TypeError(f"RandARTAnomaly got unexpected keyword arguments {sorted(unknown)}")
        self.variant = variant
        self.base_lung_mask = bool(base_lung_mask)
        self.painter = RandBrushAnomaly(
            prob=1.0, brush_texture=brush_texture, reference_size=reference_size, **brush_kwargs
        )
        self.blur_radius, self.cryst_blur_radius, self.num_seeds = blur_radius, cryst_blur_radius, num_seeds
        self.compose_kwargs = dict(
            base_scale=base_scale,
            blur_scale=blur_scale,
            cryst_scale=cryst_scale,
            cryst_blur_scale=cryst_blur_scale,
            order=tuple(order),
        )
        self.dilation, self.soft_kernel, self.soft_sigma = dilation, soft_kernel, soft_sigma
        self.rib_weight, self.brightness, self.threshold = rib_weight, brightness, threshold
        self.reference_size = reference_size
        self.no_lung_count = 0
        self.last_painted = False
        self.last_no_lung = False
        self._plan = None
        self._seeds: np.ndarray | None = None

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.painter.set_random_state(seed, state)
        return self

    def _scale(self, shape) -> float:
        return size_scale(shape, self.reference_size)

    def randomize(self, image_u8: np.ndarray, lung: np.ndarray) -> None:  # type: ignore[override]
        """Draw the strokes and the crystallization seeds (``image_u8``, ``lung``: H x W numpy)."""
        super().randomize(None)
        self._plan, self._seeds = None, None
        if not self._do_transform:
            return
        s = self._scale(image_u8.shape)
        p = self.painter
        self._plan = plan_strokes(self.R, image_u8, lung, p.banks(image_u8.shape), s, **p.plan_args(image_u8.shape))
        if self._plan is not None and self.variant != "base":
            h, w = image_u8.shape
            n = max(1, int(round(self.num_seeds * s * s)))
            self._seeds = np.stack([self.R.randint(0, h, size=n), self.R.randint(0, w, size=n)], axis=1)

    def synthesize(self, image: np.ndarray, image_u8: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render the drawn anomaly on numpy H x W arrays; returns (image, mask)."""
        shape = image_u8.shape
        s = self._scale(shape)
        a = render_strokes(self._plan, shape, self.painter.banks(shape), self.painter.segment_opacity)
        soft = None
        if self.variant == "final" or self.base_lung_mask:
            soft = soft_lung_mask(lung, self.dilation, self.soft_kernel, self.soft_sigma, self.reference_size)
        if self.variant == "base":
            z = a
            if self.base_lung_mask:
                z[1] = rib_scale_alpha(z[1], image_u8, soft, brightness=1.0, use_rib=False)
        else:
            b = _blur_cropped(a, self.blur_radius * s)
            c = crystallize(a, self._seeds)
            cb = _blur_cropped(c, self.cryst_blur_radius * s)
            z = compose_layers(a, b, c, cb, **self.compose_kwargs)
            if self.variant == "final":
                z[1] = rib_scale_alpha(z[1], image_u8, soft, self.rib_weight, self.brightness)
        return composite_over_image(image, z), anomaly_mask(z[1], self.threshold)

    def __call__(
        self,
        img,
        lung,
        randomize: bool = True,
        key: str = "image",
        lung_key: str = "lung",
        source: str | None = None,
    ):
        im, lu = check_image_and_lung(img, lung, key, lung_key)
        im_u8 = to_uint8(im)
        if randomize:
            self.randomize(im_u8, lu)
        self.last_no_lung = bool(self._do_transform and self._plan is None)
        if self.last_no_lung:
            self.no_lung_count += 1
            logger.warning("ART-ASyn: empty lung map, image left unchanged (source: %s)", source or source_name(img))
        self.last_painted = self._plan is not None
        if self.last_painted:
            out, mask = self.synthesize(im, im_u8, lu)
        else:
            out, mask = im, np.zeros(im.shape, np.float32)
        return synthesis_outputs(
            out,
            mask,
            img,
            artasyn_variant=self.variant,
            artasyn_base_lung_mask=self.base_lung_mask,
            artasyn_no_lung=self.last_no_lung,
        )


def _copy(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    return copy.deepcopy(x)


class _SynthesisMapTransform(RandomizableTransform, MapTransform):
    """What :class:`RandARTAnomalyd` and :class:`RandARTTwinsd` share: the variant, the wrapped
    :class:`RandARTAnomaly`, its random state and no-lung count, and the checked image/lung pair."""

    backend = RandARTAnomaly.backend

    def __init__(
        self, keys: KeysCollection, lung_key: str, variant: str, prob: float, allow_missing_keys: bool, **kwargs: Any
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if variant not in (*VARIANTS, "none", *BASELINES):
            raise ValueError(f"variant must be one of {(*VARIANTS, 'none', *BASELINES)}, got {variant!r}")
        self.variant = variant
        self.lung_key = lung_key
        if variant in BASELINES:
            if kwargs.pop("brush_texture", None) is not None:
                raise TypeError(f"brush_texture is an ART-ASyn argument; variant {variant!r} has no brush")
            self.synth = BASELINES[variant](prob=1.0, **kwargs)
        else:
            self.synth = RandARTAnomaly(variant="final" if variant == "none" else variant, prob=1.0, **kwargs)

    @property
    def no_lung_count(self) -> int:
        return self.synth.no_lung_count

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.synth.set_random_state(seed, state)
        return self

    def _image_and_lung(self, d: Mapping[Hashable, Any], key: Hashable) -> tuple[Any, Any]:
        if self.lung_key not in d:
            raise KeyError(
                f"{type(self).__name__}: lung label map key '{self.lung_key}' not in the data (keys: {list(d)})"
            )
        img, lung = d[key], d[self.lung_key]
        check_image_and_lung(img, lung, str(key), self.lung_key)
        return img, lung


class RandARTAnomalyd(_SynthesisMapTransform):
    """Dictionary :class:`RandARTAnomaly`.

    Replaces ``d[key]`` by the synthetic image (same type), writes ``d[mask_key]`` (binary
    1 x H x W float32 in the image's container type: numpy, torch or MetaTensor) and
    ``d[label_key]`` (``torch.tensor([1.0])`` when painted, ``[0.0]`` when not), and
    ``d["artasyn_variant"]``. ``variant="none"`` only adds the empty mask and label 0.
    Every other argument is passed to :class:`RandARTAnomaly`.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        lung_key: str = "lung",
        mask_key: str = "anomaly_mask",
        label_key: str = "anomaly_label",
        variant: str = "final",
        brush_texture: Any = None,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, lung_key, variant, prob, allow_missing_keys, brush_texture=brush_texture, **kwargs)
        self.mask_key, self.label_key = mask_key, label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if len(keys) > 1:
            raise ValueError(f"RandARTAnomalyd synthesizes one image key at a time, got {keys}")
        no_lung = False
        for key in keys:
            img, lung = self._image_and_lung(d, key)
            if self.variant != "none" and self._do_transform:
                d[key], d[self.mask_key] = self.synth(
                    img, lung, key=str(key), lung_key=self.lung_key, source=source_of(d, key)
                )
                painted, no_lung = self.synth.last_painted, self.synth.last_no_lung
            else:
                d[key], d[self.mask_key], painted = _copy(img), empty_mask_like(img), False
            d[self.label_key] = anomaly_label(painted)
        tag_synthesis(d, [*keys, self.mask_key], self.variant, self.synth.base_lung_mask, no_lung)
        return d


class RandARTTwinsd(_SynthesisMapTransform):
    """One healthy image -> a list of training samples: the healthy one and k synthetic twins.

    Returns a list of dicts (MONAI's collation flattens lists, as for ``RandCropByPosNegLabeld``):
    the healthy sample (when ``include_healthy``; mask zeros, label 0) followed by ``k`` twins,
    ``k`` uniform integer in ``num_twins`` (inclusive), each an independent anomaly of
    ``variant``. Every dict gets ``d[target_key]`` = a copy of the healthy image, the mask
    (1 x H x W float32, image container type), the label (float32 torch tensor (1,)) and
    ``d["artasyn_variant"]``. ``variant="none"`` returns just the healthy sample. An empty
    lung map yields healthy copies with label 0 (and a warning).

    Other keyword arguments go to :class:`RandARTAnomaly`.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        lung_key: str = "lung",
        target_key: str = "target",
        mask_key: str = "anomaly_mask",
        label_key: str = "anomaly_label",
        num_twins: int | Sequence[int] = NUM_TWINS,
        include_healthy: bool = True,
        variant: str = "final",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, lung_key, variant, 1.0, allow_missing_keys, **kwargs)
        lo, hi = (num_twins, num_twins) if isinstance(num_twins, int) else (int(num_twins[0]), int(num_twins[1]))
        if not 0 <= lo <= hi:
            raise ValueError(f"num_twins must be a range (low, high) with 0 <= low <= high, got {num_twins}")
        if not include_healthy and hi == 0:
            raise ValueError("RandARTTwinsd with include_healthy=False needs at least one twin")
        self.num_twins = (lo, hi)
        self.include_healthy = include_healthy
        self.target_key, self.mask_key, self.label_key = target_key, mask_key, label_key
        self._k = lo

    def randomize(self, data: Any = None) -> None:
        self._k = int(self.R.randint(self.num_twins[0], self.num_twins[1] + 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if len(keys) != 1:
            raise ValueError(f"RandARTTwinsd synthesizes exactly one image key, got {keys}")
        key = keys[0]
        img, lung = self._image_and_lung(d, key)
        self.randomize()
        blm = self.synth.base_lung_mask

        def healthy() -> dict:
            h = {k: _copy(v) for k, v in d.items()}
            h[self.target_key] = _copy(img)
            h[self.mask_key] = empty_mask_like(img)
            h[self.label_key] = anomaly_label(False)
            tag_synthesis(h, [key, self.mask_key, self.target_key], self.variant, blm, False)
            return h

        if self.variant == "none":
            return [healthy()]
        out = [healthy()] if self.include_healthy else []
        for _ in range(self._k):
            t = {k: _copy(v) for k, v in d.items()}
            t[key], t[self.mask_key] = self.synth(
                img, lung, key=str(key), lung_key=self.lung_key, source=source_of(d, key)
            )
            t[self.target_key] = _copy(img)
            t[self.label_key] = anomaly_label(self.synth.last_painted)
            tag_synthesis(t, [key, self.mask_key, self.target_key], self.variant, blm, self.synth.last_no_lung)
            out.append(t)
        if not out:  # include_healthy=False and k == 0
            out.append(healthy())
        return out


RandARTAnomalyD = RandARTAnomalyDict = RandARTAnomalyd
RandARTTwinsD = RandARTTwinsDict = RandARTTwinsd
