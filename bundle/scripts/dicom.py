"""DICOM radiographs read as a clinical viewer shows them (pydicom, pydicom 2.4 and 3).

:func:`read_dicom` runs the grayscale display pipeline of DICOM PS3.3 section C.11 on the one
frame of a file, in the order a viewer does:

1. decode the pixel data (``Dataset.pixel_array``; ``BitsStored`` and the pixel
   representation as stored). Uncompressed transfer syntaxes need nothing more; a compressed
   one that no installed decoder reads is refused with an error naming the file and the
   transfer syntax (and what to install);
2. Modality LUT (C.11.1): ``RescaleSlope`` / ``RescaleIntercept``, or a Modality LUT Sequence;
3. VOI LUT (C.11.2): the VOI LUT Sequence, else the first ``WindowCenter`` / ``WindowWidth``
   with its ``VOILUTFunction`` (``LINEAR``, ``LINEAR_EXACT``, ``SIGMOID``); the VOI output
   range ``[lo, hi]`` (:func:`voi_range`) is what a viewer spreads over its grey levels;
4. MONOCHROME1 (minimum value shown white) inverted to MONOCHROME2: ``lo + hi - x`` over the
   VOI output range, or, without a VOI, over the range the stored bits hold after the
   Modality LUT (:func:`modality_range`), so that ``4095 - x`` stored as 12-bit MONOCHROME1
   reads as the MONOCHROME2 image ``x``.

The rescale and the window are pydicom's (``apply_modality_lut``, ``apply_windowing``); the two
LUT sequences are applied here (:func:`apply_lut`): pydicom's own (2.4 and 3.0) index an 8-bit
LUT of more than 256 entries through an 8-bit array, which wraps (a 4096-entry 8-bit VOI LUT,
common in radiography, then maps 449 like 193), and refuse a 12-bit Modality LUT. The values are then
brought to 0..255 by the bundle's loading chain (:mod:`scripts.loading`, step 3): a VOI output
range linearly (``(x - lo) * 255 / (hi - lo)``, as a viewer maps its window), an image without
a VOI by the bit-depth rule of 16-bit PNGs. A 12-bit image therefore gives the same pixels as a
16-bit PNG holding the 12-bit values and as MONOCHROME2 or MONOCHROME1 DICOM.

Colour images (``RGB``, ``YBR_FULL``, ``YBR_FULL_422``) are returned as RGB and become luma
like a colour PNG. Multi-frame files, files without pixel data and other photometric
interpretations (``PALETTE COLOR``, ...) are refused with an error naming the file.

MONAI's ``PydicomReader`` applies the rescale only (no VOI, no MONOCHROME1 inversion) and
transposes the axes, so pydicom is used directly here.

Example::

    >>> from scripts.dicom import read_dicom
    >>> pixels, info = read_dicom("cxr.dcm")  # doctest: +SKIP
    >>> info["photometric"], info["voi_range"], pixels.shape  # doctest: +SKIP
    ('MONOCHROME1', None, (2048, 2500))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "DICOM_SUFFIXES",
    "GRAY_PHOTOMETRICS",
    "COLOR_PHOTOMETRICS",
    "apply_lut",
    "has_dicom_preamble",
    "is_dicom_file",
    "modality_range",
    "read_dicom",
    "voi_range",
    "write_dicom",
]

#: file name endings read as DICOM (any other file with the DICOM preamble is DICOM too)
DICOM_SUFFIXES = (".dcm", ".dicom")
#: what follows the 128-byte preamble of a DICOM Part-10 file
_MAGIC = b"DICM"
GRAY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
COLOR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422")
_INSTALL = "pip install 'pydicom>=2.4' (part of the bundle extra: pip install -e .[bundle])"
_DECODERS = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm"


def has_dicom_preamble(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM Part-10 file: ``DICM`` after the 128-byte preamble (whatever its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == _MAGIC


def is_dicom_file(path: str | os.PathLike) -> bool:
    """``path`` ends with ``.dcm`` / ``.dicom`` (any case) or has the DICOM preamble."""
    return str(path).lower().endswith(DICOM_SUFFIXES) or has_dicom_preamble(path)


def _pydicom():
    try:
        import pydicom
    except ImportError as e:
        raise ImportError(f"reading DICOM needs pydicom: {_INSTALL}") from e
    return pydicom


def _pydicom_luts():
    """pydicom's ``apply_modality_lut`` and ``apply_windowing`` (in ``pydicom.pixels`` from 3.0 on)."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_windowing
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_windowing
    return apply_modality_lut, apply_windowing


def _lut_table(ds, item) -> tuple[np.ndarray, int, int]:
    """``(table, first, bits)`` of a Modality / VOI LUT Sequence item (PS3.3 C.11.1.1, C.11.2.1.1)."""
    desc = [int(v) for v in item.LUTDescriptor]
    n, first, bits = desc[0] or 2**16, desc[1], desc[2]
    if int(ds.get("PixelRepresentation", 0)) == 1 and first >= 2**15:
        first -= 2**16  # the first value mapped is signed for signed pixels
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):  # OW: 16-bit words in the file's byte order
        meta = getattr(ds, "file_meta", None)
        ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
        big = ts is not None and str(ts) == "1.2.840.10008.1.2.2"  # Explicit VR Big Endian
        words = np.frombuffer(bytes(data), dtype=">u2" if big else "<u2")
        table = words[:n] if len(words) >= n else np.frombuffer(bytes(data), dtype=np.uint8)[:n]
    else:
        table = np.atleast_1d(np.asarray(data))
    return table.astype(np.int64), first, bits


def apply_lut(x: np.ndarray, ds, item) -> np.ndarray:
    """Map ``x`` through a LUT Sequence ``item``: ``table[x - first]``, clamped to the table's ends.

    Values below the first value mapped take the first entry, values past the table the last
    (PS3.3 C.11.2.1.1). Returns int64.
    """
    table, first, _ = _lut_table(ds, item)
    index = np.clip(np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64) - first, 0, len(table) - 1)
    return table[index]


def modality_range(ds) -> tuple[float, float]:
    """``(lo, hi)``: the values the stored bits can hold, after the Modality LUT (pydicom's rule).

    A Modality LUT Sequence gives ``0 .. 2**bits - 1`` (its descriptor's bits); otherwise
    ``BitsStored`` and ``PixelRepresentation`` give ``0 .. 2**b - 1`` (unsigned) or
    ``-2**(b-1) .. 2**(b-1) - 1`` (signed), through ``RescaleSlope`` / ``RescaleIntercept``
    when present. It is the output range of a window (C.11.2.1.2) and the range MONOCHROME1 is
    inverted over when the file has no VOI.
    """
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return lo, hi


def _has_voi_lut(ds) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None


def _has_window(ds) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def voi_range(ds) -> tuple[float, float] | None:
    """The output range of the file's VOI (``None`` without one): what a viewer maps to black .. white.

    A VOI LUT Sequence (preferred, as by pydicom) outputs ``0 .. 2**bits - 1`` (the third value
    of its ``LUTDescriptor``); a window outputs :func:`modality_range`.
    """
    if _has_voi_lut(ds):
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if _has_window(ds):
        return modality_range(ds)
    return None


def _first(value) -> float:
    """The first value of a DICOM multi-valued element (``WindowCenter`` may hold several)."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _transfer_syntax(ds):
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None) if meta is not None else None


def _decode(ds, path) -> np.ndarray:
    """``ds.pixel_array``, or an error naming the file and the transfer syntax when it cannot be decoded."""
    ts = _transfer_syntax(ds)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as e:  # not chained: the workflows report the innermost error, this one names the file
        said = " ".join(line.strip() for line in str(e).strip().splitlines()) or type(e).__name__
        said = said if len(said) <= 300 else said[:297] + "..."
        if ts is not None and getattr(ts, "is_compressed", False):
            raise ValueError(
                f"cannot decode the pixel data of {path}: transfer syntax {ts.name} ({ts}) is compressed and no "
                f"installed decoder read it ({_DECODERS}; uncompressed DICOM needs none). pydicom: {said}"
            ) from None
        name = f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"
        raise ValueError(f"cannot read the pixel data of {path} ({name}): {said}") from None


def read_dicom(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read one DICOM radiograph through steps 1-4 of the module docstring.

    Returns ``(pixels, info)``: ``pixels`` is ``H x W`` float32 (grey: after the Modality LUT, the
    VOI and the MONOCHROME1 inversion) or ``H x W x 3`` (colour, as decoded, RGB); ``info`` holds
    ``photometric``, ``bits_stored``, ``transfer_syntax``, ``voi_range`` (``(lo, hi)`` of the VOI
    applied, else ``None``) and ``notes`` (the conversions, for the data report and the CSV).

    Raises ``ValueError`` naming the file for: no pixel data, several frames, an unsupported
    photometric interpretation, pixel data that cannot be decoded (a compressed transfer
    syntax without its decoder, truncated data).
    """
    pydicom = _pydicom()
    ds = pydicom.dcmread(str(path), force=True)
    if "PixelData" not in ds:
        sop = ds.get("SOPClassUID")
        what = f" (SOP class {getattr(sop, 'name', sop)})" if sop else ""
        raise ValueError(f"no pixel data in the DICOM file {path}{what}: not an image")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ValueError(f"multi-frame DICOM ({frames} frames) in {path}: a radiograph is one 2-D frame")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in GRAY_PHOTOMETRICS + COLOR_PHOTOMETRICS:
        raise ValueError(
            f"DICOM photometric interpretation {photometric!r} of {path} is not read "
            f"(supported: {', '.join(GRAY_PHOTOMETRICS + COLOR_PHOTOMETRICS)})"
        )
    arr = _decode(ds, path)
    ts = _transfer_syntax(ds)
    bits = int(ds.get("BitsStored", 0) or 0)
    info = {
        "photometric": photometric,
        "bits_stored": bits,
        "transfer_syntax": str(getattr(ts, "name", ts) or ""),
        "voi_range": None,
        "notes": [],
    }
    if photometric in COLOR_PHOTOMETRICS:
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"colour DICOM {path} decoded to shape {arr.shape}, expected H x W x 3")
        if photometric != "RGB" and int(pydicom.__version__.split(".")[0]) < 3 and ts is not None:
            if not ts.is_compressed:  # pydicom 3 converts YBR to RGB itself; pydicom 2 leaves raw YBR
                from pydicom.pixel_data_handlers.util import convert_color_space

                arr = convert_color_space(arr, photometric, "RGB")
        info["notes"].append(f"DICOM {photometric}: colour, read as luma")
        return arr, info
    if arr.ndim != 2:
        raise ValueError(f"not a 2-D DICOM image: shape {arr.shape} in {path}")
    apply_modality_lut, apply_windowing = _pydicom_luts()
    lo, hi = modality_range(ds)
    if ds.get("ModalityLUTSequence"):
        x = apply_lut(arr, ds, ds.ModalityLUTSequence[0])
        info["notes"].append("DICOM Modality LUT applied")
    else:
        x = apply_modality_lut(arr, ds)  # the rescale, when the file has one
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            if (slope, intercept) != (1.0, 0.0):
                sign = "-" if intercept < 0 else "+"
                info["notes"].append(f"DICOM rescale: x * {slope:g} {sign} {abs(intercept):g}")
    window = voi_range(ds)
    if window is not None:
        if _has_voi_lut(ds):
            x = apply_lut(x, ds, ds.VOILUTSequence[0])
            info["notes"].append("DICOM VOI LUT applied")
        else:
            func = str(ds.get("VOILUTFunction", "LINEAR")).upper()
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
            info["notes"].append(f"DICOM window: center {center:g}, width {width:g} ({func})")
            x = apply_windowing(x, ds)
        lo, hi = window
        info["voi_range"] = (lo, hi)
    x = np.asarray(x, dtype=np.float64)
    if photometric == "MONOCHROME1":
        x = (lo + hi) - x
        info["notes"].append("DICOM MONOCHROME1: inverted")
    return x.astype(np.float32), info


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
) -> Path:
    """Write a 2-D grey image as an uncompressed DICOM radiograph (Explicit VR Little Endian), atomically.

    Args:
        path: the ``.dcm`` file to write.
        pixels: ``H x W`` unsigned integers, the stored values (at most ``2**bits_stored - 1``).
        photometric: ``MONOCHROME2`` or ``MONOCHROME1`` (the values are written as given: pass
            ``2**bits - 1 - x`` for the MONOCHROME1 file of the image ``x``).
        bits_stored: stored bits (default: 8 for ``uint8`` pixels, else 16); 8 bits are
            allocated up to 8 stored bits, 16 above.
        window: ``(center, width)`` written as ``WindowCenter`` / ``WindowWidth``.
        rescale: ``(slope, intercept)`` written as ``RescaleSlope`` / ``RescaleIntercept``.

    For tests, demos and converting images; the SOP class is Digital X-Ray Image Storage - For
    Presentation.
    """
    from .utils import atomic_write

    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or not np.issubdtype(pixels.dtype, np.integer) or pixels.min() < 0:
        raise ValueError(f"write_dicom: {path}: expected H x W unsigned integers, got {pixels.dtype} {pixels.shape}")
    if photometric not in GRAY_PHOTOMETRICS:
        raise ValueError(f"write_dicom: {path}: photometric must be one of {GRAY_PHOTOMETRICS}, got {photometric!r}")
    bits = int(bits_stored or (8 if pixels.dtype == np.uint8 else 16))
    if int(pixels.max()) >= 2**bits:
        raise ValueError(f"write_dicom: {path}: values up to {int(pixels.max())} do not fit {bits} stored bits")
    allocated = 8 if bits <= 8 else 16
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.PatientName, ds.PatientID = "Phantom^ArtAsyn", "ARTASYN"
    ds.Rows, ds.Columns = (int(s) for s in pixels.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{float(window[0]):g}", f"{float(window[1]):g}"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{float(rescale[0]):g}", f"{float(rescale[1]):g}"
    ds.PixelData = np.ascontiguousarray(pixels.astype("<u1" if allocated == 8 else "<u2")).tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        return atomic_write(path, lambda f: ds.save_as(f, enforce_file_format=True))
    ds.is_little_endian, ds.is_implicit_VR = True, False  # pydicom 2 encodes from these
    return atomic_write(path, lambda f: ds.save_as(f, write_like_original=False))
