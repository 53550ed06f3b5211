"""MONAI's anti-aliased bilinear resize as two small matrix products: the image to ``spatial_size``.

Every workflow of the bundle (training, validation, evaluation, inference, MONAI Label) brings
the loaded ``1 x H x W`` radiograph to the working size with :class:`AntialiasResized` before
PBTSeg and the network (``docs/method.md`` sections 1, 7). It computes what MONAI 1.6.1's
``Resize(spatial_size, mode="bilinear", anti_aliasing=True)`` computes, up to float32 rounding,
in about 2 ms instead of 90-110 ms for a 1024 x 1024 radiograph (one CPU thread): MONAI smooths
the full-size image with a Gaussian of 4 sigma on each side (29 taps at 1024 -> 128) before
interpolating, while here each output pixel reads only the input pixels it depends on.

MONAI's resize, per spatial axis (``monai/transforms/spatial/functional.py``, ``resize``):

1. when ``anti_aliasing`` and at least one axis shrinks, a Gaussian of standard deviation
   ``sigma = max(0, (s - 1) / 2)`` per axis, ``s = in / out`` (computed in float32;
   ``skimage.transform.resize``'s default), by ``GaussianSmooth``: the ``"erf"`` kernel of
   :func:`monai.networks.layers.convutils.gaussian_1d`, ``2 * int(max(4 sigma, 0.5) + 0.5) + 1``
   taps, not normalised, with zero padding at the borders (the image darkens towards its
   edges by the kernel mass that falls outside); an axis that grows or keeps its size gets
   ``sigma = 0``, the identity;
2. ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` to the output size:
   output pixel ``o`` samples the input at ``u = max((o + 0.5) * in / out - 0.5, 0)``, between
   ``floor(u)`` and the next pixel (the last pixel repeated at the far border);
3. an unchanged size returns the image (as float32) without smoothing.

Both steps are linear and act on one axis at a time, so along each axis they fold into one
``out x in`` matrix ``M = L @ G`` (``G`` the banded Gaussian, ``L`` the two-tap interpolation),
and the resized image is ``M_rows @ image @ M_cols^T`` per channel. ``M`` is sparse (a row
holds at most twice the kernel's taps) and is stored so. The matrices are computed
in float64 from MONAI's own float32 kernel and cached per ``(in, out, sigma)`` by
:func:`resize_matrix` (a small LRU, per process: DataLoader workers fill their own).

Metadata follow MONAI's ``Resize``: a ``MetaTensor`` gets the same affine update
(``scale_affine``, ``align_corners=False``), spatial shape and an ``applied_operations``
entry, and :meth:`AntialiasResize.inverse` resizes back like ``Resize.inverse`` (bilinear,
no anti-aliasing). Lazy resampling is not supported (MONAI's anti-aliasing is not lazy either).

Example::

    >>> import torch
    >>> from monai.transforms import Resize
    >>> img = torch.rand(1, 300, 240) * 255
    >>> ours = AntialiasResize((128, 128))(img)
    >>> theirs = Resize((128, 128), mode="bilinear", anti_aliasing=True)(img)
    >>> tuple(ours.shape), bool((ours - theirs).abs().max() < 1e-3)
    ((1, 128, 128), True)
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import InvertibleTransform, MapTransform, Resize, Transform
from monai.transforms.inverse import TraceableTransform
from monai.transforms.utils import scale_affine
from monai.utils import TraceKeys, TransformBackends, convert_to_tensor, ensure_tuple_rep, fall_back_tuple

__all__ = ["AntialiasResize", "AntialiasResized", "AntialiasResizeD", "AntialiasResizeDict", "resize_matrix"]

#: how many per-axis matrices each process keeps (rows and columns of a few input sizes)
RESIZE_CACHE_SIZE = 16
#: MONAI's ``GaussianFilter`` default: the kernel spans this many sigmas on each side
GAUSSIAN_TRUNCATED = 4.0


def antialias_sigmas(in_size: Sequence[int], out_size: Sequence[int], sigma=None) -> tuple[float, ...]:
    """The Gaussian sigma per axis of MONAI's anti-aliased resize from ``in_size`` to ``out_size``.

    ``(s - 1) / 2`` for a shrinking axis (``s = in / out``, in float32 as MONAI computes it), 0
    for the others; all 0 when no axis shrinks. A given ``sigma`` (a number or one per axis)
    is used on the shrinking axes only, as MONAI does.
    """
    if not any(o < i for i, o in zip(in_size, out_size)):
        return (0.0,) * len(out_size)
    factors = torch.div(
        torch.tensor(list(in_size), dtype=torch.float32), torch.tensor(list(out_size), dtype=torch.float32)
    )
    if sigma is None:
        return tuple(float(s) for s in torch.clamp((factors - 1) / 2, min=0).tolist())
    given = ensure_tuple_rep(sigma, len(out_size))
    return tuple(float(g) * int(f > 1) for g, f in zip(given, factors.tolist()))


@functools.lru_cache(maxsize=RESIZE_CACHE_SIZE)
def resize_matrix(n_in: int, n_out: int, sigma: float = 0.0) -> torch.Tensor:
    """The sparse ``n_out x n_in`` float32 matrix of MONAI's 1-D Gaussian (``sigma``) then linear resize.

    ``y = M @ x`` is ``GaussianSmooth(sigma)`` (zero padding; identity for ``sigma = 0``)
    followed by ``interpolate(mode="linear", align_corners=False)`` of a length-``n_in``
    signal to ``n_out`` samples (module docstring). Cached (LRU of
    :data:`RESIZE_CACHE_SIZE`); the returned tensor is shared: do not modify it.
    """
    n_in, n_out = int(n_in), int(n_out)
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize_matrix: sizes must be positive, got {n_in} -> {n_out}")
    # interpolation: two taps per output sample (PyTorch's compute_source_index_and_lambda)
    o = torch.arange(n_out, dtype=torch.float64)
    if n_in == n_out:
        i0, lam1 = o.long(), torch.zeros(n_out, dtype=torch.float64)
    else:
        u = torch.clamp((o + 0.5) * (n_in / n_out) - 0.5, min=0.0)
        i0 = torch.clamp(torch.floor(u).long(), max=n_in - 1)
        lam1 = torch.clamp(u - i0, 0.0, 1.0)
    i1 = torch.clamp(i0 + 1, max=n_in - 1)
    taps_idx = torch.stack([i0, i1], dim=1)  # (n_out, 2)
    taps_w = torch.stack([1.0 - lam1, lam1], dim=1)
    # Gaussian: MONAI's own float32 kernel, applied around each tap with zero padding
    if sigma > 0:
        kernel = gaussian_1d(torch.tensor(sigma, dtype=torch.float32), truncated=GAUSSIAN_TRUNCATED, approx="erf")
        kernel = kernel.double()
    else:
        kernel = torch.ones(1, dtype=torch.float64)
    tail = (kernel.numel() - 1) // 2
    cols = taps_idx[:, :, None] + torch.arange(-tail, tail + 1)[None, None, :]  # (n_out, 2, K)
    vals = taps_w[:, :, None] * kernel[None, None, :]
    inside = (cols >= 0) & (cols < n_in)
    rows = torch.arange(n_out)[:, None, None].expand_as(cols)
    m = torch.sparse_coo_tensor(
        torch.stack([rows[inside], cols[inside]]), vals[inside], (n_out, n_in), check_invariants=True
    )
    return m.coalesce().float()  # coalesce sums the entries of a column that both taps reach


def antialias_resize(img: torch.Tensor, out_size: Sequence[int], sigma=None) -> torch.Tensor:
    """``C x H x W`` (float32 tensor) -> ``C x out_size``: MONAI's anti-aliased bilinear resize.

    ``M_rows @ image @ M_cols^T`` per channel with the sparse matrices of :func:`resize_matrix`.
    """
    in_size = tuple(int(s) for s in img.shape[1:])
    sig_h, sig_w = antialias_sigmas(in_size, out_size, sigma)
    m_h = resize_matrix(in_size[0], int(out_size[0]), sig_h).to(img.device)
    m_w = resize_matrix(in_size[1], int(out_size[1]), sig_w).to(img.device)
    return torch.stack([torch.sparse.mm(m_w, torch.sparse.mm(m_h, channel).T).T for channel in img])


class AntialiasResize(InvertibleTransform, Transform):
    """Resize a channel-first 2-D image like MONAI's ``Resize(mode="bilinear", anti_aliasing=True)``.

    Args:
        spatial_size: the output ``(H, W)`` (an int: square); a non-positive entry keeps that
            axis of the input (MONAI's ``fall_back_tuple``).
        anti_aliasing_sigma: the Gaussian sigma of the shrinking axes (a number or one per
            axis); ``None`` (default): ``(in / out - 1) / 2`` per axis, MONAI's default.

    Input: a ``C x H x W`` tensor, ``MetaTensor`` or array, any real dtype (radiographs here:
    ``1 x H x W`` in 0..255). Output: float32 ``C x spatial_size``, a ``MetaTensor`` with
    MONAI's ``Resize`` metadata update when metadata are tracked (module docstring), values
    within float32 rounding of MONAI's (at most 1e-3 on 0..255 in ``tests/test_resize.py``).
    ``align_corners`` is ``False`` (MONAI's default for ``bilinear``), the only choice.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, spatial_size: Sequence[int] | int, anti_aliasing_sigma: Sequence[float] | float | None = None):
        size = (spatial_size,) * 2 if isinstance(spatial_size, (int, np.integer)) else tuple(spatial_size)
        if len(size) != 2:
            raise ValueError(f"AntialiasResize: spatial_size must give 2 sizes (H, W), got {spatial_size}")
        self.spatial_size = tuple(int(s) for s in size)
        self.anti_aliasing_sigma = anti_aliasing_sigma

    def __call__(self, img) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=get_track_meta())
        if img.ndim != 3:
            raise ValueError(
                f"AntialiasResize expects a channel-first 2-D image C x H x W, got shape {tuple(img.shape)}"
            )
        orig_size = tuple(int(s) for s in img.shape[1:])
        out_size = tuple(int(s) for s in fall_back_tuple(self.spatial_size, orig_size))
        meta_info = TraceableTransform.track_transform_meta(
            img,
            sp_size=out_size,
            affine=scale_affine(orig_size, out_size, align_corners=False),
            extra_info={"mode": "bilinear", "align_corners": TraceKeys.NONE, "dtype": "float32", "new_dim": 0},
            orig_size=orig_size,
            transform_info=self.get_transform_info(),
            lazy=False,
        )
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        out = x if orig_size == out_size else antialias_resize(x, out_size, self.anti_aliasing_sigma)
        if isinstance(img, MetaTensor):  # fresh metadata, then the resize's (as MONAI's resize does)
            out = MetaTensor(out)
        return out.copy_meta_from(meta_info) if isinstance(out, MetaTensor) else out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Back to the size before this transform, as ``Resize.inverse`` does (bilinear, no anti-aliasing)."""
        transform = self.pop_transform(data)
        xform = Resize(spatial_size=transform[TraceKeys.ORIG_SIZE], mode="bilinear", dtype=torch.float32)
        with xform.trace_transform(False):
            return xform(data)


class AntialiasResized(MapTransform, InvertibleTransform):
    """Dictionary wrapper of :class:`AntialiasResize` (MONAI's ``Resized(mode="bilinear", anti_aliasing=True)``).

    Args:
        keys: the image keys (channel-first 2-D); masks keep MONAI's nearest ``Resized``.
        spatial_size, anti_aliasing_sigma: see :class:`AntialiasResize`.
        allow_missing_keys: skip absent keys instead of raising.
    """

    backend = AntialiasResize.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int,
        anti_aliasing_sigma: Sequence[float] | float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resizer = AntialiasResize(spatial_size, anti_aliasing_sigma=anti_aliasing_sigma)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.resizer(d[key])
            except ValueError as err:
                raise ValueError(f"{err} (key '{key}')") from err
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer.inverse(d[key])
        return d


AntialiasResizeD = AntialiasResizeDict = AntialiasResized
