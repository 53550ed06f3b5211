"""Inference of the bundle on new radiographs (``configs/inference.json``, ``docs/method.md`` section 4).

What runs, in order (the ids of ``inference.json``):

- :func:`check_output_dir` (``initialize``): the output folder is refused when it is an input
  folder or inside one (inference never writes among its inputs);
- :func:`inference_datalist`: the images to read, from a folder, a list of files (or a text
  file of paths, one a line) or a MONAI datalist JSON; outputs of an earlier run
  (``*.artasyn-*``) are never read as inputs; the files of a folder that are not images
  (PNG, JPEG, NIfTI, DICOM) are named as skipped (logged once each, and a ``skipped`` row of
  the CSV); every file is decoded in full first
  (:func:`scripts.datalist.inspect_image_file`), and a missing or unusable one (an explicit
  input of a type the bundle does not read among them, the reason naming the supported
  formats) is recorded in the :class:`InferenceReport` (logged, and a ``failed`` row of the
  CSV, with the reason), never fatal. A single ``--input_files`` path that is neither an image
  nor a text list of paths stops the run with an error naming it and the supported formats.
- ``preprocessing``: :class:`scripts.loading.LoadChestXRayd` (the loading chain of training
  and evaluation too: rows first, grey, 0..255 with 16-bit images scaled by their bit depth),
  :class:`RecordSpatialShaped` (the original size), the crop to the lungs when the checkpoint
  was trained with one (``lung_box_margin``, :class:`artasyn.lungs.LungBoxCropd`; ``cpu.json``
  crops), resize to ``spatial_size``, PBTSeg lungs, [0, 1] scaling. :class:`SafeDataset`
  turns a file that still fails while loading into a placeholder item marked ``failed`` (the
  reason is the innermost error and the file), so one bad file does not stop the run.
- the network (EMA weights of ``models/model.pt``) reconstructs the healthy image (of the
  input smoothed by ``score_input_sigma`` pixels first when that option is above 0,
  :class:`artasyn.scoring.SmoothedInputInferer`);
- ``postprocessing``: :class:`artasyn.scoring.AnomalyScored` (anomaly map
  ``score_map_mode`` / ``score_map_sigma``: the paper's ``(x - r)^2`` in ``train.json``, the
  positive error ``relu(G_3 * (x - r))^2`` in ``cpu.json``, the signed error plus some
  brightness ``G_6 * (x - r) + 0.015 x`` in ``lesions.json``; image score = its mean, relative
  mask ``e >= max(0.03, tau * max e)`` per image with ``e`` the square root of the map's
  positive part, optionally inside the PBTSeg lungs)
  into ``anomaly_map``, ``score`` and ``anomaly_mask``;
  then :class:`artasyn.scoring.thresholds.AnomalyDecisiond` with the checkpoint's decision thresholds
  (:class:`scripts.thresholds.CheckpointThresholds`, ``thresholds``): ``anomaly_label`` = 1
  (abnormal) when ``score`` exceeds the image threshold (``label_threshold``: ``specificity``
  or ``f1``), and ``anomaly_mask`` replaced by ``anomaly_map > pixel_threshold`` without its
  connected components under the calibrated ``min_mask_px`` (``mask_threshold: absolute``), so
  a healthy-looking image gets an empty mask; a checkpoint
  without thresholds gives no label and keeps the relative mask (logged);
  :class:`ResizeToShaped` brings the map and the mask back to the original size (into the
  crop's box, zero outside it, when there is a crop); ``recon``
  keeps the reconstruction. ``pred``, the bundle's output (what MONAI Label writes and shows),
  is the binary mask as a ``uint8`` ``W x H`` array: MONAI's default (column-first) layout of a
  2-D image, which MONAI's and MONAI Label's image writers expect.
- :class:`AnomalyOutputWriter` (an evaluator handler) writes per image
  ``<stem>.artasyn-heatmap.nii.gz`` (float32 map at the original size),
  ``<stem>.artasyn-overlay.png`` (the map in colour over the radiograph),
  ``<stem>.artasyn-mask.png`` ({0, 255}), all written atomically (temporary file, then
  rename, the user's umask), appends this run's rows to ``anomaly_scores.csv`` (run id,
  input file, status, score, label and the threshold that gave it, the mask's rule and
  threshold, anomaly area in pixels and as a fraction, lungs found, the names of the three
  outputs, notes; under a file lock, rewritten atomically, so runs into one folder keep every
  row), and logs a summary line. The files are drawn, encoded and written in a background
  thread (``writer_threads``) while the network goes on; :func:`set_torch_threads`
  (``initialize``) leaves CPU cores to the DataLoader workers and that thread.

Example (a checkpoint trained by the bundle in ``bundle/models/model.pt``)::

    python -m monai.bundle run --config_file bundle/configs/inference.json \\
        --input_dir /data/new_cxrs --output_dir /tmp/anomaly_out
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import struct
import time
import uuid
import zlib
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import Dataset, MetaTensor
from monai.transforms import MapTransform, Resize
from monai.transforms.transform import apply_transform

from artasyn.constants import DEFAULT_TAU

from .datalist import (
    INFERENCE_OUTPUT_TAG,
    _stem,
    find_images,
    inspect_image_file,
    is_inference_output,
    load_datalist_json,
)
from .loading import MIN_IMAGE_SIZE, SUPPORTED_FORMATS, is_image_file
from .utils import as_bool, atomic_write, root_cause

__all__ = [
    "AnomalyOutputWriter",
    "InferenceReport",
    "RecordSpatialShaped",
    "ResizeToShaped",
    "SafeDataset",
    "check_output_dir",
    "colorize",
    "inference_datalist",
    "overlay_heatmap",
    "require_file",
    "set_torch_threads",
]

logger = logging.getLogger("artasyn.bundle")

#: colour map of the overlays (anchors of an "inferno"-like map: black, purple, red, orange, pale yellow)
_CMAP_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


#: the outputs of one input image: kind -> file name ending (``<stem>`` + ending)
OUTPUT_SUFFIXES = {
    "heatmap": f"{INFERENCE_OUTPUT_TAG}heatmap.nii.gz",
    "overlay": f"{INFERENCE_OUTPUT_TAG}overlay.png",
    "mask": f"{INFERENCE_OUTPUT_TAG}mask.png",
}


class InferenceReport:
    """The files an inference run could not use (by path and reason), the files of its input folder
    that are not images (``skipped``), the conversion notes, its counts."""

    def __init__(self) -> None:
        self.failed: list[dict] = []
        self.skipped: list[dict] = []
        self.notes: dict[str, list[str]] = {}
        self.n_input = 0

    def add_failed(self, path: str, reason: str) -> None:
        self.failed.append({"path": str(path), "reason": str(reason)})
        logger.warning("inference: cannot read %s (%s); listed as failed, the run continues", path, reason)

    def add_skipped(self, path: str, reason: str) -> None:
        """A file of the input folder that is not an image: logged once, a ``skipped`` row of the CSV."""
        if any(item["path"] == str(path) for item in self.skipped):
            return
        self.skipped.append({"path": str(path), "reason": str(reason)})
        logger.warning("inference: skipped %s (%s)", path, reason)


def set_torch_threads(cpu_threads: int = 0, num_workers: int = 0) -> int:
    """Set torch's CPU threads (intra-op) for an inference run; returns the number set.

    ``cpu_threads > 0``: that many. ``0`` (auto): the cores this process may use less those left
    to the ``num_workers`` DataLoader workers and the writer thread, at most half of them:
    ``max(1, cores - min(num_workers + 1, cores // 2))``; on 2 cores the network runs on one
    thread while loading, resizing, PBTSeg and writing use the other core. Intra-op threads
    wait for each other at every operation, so a thread whose core is busy stalls them all: on
    2 shared cores the small network of ``cpu.json`` ran 17 images/s with 1 thread, 0.4 with 2.
    """
    threads = int(cpu_threads)
    if threads <= 0:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # no affinity API (macOS, Windows)
            cores = os.cpu_count() or 1
        threads = max(1, cores - min(max(int(num_workers), 0) + 1, cores // 2))
    torch.set_num_threads(threads)
    return threads


def require_file(path: str | os.PathLike, what: str = "checkpoint") -> str:
    """``path`` if it is a file, else a ``FileNotFoundError`` that says what to do."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path} (train the bundle first, or pass --ckpt_path <file.pt>)")
    return str(path)


def _pil_identifies(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Exception:
        return False


def _path_list(path: Path) -> list[str] | None:
    """The paths of a text list (one a line, ``#`` comments, relative to the list), ``None`` if not text.

    A JSON file is refused (a MONAI datalist goes to ``--input_datalist``).
    """
    if path.name.lower().endswith(".json"):
        raise ValueError(
            f"--input_files {path}: a JSON file; a MONAI datalist goes to --input_datalist, "
            "--input_files takes images or a text list of paths (one a line)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None
    if "\0" in text:
        return None
    lines = [ln.strip() for ln in text.splitlines()]
    return [str(path.parent / ln) if not os.path.isabs(ln) else ln for ln in lines if ln and not ln.startswith("#")]


def _file_list(input_files) -> list[str]:
    """The paths of ``--input_files``: a list, a comma-separated string, one image, or a text list of paths.

    One existing path is an image when :func:`scripts.loading.is_image_file` says so (PNG,
    JPEG, NIfTI, DICOM by suffix or preamble) or Pillow identifies it (other formats named
    explicitly); else it is read as a UTF-8 text list of paths; a binary file that is neither
    raises a ``ValueError`` naming it and the supported formats.
    """
    if not input_files:
        return []
    if isinstance(input_files, (str, os.PathLike)):
        p = Path(os.path.expanduser(str(input_files)))
        if p.is_file() and not is_image_file(p):
            listed = _path_list(p)
            if listed is not None:
                return listed
            if _pil_identifies(p):
                return [str(p)]
            kind = f"{p.suffix!r} file" if p.suffix else "file without a suffix or the DICOM preamble"
            raise ValueError(
                f"--input_files {p}: neither an image the bundle reads ({kind}) nor a text list of paths (one a "
                f"line, UTF-8); supported images: {SUPPORTED_FORMATS}"
            )
        return [s.strip() for s in str(input_files).split(",") if s.strip()]
    return [str(f) for f in input_files]


def _input_paths(input_dir, input_files, datalist, sections, report: InferenceReport | None = None) -> list[str]:
    paths: list[str] = []
    if input_dir:
        folder = Path(os.path.expanduser(str(input_dir)))
        if not folder.is_dir():
            raise FileNotFoundError(f"input_dir {folder} is not a folder")
        found = find_images(folder, report)
        if not found:
            logger.warning("inference: no image in %s (supported: %s)", folder, SUPPORTED_FORMATS)
        paths += found
    paths += _file_list(input_files)
    if datalist:
        for section in sections:
            paths += [it["image"] for it in load_datalist_json(Path(os.path.expanduser(str(datalist))), section)]
    return paths


def check_output_dir(
    output_dir: str | os.PathLike,
    input_dir: str | os.PathLike | None = None,
    input_files: str | Sequence[str] | None = None,
    datalist: str | os.PathLike | None = None,
    sections: Sequence[str] = ("training", "validation", "test"),
) -> str:
    """``output_dir`` if inference may write there, else a ``ValueError`` saying why and what to do.

    Refused: ``output_dir`` equal to ``input_dir`` or inside it, and ``output_dir`` equal to the
    folder of an input file (from ``input_files`` or the datalist). So no output is written
    among the inputs (or over one), and no later run of the same command reads outputs as
    radiographs. (A sub-folder of an input file's folder is allowed: folders are not read
    recursively.)
    """
    out = Path(os.path.expanduser(str(output_dir))).resolve()

    def refuse(folder: Path, where: str) -> None:
        raise ValueError(
            f"output_dir {out} {where}: inference never writes among its inputs; "
            f"pass another --output_dir (e.g. {folder.parent / (folder.name + '_artasyn')})"
        )

    if input_dir:
        folder = Path(os.path.expanduser(str(input_dir))).resolve()
        if out == folder:
            refuse(folder, "is the input folder (--input_dir)")
        if folder in out.parents:
            refuse(folder, f"is inside the input folder {folder} (--input_dir)")
    try:
        paths = _input_paths(None, input_files, datalist, sections)
    except FileNotFoundError:
        paths = []
    for folder in dict.fromkeys(Path(p).resolve().parent for p in paths):
        if out == folder:
            refuse(folder, "is the folder of input files")
    return str(out)


def inference_datalist(
    input_dir: str | os.PathLike | None = None,
    input_files: str | Sequence[str] | None = None,
    datalist: str | os.PathLike | None = None,
    sections: Sequence[str] = ("training", "validation", "test"),
    report: InferenceReport | None = None,
    min_size: int = MIN_IMAGE_SIZE,
) -> list[dict]:
    """Items ``{"image": path, "image_path": path}`` of every readable input image.

    Args:
        input_dir: a folder; its PNG / JPEG / NIfTI / DICOM files (not recursive), sorted by
            name; its other files are named as skipped in ``report``.
        input_files: paths (a list, a comma-separated string, or a text file with one path a
            line, relative to the text file); a single file that is neither an image nor a
            text list raises ``ValueError`` naming it and the supported formats.
        datalist: a MONAI datalist JSON; the ``image`` of every item of ``sections``.
        sections: the datalist sections to read.
        report: receives the missing and unusable files (with the reason), the skipped files of
            ``input_dir`` and the conversion notes.
        min_size: images smaller than ``min_size`` x ``min_size`` pixels are refused.

    At least one of ``input_dir``, ``input_files`` and ``datalist`` must be given. Duplicates
    are read once; outputs of an inference run (``*.artasyn-*``) are skipped. The files are
    checked in parallel threads (up to 8, one a core). Raises
    ``ValueError`` when nothing was asked for.
    """
    report = report if report is not None else InferenceReport()
    paths = _input_paths(input_dir, input_files, datalist, sections, report)
    if not (input_dir or input_files or datalist):
        raise ValueError(
            "inference needs an input: --input_dir <folder>, --input_files <list or file> or --input_datalist <json>"
        )
    # the pre-check decodes every file: on all cores (PIL and torch work without the GIL)
    todo = [p for p in dict.fromkeys(paths) if not is_inference_output(p)]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        checks = dict(zip(todo, pool.map(lambda p: inspect_image_file(p, min_size), todo)))
    items, seen = [], set()
    for p in paths:
        if p in seen:
            continue
        seen.add(p)
        if is_inference_output(p):
            logger.warning("inference: %s is an output of an inference run, not an input: skipped", p)
            continue
        reason, notes = checks[p]
        if reason is not None:
            report.add_failed(p, reason)
            continue
        if notes:
            report.notes[p] = notes
            logger.info("inference: %s converted on reading (%s)", p, "; ".join(notes))
        items.append({"image": p, "image_path": p})
    report.n_input = len(seen)
    logger.info(
        "inference: %d images to process, %d unreadable, %d skipped (not images)",
        len(items),
        len(report.failed),
        len(report.skipped),
    )
    return items


class RecordSpatialShaped(MapTransform):
    """``d[shape_key]`` = the spatial shape of ``d[key]`` as an int64 tensor (before resizing)."""

    def __init__(self, keys: KeysCollection = "image", shape_key: str = "image_size") -> None:
        super().__init__(keys)
        self.shape_key = shape_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.shape_key] = torch.as_tensor(list(d[key].shape[1:]), dtype=torch.int64)
        return d


class ResizeToShaped(MapTransform):
    """Resize each key (channel-first) to the shape in ``d[shape_key]`` (e.g. back to the original size).

    ``mode``: one per key, ``"bilinear"`` for maps, ``"nearest"`` for masks. Where the item
    holds a box (``d[box_start_key]``, ``d[box_end_key]``: rows and columns, the end exclusive,
    as :class:`artasyn.lungs.LungBoxCropd` records the crop to the lungs), each key is resized
    to the box and placed there on a zero canvas of the shape: outside the crop, nothing was
    examined and nothing is marked.
    """

    def __init__(
        self,
        keys: KeysCollection,
        shape_key: str = "image_size",
        mode: str | Sequence[str] = "bilinear",
        box_start_key: str | None = None,
        box_end_key: str | None = None,
    ) -> None:
        super().__init__(keys)
        self.shape_key = shape_key
        self.mode = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        if len(self.mode) != len(self.keys):
            raise ValueError(f"ResizeToShaped: {len(self.keys)} keys but {len(self.mode)} modes")
        self.box_start_key, self.box_end_key = box_start_key, box_end_key

    @staticmethod
    def _ints(value) -> list[int]:
        return [int(v) for v in torch.as_tensor(value).reshape(-1).tolist()]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.shape_key not in d:
            return d
        shape = self._ints(d[self.shape_key])
        box = None
        if self.box_start_key in d and self.box_end_key in d:
            box = self._ints(d[self.box_start_key]), self._ints(d[self.box_end_key])
        for key, mode in zip(self.keys, self.mode):
            if key not in d:
                continue
            size = shape if box is None else [e - s for s, e in zip(*box)]
            out = torch.as_tensor(d[key])
            if list(out.shape[1:]) != size:
                out = torch.as_tensor(Resize(spatial_size=size, mode=mode, anti_aliasing=False)(out.float()))
            if box is not None:
                canvas = torch.zeros((out.shape[0], *shape), dtype=out.dtype)
                (r0, c0), (r1, c1) = box
                canvas[:, r0:r1, c0:c1] = out
                out = canvas
            d[key] = out
        return d


class SafeDataset(Dataset):
    """A dataset whose items never raise: a file that fails in ``transform`` becomes a placeholder.

    The placeholder is ``fallback_transform`` applied to ``{image: zeros(1, H, W), ...}`` (the
    transforms after loading, so it has the same keys and types as a good item) with
    ``d["failed"]`` the reason; good items get ``d["failed"] = ""``. The writer skips failed
    items and lists them in the CSV and the summary.
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform,
        fallback_transform,
        spatial_size: Sequence[int] = (256, 256),
        image_key: str = "image",
    ) -> None:
        super().__init__(data=data, transform=transform)
        self.fallback_transform = fallback_transform
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.image_key = image_key

    def _transform(self, index: int):
        item = self.data[index]
        try:
            out = apply_transform(self.transform, dict(item))
            out["failed"] = ""
            return out
        except Exception as e:  # reported per file, the run goes on
            reason = root_cause(e, item.get(self.image_key))
            logger.warning("inference: failed to load %s (%s); listed as failed", item.get(self.image_key), reason)
            blank = dict(item)
            blank[self.image_key] = MetaTensor(torch.zeros((1, *self.spatial_size)))
            out = apply_transform(self.fallback_transform, blank)
            out["failed"] = reason
            return out


def colorize(values: np.ndarray) -> np.ndarray:
    """``H x W`` values in [0, 1] to ``H x W x 3`` uint8 colours (an inferno-like map, numpy only).

    Each channel is interpolated between the two anchors around the value (in float64), rounded.
    """
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0) * (len(_CMAP_ANCHORS) - 1)
    lo = np.minimum(v.astype(np.intp), len(_CMAP_ANCHORS) - 2)
    frac = v - lo  # float64
    rest = 1.0 - frac
    out = np.empty((*v.shape, 3), dtype=np.uint8)
    for c in range(3):  # one channel at a time: no H x W x 3 float64 temporaries
        anchors = _CMAP_ANCHORS[:, c].astype(np.float64)
        ch = np.take(anchors, lo)
        ch *= rest
        upper = np.take(anchors, lo + 1)
        upper *= frac
        ch += upper
        out[..., c] = np.clip(np.rint(ch, out=ch), 0, 255, out=ch)
    return out


def overlay_heatmap(
    gray: np.ndarray, heat: np.ndarray, max_alpha: float = 0.7, scale: float | None = None
) -> np.ndarray:
    """The anomaly map in colour over the radiograph: ``H x W x 3`` uint8.

    ``gray``: the radiograph, 0..255. ``heat``: the anomaly map, same size; divided by
    ``scale`` (default: its maximum), coloured with :func:`colorize` and blended with an
    opacity growing with the value, up to ``max_alpha``: ``gray * (1 - alpha) + colour * alpha``
    per channel (float32), rounded.
    """
    gray = np.clip(np.asarray(gray, dtype=np.float32), 0, 255)
    heat = np.asarray(heat, dtype=np.float32)
    peak = float(scale) if scale else float(heat.max())
    norm = heat / peak if peak > 0 else np.zeros_like(heat)
    norm = np.clip(norm, 0.0, 1.0)
    alpha = max_alpha * norm
    base = gray * (1.0 - alpha)
    colour = colorize(norm)
    out = np.empty(colour.shape, dtype=np.uint8)
    ch = np.empty(gray.shape, dtype=np.float32)
    for c in range(3):
        np.multiply(colour[..., c], alpha, out=ch, dtype=np.float32)
        ch += base
        out[..., c] = np.clip(np.rint(ch, out=ch), 0, 255, out=ch)
    return out


#: the overlays' top colour is this many times the checkpoint's ``healthy_peak``: the level of the
#: healthy validation maps sits in the middle of the colours
OVERLAY_PEAK_FACTOR = 2.0
#: zlib level of the PNGs (overlay, mask): level 1 encodes a 1024 x 1024 overlay in about 30 ms
PNG_COMPRESS_LEVEL = 1
#: gzip level of the heat map NIfTI: 0 stores the float32 map uncompressed inside the gzip
#: stream (still a ``.nii.gz`` every reader opens); deflate shrinks these maps by only 10-15 %
#: and level 1 costs about 0.1 s per 1024 x 1024 map
HEATMAP_GZIP_LEVEL = 0


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_bytes(array: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """An 8-bit grey (``H x W``) or RGB (``H x W x 3``) uint8 array as a PNG file's bytes.

    Every row gets the PNG filter "Up" (the difference to the row above, computed with numpy)
    and the rows are deflated at ``compress_level``: a radiograph's rows are alike, so this
    compresses about as well as PIL's per-row adaptive filters at twice the speed.
    """
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"PNG writer: expected a uint8 H x W or H x W x 3 array, got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    rows = a.reshape(h, -1)
    raw = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    raw[:, 0] = 2  # filter type Up
    raw[:1, 1:] = rows[:1]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])  # modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", w, h, 8, 2 if a.ndim == 3 else 0, 0, 0, 0)  # 8 bits, RGB / grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw.data, int(compress_level)))
        + _png_chunk(b"IEND", b"")
    )


def _nifti_gz_bytes(array: np.ndarray, affine: np.ndarray, level: int = HEATMAP_GZIP_LEVEL) -> bytes:
    """A float32 NIfTI-1 image as a gzip stream (the content of a ``.nii.gz`` file) of ``level`` 0-9."""
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine)
    img.header.set_data_dtype(np.float32)
    return gzip.compress(img.to_bytes(), compresslevel=int(level), mtime=0)


def _plane(x) -> np.ndarray:
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    return arr.reshape(-1, *arr.shape[-2:])[0]


def _lungs_found(found) -> str:
    if found is None:
        return ""
    right, left = (bool(v) for v in torch.as_tensor(found).reshape(-1)[:2].tolist())
    return {(True, True): "both", (True, False): "right", (False, True): "left", (False, False): "none"}[(right, left)]


def _lock(path: Path):
    """An exclusive advisory lock on ``path`` (a context manager; POSIX ``flock``, else none)."""
    import contextlib

    @contextlib.contextmanager
    def held():
        try:
            import fcntl
        except ImportError:  # no flock (Windows): runs into one folder must not overlap
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    return held()


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


class AnomalyOutputWriter:
    """Evaluator handler writing the per-image outputs and the CSV rows of an inference run.

    Args:
        output_dir: where to write (created).
        loader: a dictionary transform loading ``{image_key: path}`` as a ``1 x H x W`` image in
            0..255 at the original size, for the overlay (``load_image`` of ``inference.json``:
            :class:`scripts.loading.LoadChestXRayd`); ``None``: the overlay uses the network
            input resized back.
        report: the :class:`InferenceReport` of the datalist (files that were never loaded).
        csv_name: the CSV file name (shared by the runs into ``output_dir``).
        tau: the relative threshold of the masks when they are relative (recorded in the CSV).
        thresholds: the :class:`scripts.thresholds.CheckpointThresholds` of the run (which
            image threshold gave the labels, whether the masks are absolute); ``None``: no
            labels, relative masks.
        save_heatmap, save_overlay, save_mask: which files to write.
        run_id: names this run's rows (default: the UTC start time and a random suffix).
        writer_threads: background threads that draw, encode and write each image's files
            while the engine goes on with the next batch (the CSV rows keep the input order);
            0 writes in the engine's thread.
        overlay_scale: the map value drawn at the top of the overlay's colours: ``"calibrated"``
            (default) twice the checkpoint's ``healthy_peak`` (:data:`OVERLAY_PEAK_FACTOR`:
            the level that 95 % of the healthy validation images' maps stay under is the middle
            of the colours, so a healthy image looks quiet and a brighter error stands out; the
            image's own maximum, with a warning, when the checkpoint has no such level or one
            computed on another map), ``"image"`` (each image's maximum: every overlay uses
            the whole colour range, a healthy image's too), or a positive number.
        png_compress_level: zlib level (0-9) of the overlay and mask PNGs.
        heatmap_gzip_level: gzip level (0-9) of the heat map ``.nii.gz``; 0 stores the map
            uncompressed in the gzip stream (:data:`HEATMAP_GZIP_LEVEL`).

    Per image ``<stem>.artasyn-heatmap.nii.gz``, ``<stem>.artasyn-overlay.png`` and
    ``<stem>.artasyn-mask.png`` (:data:`OUTPUT_SUFFIXES`; ``<stem>_1`` ... when another input,
    of this run or of an earlier one in the CSV, has the stem). Names with ``.artasyn-`` are
    never read as inputs. The CSV gets this run's rows appended at the end, under a lock and
    rewritten atomically, so several runs into one folder keep all their rows. Columns:
    ``run_id``, ``file`` (the input), ``status`` (``ok``, ``failed: reason``, or ``skipped: reason``
    for a file of the input folder that is not an image), ``score`` (mean
    squared error), ``label`` (``abnormal`` / ``normal``; empty without an image threshold),
    ``label_threshold`` (``specificity`` or ``f1``) and ``image_threshold`` (its value: abnormal
    when ``score`` is above it), ``mask_rule`` (``absolute``: ``anomaly_map > mask_threshold``;
    ``relative``: ``|x - r| >= max(0.03, tau * max |x - r|)`` with ``mask_threshold`` = tau),
    ``mask_min_px`` (absolute masks: the smallest connected component kept, in pixels of the
    map at ``spatial_size``; 0 keeps all),
    ``anomaly_area_px``, ``anomaly_area_fraction`` (of the image),
    ``lungs_found`` (``both``, ``right``, ``left``, ``none``), ``heatmap``, ``overlay``,
    ``mask`` (the output file names in ``output_dir``, empty when not written) and ``notes``
    (conversions on reading).
    """

    COLUMNS = (
        "run_id",
        "file",
        "status",
        "score",
        "label",
        "label_threshold",
        "image_threshold",
        "mask_rule",
        "mask_threshold",
        "mask_min_px",
        "anomaly_area_px",
        "anomaly_area_fraction",
        "lungs_found",
        "heatmap",
        "overlay",
        "mask",
        "notes",
    )

    def __init__(
        self,
        output_dir: str | os.PathLike,
        loader=None,
        report: InferenceReport | None = None,
        csv_name: str = "anomaly_scores.csv",
        tau: float = DEFAULT_TAU,
        thresholds=None,
        save_heatmap: bool = True,
        save_overlay: bool = True,
        save_mask: bool = True,
        image_key: str = "image",
        map_key: str = "anomaly_map",
        mask_key: str = "anomaly_mask",
        score_key: str = "score",
        found_key: str = "image_lungs_found",
        label_key: str = "anomaly_label",
        run_id: str | None = None,
        writer_threads: int = 1,
        png_compress_level: int = PNG_COMPRESS_LEVEL,
        heatmap_gzip_level: int = HEATMAP_GZIP_LEVEL,
        overlay_scale: str | float = "calibrated",
    ) -> None:
        self.output_dir = Path(os.path.expanduser(str(output_dir)))
        self.loader = loader
        self.report = report if report is not None else InferenceReport()
        self.csv_name = csv_name
        self.tau = float(tau)
        self.thresholds = thresholds
        self.save_heatmap = as_bool(save_heatmap, "save_heatmap")
        self.save_overlay = as_bool(save_overlay, "save_overlay")
        self.save_mask = as_bool(save_mask, "save_mask")
        self.image_key, self.map_key, self.mask_key = image_key, map_key, mask_key
        self.score_key, self.found_key, self.label_key = score_key, found_key, label_key
        self._run_id = run_id
        self.run_id = run_id or ""
        self.rows: list[dict] = []
        self._stems: dict[str, str] = {}
        self._t0 = 0.0
        self.writer_threads = int(writer_threads)
        for name, level in (("png_compress_level", png_compress_level), ("heatmap_gzip_level", heatmap_gzip_level)):
            if not 0 <= int(level) <= 9:
                raise ValueError(f"AnomalyOutputWriter: {name} must be in 0..9, got {level}")
        if self.writer_threads < 0:
            raise ValueError(f"AnomalyOutputWriter: writer_threads must be >= 0, got {writer_threads}")
        self.png_compress_level, self.heatmap_gzip_level = int(png_compress_level), int(heatmap_gzip_level)
        self.overlay_scale, self.overlay_peak = self._overlay_peak(overlay_scale)
        self._pool = None
        self._pending: deque = deque()  # per item of the run, in order: its row, or the future of its row

    def _overlay_peak(self, choice) -> tuple[str, float | None]:
        """``(what the overlays are scaled by, the map value at the top of the colours or None per image)``."""
        if isinstance(choice, str) and choice in ("calibrated", "image"):
            if choice == "image":
                return "image", None
            level = getattr(self.thresholds, "healthy_peak", None)
            if level is not None and level > 0:
                return "calibrated", OVERLAY_PEAK_FACTOR * float(level)
            if not self.save_overlay:
                return "image", None
            logger.warning(
                "inference: the checkpoint has no healthy map level for this map (thresholds saved before it was "
                "recorded, or for other map options): each overlay is scaled to its own maximum"
            )
            return "image", None
        try:
            value = float(choice)
        except (TypeError, ValueError):
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"AnomalyOutputWriter: overlay_scale must be 'calibrated', 'image' or a positive number, got {choice!r}"
            )
        return "fixed", value

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_items)
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _start(self, engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.rows, self._t0 = [], time.perf_counter()
        self._pending.clear()
        if self.save_overlay:
            logger.info(
                "inference: overlays coloured %s",
                "up to each image's own maximum"
                if self.overlay_peak is None
                else f"up to {self.overlay_peak:.6g} ({self.overlay_scale})",
            )
        if self.writer_threads > 0 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.writer_threads, thread_name_prefix="artasyn-writer")
        self.run_id = self._run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        # stems that earlier runs into this folder gave to other inputs stay theirs
        self._stems = {}
        for row in _read_csv(self.output_dir / self.csv_name)[1]:
            for kind in OUTPUT_SUFFIXES:
                name = row.get(kind) or ""
                if name.endswith(OUTPUT_SUFFIXES[kind]):
                    self._stems.setdefault(name[: -len(OUTPUT_SUFFIXES[kind])], row.get("file", ""))

    def _unique_stem(self, path: str) -> str:
        stem = _stem(path) or "image"
        name, i = stem, 0
        while self._stems.get(name, path) != path:
            i += 1
            name = f"{stem}_{i}"
        self._stems[name] = path
        return name

    def _target(self, stem: str, kind: str, inputs: set) -> Path:
        path = self.output_dir / f"{stem}{OUTPUT_SUFFIXES[kind]}"
        if str(path.resolve()) in inputs:
            raise ValueError(f"output {path} would overwrite an input of this run: refused")
        return path

    def _original(self, path: str, item: dict, shape: tuple[int, int]) -> np.ndarray:
        if self.loader is not None:
            try:
                return _plane(self.loader({self.image_key: path})[self.image_key])
            except Exception as e:  # the overlay falls back to the network input
                logger.warning("inference: overlay of %s drawn on the resized input (%s)", path, root_cause(e))
        img = torch.as_tensor(item[self.image_key]).float()[:1] * 255.0
        return _plane(Resize(spatial_size=shape, mode="bilinear")(img))

    def _write_items(self, engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        output = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for b, o in zip(batch, output):
            item = {**b, **o}
            path = str(item.get("image_path", ""))
            failed = item.get("failed", "")
            if failed:
                self._pending.append(self._failed_row(path, failed))
                continue
            stem = self._unique_stem(path)  # here, in input order, whichever thread writes
            if self._pool is None:
                self._pending.append(self._write_or_fail(path, item, stem))
            else:
                self._pending.append(self._pool.submit(self._write_or_fail, path, item, stem))
        self._collect(keep=4 * self.writer_threads)  # bounded: each pending item holds full-size maps

    def _collect(self, keep: int = 0) -> None:
        """Move the rows of the written items to ``self.rows`` (in order) until ``keep`` are pending."""
        while len(self._pending) > keep:
            row = self._pending.popleft()
            self.rows.append(row.result() if isinstance(row, Future) else row)

    def _write_or_fail(self, path: str, item: dict, stem: str) -> dict:
        try:
            return self._write_one(path, item, stem)
        except Exception as e:  # a write error is one failed row, not a failed run
            reason = root_cause(e, path)
            logger.warning("inference: could not write the outputs of %s (%s)", path, reason)
            return self._failed_row(path, reason)

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _failed_row(self, path: str, reason: str) -> dict:
        row = dict.fromkeys(self.COLUMNS, "")
        row.update(run_id=self.run_id, file=path, status=f"failed: {reason}")
        return row

    def _write_one(self, path: str, item: dict, stem: str | None = None) -> dict:
        heat = _plane(item[self.map_key]).astype(np.float32)
        mask = _plane(item[self.mask_key]) > 0.5
        stem = self._unique_stem(path) if stem is None else stem
        inputs = {str(Path(path).resolve())}
        affine = np.eye(4)
        meta = getattr(item.get(self.image_key), "meta", None) or {}
        if str(path).lower().endswith((".nii", ".nii.gz")) and "original_affine" in meta:
            affine = np.asarray(meta["original_affine"], dtype=np.float64)
        names = dict.fromkeys(OUTPUT_SUFFIXES, "")
        if self.save_heatmap:
            names["heatmap"] = atomic_write(
                self._target(stem, "heatmap", inputs), _nifti_gz_bytes(heat, affine, self.heatmap_gzip_level)
            ).name
        if self.save_mask:
            names["mask"] = atomic_write(
                self._target(stem, "mask", inputs),
                _png_bytes(mask.astype(np.uint8) * np.uint8(255), self.png_compress_level),
            ).name
        if self.save_overlay:
            gray = self._original(path, item, heat.shape)
            if gray.shape != heat.shape:
                gray = _plane(Resize(spatial_size=heat.shape, mode="bilinear")(torch.as_tensor(gray)[None].float()))
            names["overlay"] = atomic_write(
                self._target(stem, "overlay", inputs),
                _png_bytes(overlay_heatmap(gray, heat, scale=self.overlay_peak), self.png_compress_level),
            ).name
        area = int(mask.sum())
        return {
            "run_id": self.run_id,
            "file": path,
            "status": "ok",
            "score": f"{float(torch.as_tensor(item[self.score_key]).reshape(-1)[0]):.9g}",
            **self._decision(item),
            "anomaly_area_px": area,
            "anomaly_area_fraction": f"{area / mask.size:.6f}",
            "lungs_found": _lungs_found(item.get(self.found_key)),
            **names,
            "notes": "; ".join(self.report.notes.get(path, [])),
        }

    def _decision(self, item: dict) -> dict:
        """The label columns and the mask-rule columns of one item."""
        t = self.thresholds
        label = item.get(self.label_key)
        out = {"label": "", "label_threshold": "", "image_threshold": ""}
        if label is not None and t is not None and t.image_threshold is not None:
            abnormal = float(torch.as_tensor(label).reshape(-1)[0]) > 0.5
            out = {
                "label": "abnormal" if abnormal else "normal",
                "label_threshold": t.label_threshold,
                "image_threshold": f"{t.image_threshold:.9g}",
            }
        if t is not None and t.pixel_threshold is not None:
            out.update(mask_rule="absolute", mask_threshold=f"{t.pixel_threshold:.9g}", mask_min_px=str(t.min_mask_px))
        else:
            out.update(mask_rule="relative", mask_threshold=f"{self.tau:g}")
        return out

    def append_rows(self, rows: list[dict]) -> Path:
        """Append ``rows`` to the CSV of ``output_dir``: under a lock, the whole file rewritten atomically."""
        path = self.output_dir / self.csv_name
        with _lock(self.output_dir / f".{self.csv_name}.lock"):
            fields, old = _read_csv(path)
            columns = list(self.COLUMNS) + [f for f in fields if f not in self.COLUMNS]
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
            writer.writeheader()
            writer.writerows(old)
            writer.writerows(rows)
            atomic_write(path, buf.getvalue())
        return path

    def _skipped_row(self, path: str, reason: str) -> dict:
        row = dict.fromkeys(self.COLUMNS, "")
        row.update(run_id=self.run_id, file=path, status=f"skipped: {reason}")
        return row

    def _finish(self, engine) -> None:
        try:
            self._collect()
        finally:
            self._shutdown()
        rows = self.rows + [self._failed_row(f["path"], f["reason"]) for f in self.report.failed]
        skipped = [self._skipped_row(f["path"], f["reason"]) for f in self.report.skipped]
        self.append_rows(rows + skipped)
        ok = [r for r in rows if r["status"] == "ok"]
        failed = len(rows) - len(ok)
        with_anomaly = sum(1 for r in ok if int(r["anomaly_area_px"]) > 0)
        no_lung = sum(1 for r in ok if r["lungs_found"] == "none")
        elapsed = time.perf_counter() - self._t0
        self.summary = {
            "run_id": self.run_id,
            "images": len(rows),
            "written": len(ok),
            "failed": failed,
            "skipped": len(skipped),
            "with_anomaly": with_anomaly,
            "no_lung": no_lung,
            "seconds": elapsed,
            "images_per_second": len(ok) / elapsed if elapsed > 0 else float("nan"),
        }
        abnormal = sum(1 for r in ok if r.get("label") == "abnormal")
        normal = sum(1 for r in ok if r.get("label") == "normal")
        self.summary.update(abnormal=abnormal, normal=normal)
        t = self.thresholds
        if t is not None and t.image_threshold is not None:
            labels = f"{abnormal} abnormal, {normal} normal (score > {t.image_threshold:.6g}, {t.label_threshold})"
        else:
            labels = "no labels (no image threshold in the checkpoint)"
        if t is not None and t.pixel_threshold is not None:
            g = getattr(t, "mask_gate_threshold", None)
            gate = "" if g is None else f", only on images with score > {g:.6g}"
            masks = (
                f"masks: anomaly map > {t.pixel_threshold:.6g} (components of {t.min_mask_px}+ px{gate}), "
                f"{with_anomaly} not empty"
            )
        else:
            masks = f"masks: relative, tau {self.tau:g}"
        line = (
            f"inference: {len(rows)} images, {len(ok)} written, {failed} failed, {len(skipped)} skipped "
            f"(not images), {no_lung} without lungs found; "
            f"{labels}; {masks}; {elapsed:.1f} s ({self.summary['images_per_second']:.2f} images/s); "
            f"outputs in {self.output_dir} (CSV: {self.csv_name}, run {self.run_id})"
        )
        logger.info(line)  # each failed file was named when it failed (and has its CSV row)
