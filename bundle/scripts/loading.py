"""The one loading chain of the bundle: a radiograph file to a ``1 x H x W`` image in 0..255.

Training, validation, evaluation and inference (and the overlays of the inference writer)
all read images with :class:`LoadChestXRayd`, so one file gives one preprocessed image in
every workflow. In order:

1. read: PNG / JPEG (and other PIL formats) through ``PILReader(reverse_indexing=False)``,
   NIfTI (``.nii``, ``.nii.gz``) through ``NibabelReader``; rows are the first spatial axis
   for every format (MONAI's default PIL reading is transposed, ``docs/method.md`` section 7);
   a 2-D NIfTI stored as ``H x W x 1`` loses its last axis (any other shape, e.g. an
   ``H x W x 3`` NIfTI, is refused as not a 2-D image). ``meta["spatial_shape"]`` is the
   ``(H, W)`` of the array, so tools that restore the original size read it in this order.
   PIL modes without a direct grey reading are converted first (:data:`PIL_CONVERSIONS`):
   gray + alpha (``LA``) drops its alpha, palette images (``P``, ``PA``) go through their
   palette to RGB, bilevel (``1``) to 0 / 255, CMYK / YCbCr to RGB;
2. channel first, then one grey channel (:class:`artasyn.intensity.ToGrayscale`: RGB / RGBA
   become ITU-R 601 luma, exactly PIL's ``convert("L")`` for 8-bit colour);
3. intensities to 0..255 (PBTSeg's thresholds and the brush colour are 8-bit grey levels):

   - **16-bit containers** (PIL modes ``I;16*``, NIfTI of 16-bit integer type without negative
     values) are scaled by their *bit depth*: the smallest ``b`` of 8, 10, 12, 14, 16 with
     ``max < 2**b``, then ``x * 255 / (2**b - 1)``. A 12-bit radiograph stored in a 16-bit PNG
     (values up to 4095) is read at full contrast, a full-range 16-bit image is divided by
     257 (65535 -> 255), and images of the same bit depth keep their relative brightness (no
     per-image min-max stretch);
   - everything else by :class:`artasyn.intensity.ScaleTo8Bit` (8-bit unchanged, floats in
     [0, 1] times 255, other ranges min-max scaled with a warning naming the file).

The output is a float32 ``MetaTensor`` in 0..255 with the reader's metadata.

:func:`check_radiograph` is the pre-check of every workflow: it decodes the file through the
same steps (every pixel, every format) and says why a file cannot be used (unreadable,
truncated, non-finite values, not 2-D, smaller than ``min_size``, constant), and which
conversions an accepted one went through (the notes of the data report).

Example::

    >>> from scripts.loading import LoadChestXRayd
    >>> LoadChestXRayd("image")({"image": "cxr.png"})["image"].shape  # doctest: +SKIP
    torch.Size([1, 1024, 1024])
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.image_reader import NibabelReader, PILReader
from monai.transforms import LoadImage, MapTransform, Transform

from artasyn.intensity import ScaleTo8Bit, ToGrayscale

__all__ = [
    "BIT_DEPTHS",
    "MIN_IMAGE_SIZE",
    "PIL_CONVERSIONS",
    "LoadChestXRay",
    "LoadChestXRayd",
    "check_radiograph",
    "is_16bit",
    "read_radiograph",
    "scale_16bit",
]

#: bit depths a 16-bit container is scaled by (detectors store 10, 12, 14 or 16 bits)
BIT_DEPTHS = (8, 10, 12, 14, 16)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: NIfTI ``datatype`` codes of 16-bit integers (int16, uint16)
_NIFTI_16BIT = (4, 512)

#: smallest height and width (pixels) of an image the workflows accept (PBTSeg and the network
#: resize it; below this it holds no anatomy to segment or reconstruct)
MIN_IMAGE_SIZE = 32
#: PIL modes converted on reading (mode -> (target mode, note of the data report)); other modes
#: (``L``, ``RGB``, ``RGBA``, ``I;16*``, ``I``, ``F``) are read as stored
PIL_CONVERSIONS = {
    "LA": ("L", "gray + alpha (LA) PNG: alpha dropped, gray channel used"),
    "La": ("L", "gray + alpha (La) PNG: alpha dropped, gray channel used"),
    "P": ("RGB", "palette (P) image: colours of its palette, then luma"),
    "PA": ("RGB", "palette + alpha (PA) image: colours of its palette, then luma; alpha dropped"),
    "1": ("L", "bilevel (1-bit) image: read as 0 / 255"),
    "CMYK": ("RGB", "CMYK image: converted to RGB, then luma"),
    "YCbCr": ("RGB", "YCbCr image: converted to RGB, then luma"),
    "RGBa": ("RGBA", "premultiplied RGBa image: converted to RGBA, then luma"),
}


def _pil_convert(img):
    """``PILReader`` converter: modes without a grey reading to one that has (:data:`PIL_CONVERSIONS`)."""
    target = PIL_CONVERSIONS.get(img.mode)
    return img.convert(target[0]) if target is not None else img


#: one loader (each ``LoadImage`` builds MONAI's default readers, and some warn when they do):
#: NIfTI by nibabel, everything else by PIL (a reader is chosen by the file's suffix, the last
#: listed first)
_LOADER = LoadImage(
    reader=[NibabelReader(), PILReader(reverse_indexing=False, converter=_pil_convert)],
    image_only=True,
    ensure_channel_first=True,
    dtype=None,
)


def read_radiograph(path: str | os.PathLike) -> MetaTensor:
    """Read a 2-D image file as a channel-first ``C x H x W`` MetaTensor (rows first), values as stored.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is absent / not a 2-D image.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    img = _LOADER(path)
    if img.ndim == 4 and img.shape[-1] == 1:  # a 2-D NIfTI stored as H x W x 1
        img = img[..., 0]
    if img.ndim != 3:
        raise ValueError(
            f"not a 2-D image: shape {tuple(img.shape)} (channel first) in {path}; a radiograph is H x W "
            "(NIfTI: H x W or H x W x 1)"
        )
    img.meta["spatial_shape"] = np.asarray(img.shape[1:])
    return img


def is_16bit(img) -> bool:
    """Whether ``img`` was read from a 16-bit integer container (PIL ``I;16*``, 16-bit NIfTI)."""
    meta = getattr(img, "meta", None) or {}
    if str(meta.get("mode", "")).startswith("I;16"):
        return True
    datatype = meta.get("datatype")
    bitpix = meta.get("bitpix")
    if datatype is None or bitpix is None:
        return False
    return int(np.asarray(bitpix)) == 16 and int(np.asarray(datatype)) in _NIFTI_16BIT


def scale_16bit(img: torch.Tensor, bit_depths: tuple[int, ...] = BIT_DEPTHS) -> torch.Tensor:
    """``img * 255 / (2**b - 1)`` with ``b`` the smallest of ``bit_depths`` such that ``max < 2**b``; float32."""
    x = torch.as_tensor(img).float()
    peak = float(x.max()) if x.numel() else 0.0
    bits = next((b for b in sorted(bit_depths) if peak < 2**b), max(bit_depths))
    return x * (255.0 / (2**bits - 1))


class LoadChestXRay(Transform):
    """Load a radiograph file as a float32 ``1 x H x W`` MetaTensor in 0..255 (see the module docstring)."""

    def __init__(self) -> None:
        self.gray = ToGrayscale()
        self.to_8bit = ScaleTo8Bit()

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        return self.to_gray_8bit(read_radiograph(path))

    def to_gray_8bit(self, img: MetaTensor) -> MetaTensor:
        """Steps 2 and 3 on an image :func:`read_radiograph` returned."""
        meta = dict(img.meta)
        sixteen = is_16bit(img)
        img = self.gray(img)
        if sixteen and float(img.min()) >= 0:
            out = MetaTensor(scale_16bit(img), meta=meta)
            out.meta["mode"] = "F"  # scaled: nothing downstream may scale it again
            return out
        out = self.to_8bit(img)
        return out if isinstance(out, MetaTensor) else MetaTensor(torch.as_tensor(out), meta=meta)


def _range_note(raw: torch.Tensor, sixteen: bool) -> str | None:
    """The note of an image :class:`artasyn.intensity.ScaleTo8Bit` min-max scales (values outside 0..255)."""
    if sixteen and float(raw.min()) >= 0:
        return None  # scaled by its bit depth, the documented rule
    if raw.dtype in (torch.uint8, torch.bool):
        return None
    lo, hi = float(raw.min()), float(raw.max())
    if raw.is_floating_point() and lo >= 0 and hi <= 1:
        return None  # a [0, 1] float image: times 255
    if lo < 0 or hi > 255:
        return f"values in [{lo:g}, {hi:g}], outside 0..255: min-max scaled to 0..255"
    return None


def check_radiograph(path: str | os.PathLike, min_size: int = MIN_IMAGE_SIZE) -> tuple[str | None, list[str]]:
    """Decode ``path`` fully, as the workflows will, and say whether it can be used.

    Returns ``(reason, notes)``: ``reason`` is ``None`` for a usable image, else why it is
    rejected (the innermost error of the reader, or: empty file, non-finite values, not 2-D,
    smaller than ``min_size`` x ``min_size``, constant image); ``notes`` list the conversions an
    accepted image goes through (:data:`PIL_CONVERSIONS`, a min-max rescale of values outside
    0..255). The pixels checked are those :class:`LoadChestXRay` gives the workflows.
    """
    from .utils import root_cause

    path = Path(path)
    notes: list[str] = []
    if not path.is_file():
        return "file not found", notes
    if path.stat().st_size == 0:
        return "empty file (0 bytes)", notes
    try:
        if not str(path).lower().endswith(NIFTI_SUFFIXES):
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in PIL_CONVERSIONS:
                    notes.append(PIL_CONVERSIONS[im.mode][1])
                im.verify()  # the stream's own checks first (PNG chunk CRCs): clearer reasons
        raw = read_radiograph(path)
        values = raw.as_tensor()
        if values.is_floating_point():
            n_nan, n_inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
            if n_nan or n_inf:
                return f"non-finite values: {n_nan} NaN and {n_inf} infinite of {values.numel()} pixels", notes
        h, w = (int(s) for s in raw.shape[1:])
        if min(h, w) < int(min_size):
            return f"image of {h} x {w} pixels is smaller than the minimum {min_size} x {min_size}", notes
        note = _range_note(values, is_16bit(raw))
        if note:
            notes.append(note)
        img = LoadChestXRay().to_gray_8bit(raw)
        lo, hi = float(img.min()), float(img.max())
        if hi - lo < 1e-6:
            return f"constant image (every pixel {lo:g} of 255): no anatomy to segment or score", notes
    except Exception as e:  # every reader error is a reason, reported with the file
        return root_cause(e), notes
    return None, notes


class LoadChestXRayd(MapTransform):
    """Dictionary wrapper of :class:`LoadChestXRay`; values that are not paths are left as they are."""

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadChestXRay()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)):
                d[key] = self.loader(d[key])
        return d


LoadChestXRayD = LoadChestXRayDict = LoadChestXRayd
