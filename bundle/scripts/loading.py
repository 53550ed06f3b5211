"""The one loading chain of the bundle: a radiograph file to a ``1 x H x W`` image in 0..255.

Training, validation, evaluation and inference (and the overlays of the inference writer)
all read images with :class:`LoadChestXRayd`, so one file gives one preprocessed image in
every workflow. In order:

1. read: PNG / JPEG (and other PIL formats) through ``PILReader(reverse_indexing=False)``,
   NIfTI (``.nii``, ``.nii.gz``) through ``NibabelReader``, DICOM (``.dcm``, ``.dicom``, or any
   file with the DICOM preamble) through pydicom as a clinical viewer shows it
   (:func:`scripts.dicom.read_dicom`: rescale slope / intercept, the VOI LUT or window when the
   file has one, MONOCHROME1 inverted); rows are the first spatial axis
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
   - **DICOM** grey images: with a VOI (LUT or window), its output range ``[lo, hi]`` linearly
     (``(x - lo) * 255 / (hi - lo)``, what a viewer shows); without one, the bit-depth rule of
     16-bit containers above when no value is negative, so a 12-bit DICOM (MONOCHROME2 or
     MONOCHROME1) gives the pixels of the 16-bit PNG holding its 12-bit values; DICOM colour
     images as colour PNGs;
   - everything else by :class:`artasyn.intensity.ScaleTo8Bit` (8-bit unchanged, floats in
     [0, 1] times 255, other ranges min-max scaled with a warning naming the file).

The output is a float32 ``MetaTensor`` in 0..255 with the reader's metadata.

:func:`check_radiograph` is the pre-check of every workflow: it decodes the file through the
same steps (every pixel, every format) and says why a file cannot be used (not an image type
the bundle reads, unreadable, truncated, non-finite values, not 2-D, smaller than ``min_size``,
constant), and which conversions an accepted one went through (the notes of the data report).
:func:`is_image_file` says which files of a folder the workflows read (:data:`IMAGE_SUFFIXES`,
and DICOM files of any name); :data:`SUPPORTED_FORMATS` names them in messages.

Example::

    >>> from scripts.loading import LoadChestXRayd
    >>> LoadChestXRayd("image")({"image": "cxr.png"})["image"].shape  # doctest: +SKIP
    torch.Size([1, 1024, 1024])
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.image_reader import NibabelReader, PILReader
from monai.transforms import LoadImage, MapTransform, Transform

from artasyn.intensity import ScaleTo8Bit, ToGrayscale

from .dicom import DICOM_SUFFIXES, has_dicom_preamble, is_dicom_file, read_dicom

__all__ = [
    "BIT_DEPTHS",
    "IMAGE_SUFFIXES",
    "MIN_IMAGE_SIZE",
    "PIL_CONVERSIONS",
    "SUPPORTED_FORMATS",
    "LoadChestXRay",
    "LoadChestXRayd",
    "check_radiograph",
    "is_16bit",
    "is_image_file",
    "read_radiograph",
    "scale_16bit",
]

#: bit depths a 16-bit container is scaled by (detectors store 10, 12, 14 or 16 bits)
BIT_DEPTHS = (8, 10, 12, 14, 16)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: read through PIL without looking into the file first
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
#: file name endings read as images from folders (DICOM files of any other name too, by their preamble)
IMAGE_SUFFIXES = (*PIL_SUFFIXES, *NIFTI_SUFFIXES, *DICOM_SUFFIXES)
#: the formats the workflows read, as messages name them
SUPPORTED_FORMATS = (
    "PNG / JPEG (.png, .jpg, .jpeg; other formats Pillow reads when named explicitly), NIfTI (.nii, .nii.gz), "
    "DICOM (.dcm, .dicom, or any file with the DICOM preamble)"
)
#: meta key of a DICOM image's VOI output range (mapped linearly to 0..255)
DISPLAY_RANGE_KEY = "dicom_voi_range"
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


def _load_image(**kwargs) -> LoadImage:
    """``LoadImage(**kwargs)`` without the two messages MONAI 1.6 gives when pydicom is installed.

    ``LoadImage`` instantiates every default reader, including ``NvImgCodecPydicomReader``,
    which logs and warns that nvImageCodec (a GPU decoder) is missing; this bundle reads DICOM
    through pydicom itself (:mod:`scripts.dicom`) and never uses that reader.
    """
    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            return LoadImage(**kwargs)
    finally:
        plugin_log.setLevel(level)


#: one loader for PIL and NIfTI files (each ``LoadImage`` builds MONAI's default readers, and some
#: warn when they do): NIfTI by nibabel, everything else by PIL (a reader is chosen by the file's
#: suffix, the last listed first); DICOM goes to :func:`_read_dicom`
_LOADER = _load_image(
    reader=[NibabelReader(), PILReader(reverse_indexing=False, converter=_pil_convert)],
    image_only=True,
    ensure_channel_first=True,
    dtype=None,
)


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the workflows read ``path`` as an image from a folder: :data:`IMAGE_SUFFIXES` (any case),
    or a DICOM file of any name (``IM0001``, ``1.2.840....``) by its preamble."""
    return str(path).lower().endswith(IMAGE_SUFFIXES) or has_dicom_preamble(path)


def _read_dicom(path: str | os.PathLike) -> MetaTensor:
    """A DICOM file as a channel-first MetaTensor: grey ``1 x H x W`` float32, colour ``3 x H x W``."""
    pixels, info = read_dicom(path)
    meta = {
        "format": "DICOM",
        "filename_or_obj": str(path),
        "dicom_photometric": info["photometric"],
        "dicom_notes": "; ".join(info["notes"]),
    }
    if pixels.ndim == 3:
        return MetaTensor(torch.as_tensor(np.ascontiguousarray(np.moveaxis(pixels, -1, 0))), meta=meta)
    if info["voi_range"] is not None:
        meta[DISPLAY_RANGE_KEY] = np.asarray(info["voi_range"], dtype=np.float64)
    return MetaTensor(torch.as_tensor(pixels)[None], meta=meta)


def read_radiograph(path: str | os.PathLike) -> MetaTensor:
    """Read a 2-D image file as a channel-first ``C x H x W`` MetaTensor (rows first), values as stored.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is absent / not a 2-D image.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    name = str(path).lower()
    if not name.endswith(PIL_SUFFIXES + NIFTI_SUFFIXES) and is_dicom_file(path):
        img = _read_dicom(path)
    else:
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


def _bit_depth_rule(img) -> bool:
    """Whether ``img`` is scaled by its bit depth: a 16-bit container, or a grey DICOM without a VOI."""
    meta = getattr(img, "meta", None) or {}
    if meta.get("format") == "DICOM" and meta.get("mode") != "F":
        return DISPLAY_RANGE_KEY not in meta and int(img.shape[0]) == 1
    return is_16bit(img)


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
        sixteen = _bit_depth_rule(img)
        window = meta.pop(DISPLAY_RANGE_KEY, None)
        img = self.gray(img)
        if window is not None:  # a DICOM VOI: its output range is black .. white
            lo, hi = (float(v) for v in np.asarray(window).reshape(-1)[:2])
            scaled = (torch.as_tensor(img).float() - lo) * (255.0 / (hi - lo))
            out = MetaTensor(torch.clamp(scaled, 0.0, 255.0), meta=meta)
            out.meta["mode"] = "F"
            return out
        if sixteen and float(img.min()) >= 0:
            out = MetaTensor(scale_16bit(img), meta=meta)
            out.meta["mode"] = "F"  # scaled: nothing downstream may scale it again
            return out
        out = self.to_8bit(img)
        return out if isinstance(out, MetaTensor) else MetaTensor(torch.as_tensor(out), meta=meta)


def _range_note(raw: torch.Tensor, sixteen: bool, windowed: bool = False) -> str | None:
    """The note of an image :class:`artasyn.intensity.ScaleTo8Bit` min-max scales (values outside 0..255)."""
    if windowed or (sixteen and float(raw.min()) >= 0):
        return None  # a DICOM VOI, or scaled by its bit depth: the documented rules
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
    smaller than ``min_size`` x ``min_size``, constant image; a file that no reader identifies
    is named as not an image type the bundle reads, with :data:`SUPPORTED_FORMATS`); ``notes``
    list the conversions an accepted image goes through (:data:`PIL_CONVERSIONS`, the DICOM
    display steps, a min-max rescale of values outside 0..255). The pixels checked are those
    :class:`LoadChestXRay` gives the workflows.
    """
    from .utils import root_cause

    path = Path(path)
    notes: list[str] = []
    if not path.is_file():
        return "file not found", notes
    if path.stat().st_size == 0:
        return "empty file (0 bytes)", notes
    name = str(path).lower()
    dicom = not name.endswith(NIFTI_SUFFIXES + PIL_SUFFIXES) and is_dicom_file(path)
    try:
        if not name.endswith(NIFTI_SUFFIXES) and not dicom:
            from PIL import Image, UnidentifiedImageError

            try:
                im = Image.open(path)
            except UnidentifiedImageError:
                if name.endswith(PIL_SUFFIXES):
                    raise  # a damaged PNG / JPEG: Pillow's own reason
                kind = f"{path.suffix!r} file" if path.suffix else "file without a suffix or the DICOM preamble"
                reason = f"not an image type the bundle reads ({kind}: {path.name}); supported: {SUPPORTED_FORMATS}"
                return reason, notes
            with im:
                if im.mode in PIL_CONVERSIONS:
                    notes.append(PIL_CONVERSIONS[im.mode][1])
                im.verify()  # the stream's own checks first (PNG chunk CRCs): clearer reasons
        raw = read_radiograph(path)
        if raw.meta.get("dicom_notes"):
            notes += raw.meta["dicom_notes"].split("; ")
        values = raw.as_tensor()
        if values.is_floating_point():
            n_nan, n_inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
            if n_nan or n_inf:
                return f"non-finite values: {n_nan} NaN and {n_inf} infinite of {values.numel()} pixels", notes
        h, w = (int(s) for s in raw.shape[1:])
        if min(h, w) < int(min_size):
            return f"image of {h} x {w} pixels is smaller than the minimum {min_size} x {min_size}", notes
        note = _range_note(values, _bit_depth_rule(raw), DISPLAY_RANGE_KEY in raw.meta)
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
