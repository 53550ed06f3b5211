"""Inference of the bundle on new radiographs (``configs/inference.json``, ``docs/method.md`` section 4).

What runs, in order (the ids of ``inference.json``):

- :func:`inference_datalist`: the images to read, from a folder, a list of files (or a text
  file of paths, one a line) or a MONAI datalist JSON; every file is checked first, and a
  missing or unreadable one is recorded in the :class:`InferenceReport` (logged, and a
  ``failed`` row of the CSV), never fatal.
- ``preprocessing``: :class:`scripts.loading.LoadChestXRayd` (the loading chain of training
  and evaluation too: rows first, grey, 0..255 with 16-bit images scaled by their bit depth),
  :class:`RecordSpatialShaped` (the original size), resize to ``spatial_size``, PBTSeg lungs,
  [0, 1] scaling. :class:`SafeDataset` turns a file that still fails while loading into a
  placeholder item marked ``failed``, so one bad file does not stop the run.
- the network (EMA weights of ``models/model.pt``) reconstructs the healthy image;
- ``postprocessing``: :class:`artasyn.scoring.AnomalyScored` (anomaly map ``(x - r)^2``,
  image score = its mean, mask ``|x - r| >= max(0.03, tau * max |x - r|)`` per image,
  optionally inside the PBTSeg lungs) into ``anomaly_map``, ``score`` and ``anomaly_mask``;
  :class:`ResizeToShaped` brings the map and the mask back to the original size; ``recon``
  keeps the reconstruction. ``pred``, the bundle's output (what MONAI Label writes and shows),
  is the binary mask as a ``uint8`` ``W x H`` array: MONAI's default (column-first) layout of a
  2-D image, which MONAI's and MONAI Label's image writers expect.
- :class:`AnomalyOutputWriter` (an evaluator handler) writes per image
  ``<stem>_heatmap.nii.gz`` (float32 map at the original size), ``<stem>_overlay.png`` (the
  map in colour over the radiograph), ``<stem>_mask.png`` ({0, 255}), one row of
  ``anomaly_scores.csv`` (file, score, anomaly area in pixels and as a fraction, lungs found,
  status), all written atomically (temporary file, then rename), and logs a summary line.

Example (a checkpoint trained by the bundle in ``bundle/models/model.pt``)::

    python -m monai.bundle run --config_file bundle/configs/inference.json \\
        --input_dir /data/new_cxrs --output_dir /tmp/anomaly_out
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import Dataset, MetaTensor
from monai.transforms import MapTransform, Resize
from monai.transforms.transform import apply_transform

from .datalist import IMAGE_SUFFIXES, _stem, check_image_file, find_images, load_datalist_json

__all__ = [
    "AnomalyOutputWriter",
    "InferenceReport",
    "RecordSpatialShaped",
    "ResizeToShaped",
    "SafeDataset",
    "colorize",
    "inference_datalist",
    "overlay_heatmap",
    "require_file",
]

logger = logging.getLogger("artasyn.bundle")

#: colour map of the overlays (anchors of an "inferno"-like map: black, purple, red, orange, pale yellow)
_CMAP_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


class InferenceReport:
    """The files an inference run could not use, by path and reason, and its counts."""

    def __init__(self) -> None:
        self.failed: list[dict] = []
        self.n_input = 0

    def add_failed(self, path: str, reason: str) -> None:
        self.failed.append({"path": str(path), "reason": str(reason)})
        logger.warning("inference: cannot read %s (%s); listed as failed, the run continues", path, reason)


def require_file(path: str | os.PathLike, what: str = "checkpoint") -> str:
    """``path`` if it is a file, else a ``FileNotFoundError`` that says what to do."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path} (train the bundle first, or pass --ckpt_path <file.pt>)")
    return str(path)


def _file_list(input_files) -> list[str]:
    if not input_files:
        return []
    if isinstance(input_files, (str, os.PathLike)):
        p = Path(os.path.expanduser(str(input_files)))
        if p.is_file() and not p.name.lower().endswith(IMAGE_SUFFIXES):  # a text file of paths
            base = p.parent
            lines = [ln.strip() for ln in p.read_text().splitlines()]
            return [str(base / ln) if not os.path.isabs(ln) else ln for ln in lines if ln and not ln.startswith("#")]
        return [s.strip() for s in str(input_files).split(",") if s.strip()]
    return [str(f) for f in input_files]


def inference_datalist(
    input_dir: str | os.PathLike | None = None,
    input_files: str | Sequence[str] | None = None,
    datalist: str | os.PathLike | None = None,
    sections: Sequence[str] = ("training", "validation", "test"),
    report: InferenceReport | None = None,
) -> list[dict]:
    """Items ``{"image": path, "image_path": path}`` of every readable input image.

    Args:
        input_dir: a folder; its PNG / JPEG / NIfTI files (not recursive), sorted by name.
        input_files: paths (a list, a comma-separated string, or a text file with one path a
            line, relative to the text file).
        datalist: a MONAI datalist JSON; the ``image`` of every item of ``sections``.
        sections: the datalist sections to read.
        report: receives the missing and unreadable files (with the reason).

    At least one of ``input_dir``, ``input_files`` and ``datalist`` must be given. Duplicates
    are read once. Raises ``ValueError`` when nothing was asked for.
    """
    report = report if report is not None else InferenceReport()
    paths: list[str] = []
    if input_dir:
        folder = Path(os.path.expanduser(str(input_dir)))
        if not folder.is_dir():
            raise FileNotFoundError(f"input_dir {folder} is not a folder")
        found = find_images(folder)
        if not found:
            logger.warning("inference: no PNG / JPEG / NIfTI image in %s", folder)
        paths += found
    paths += _file_list(input_files)
    if datalist:
        for section in sections:
            paths += [it["image"] for it in load_datalist_json(Path(os.path.expanduser(str(datalist))), section)]
    if not (input_dir or input_files or datalist):
        raise ValueError(
            "inference needs an input: --input_dir <folder>, --input_files <list or file> or --input_datalist <json>"
        )
    items, seen = [], set()
    for p in paths:
        if p in seen:
            continue
        seen.add(p)
        reason = check_image_file(p)
        if reason is not None:
            report.add_failed(p, reason)
            continue
        items.append({"image": p, "image_path": p})
    report.n_input = len(seen)
    logger.info("inference: %d images to process, %d unreadable", len(items), len(report.failed))
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

    ``mode``: one per key, ``"bilinear"`` for maps, ``"nearest"`` for masks.
    """

    def __init__(
        self, keys: KeysCollection, shape_key: str = "image_size", mode: str | Sequence[str] = "bilinear"
    ) -> None:
        super().__init__(keys)
        self.shape_key = shape_key
        self.mode = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        if len(self.mode) != len(self.keys):
            raise ValueError(f"ResizeToShaped: {len(self.keys)} keys but {len(self.mode)} modes")

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.shape_key not in d:
            return d
        shape = [int(s) for s in torch.as_tensor(d[self.shape_key]).reshape(-1).tolist()]
        for key, mode in zip(self.keys, self.mode):
            if key in d and list(d[key].shape[1:]) != shape:
                out = Resize(spatial_size=shape, mode=mode, anti_aliasing=False)(torch.as_tensor(d[key]).float())
                d[key] = torch.as_tensor(out)
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
            cause = e.__cause__ or e
            reason = f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
            logger.warning("inference: failed to load %s (%s); listed as failed", item.get(self.image_key), reason)
            blank = dict(item)
            blank[self.image_key] = MetaTensor(torch.zeros((1, *self.spatial_size)))
            out = apply_transform(self.fallback_transform, blank)
            out["failed"] = reason
            return out


def colorize(values: np.ndarray) -> np.ndarray:
    """``H x W`` values in [0, 1] to ``H x W x 3`` uint8 colours (an inferno-like map, numpy only)."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0) * (len(_CMAP_ANCHORS) - 1)
    lo = np.minimum(v.astype(np.int64), len(_CMAP_ANCHORS) - 2)
    frac = (v - lo)[..., None]
    rgb = _CMAP_ANCHORS[lo] * (1.0 - frac) + _CMAP_ANCHORS[lo + 1] * frac
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def overlay_heatmap(
    gray: np.ndarray, heat: np.ndarray, max_alpha: float = 0.7, scale: float | None = None
) -> np.ndarray:
    """The anomaly map in colour over the radiograph: ``H x W x 3`` uint8.

    ``gray``: the radiograph, 0..255. ``heat``: the anomaly map, same size; divided by
    ``scale`` (default: its maximum), coloured with :func:`colorize` and blended with an
    opacity growing with the value, up to ``max_alpha``.
    """
    gray = np.clip(np.asarray(gray, dtype=np.float32), 0, 255)
    heat = np.asarray(heat, dtype=np.float32)
    peak = float(scale) if scale else float(heat.max())
    norm = heat / peak if peak > 0 else np.zeros_like(heat)
    norm = np.clip(norm, 0.0, 1.0)
    alpha = (max_alpha * norm)[..., None]
    base = np.repeat(gray[..., None], 3, axis=-1)
    out = base * (1.0 - alpha) + colorize(norm).astype(np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _nifti_gz_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A float32 NIfTI-1 image, gzip-compressed (the content of a ``.nii.gz`` file)."""
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine)
    img.header.set_data_dtype(np.float32)
    return gzip.compress(img.to_bytes(), compresslevel=1)


def _plane(x) -> np.ndarray:
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    return arr.reshape(-1, *arr.shape[-2:])[0]


def _lungs_found(found) -> str:
    if found is None:
        return ""
    right, left = (bool(v) for v in torch.as_tensor(found).reshape(-1)[:2].tolist())
    return {(True, True): "both", (True, False): "right", (False, True): "left", (False, False): "none"}[(right, left)]


class AnomalyOutputWriter:
    """Evaluator handler writing the per-image outputs and the CSV of an inference run.

    Args:
        output_dir: where to write (created).
        loader: a dictionary transform loading ``{image_key: path}`` as a ``1 x H x W`` image in
            0..255 at the original size, for the overlay (``load_image`` of ``inference.json``:
            :class:`scripts.loading.LoadChestXRayd`); ``None``: the overlay uses the network
            input resized back.
        report: the :class:`InferenceReport` of the datalist (files that were never loaded).
        csv_name: the CSV file name.
        tau: the relative threshold of the masks (recorded in the log).
        save_heatmap, save_overlay, save_mask: which files to write.

    Per image ``<stem>_heatmap.nii.gz``, ``<stem>_overlay.png`` and ``<stem>_mask.png``
    (``<stem>_1`` ... when two inputs share a stem). ``anomaly_scores.csv`` columns: ``file``,
    ``score`` (mean squared error), ``anomaly_area_px``, ``anomaly_area_fraction`` (of the image),
    ``lungs_found`` (``both``, ``right``, ``left``, ``none``), ``status`` (``ok`` or
    ``failed: reason``).
    """

    COLUMNS = ("file", "score", "anomaly_area_px", "anomaly_area_fraction", "lungs_found", "status")

    def __init__(
        self,
        output_dir: str | os.PathLike,
        loader=None,
        report: InferenceReport | None = None,
        csv_name: str = "anomaly_scores.csv",
        tau: float = 0.2,
        save_heatmap: bool = True,
        save_overlay: bool = True,
        save_mask: bool = True,
        image_key: str = "image",
        map_key: str = "anomaly_map",
        mask_key: str = "anomaly_mask",
        score_key: str = "score",
        found_key: str = "image_lungs_found",
    ) -> None:
        self.output_dir = Path(os.path.expanduser(str(output_dir)))
        self.loader = loader
        self.report = report if report is not None else InferenceReport()
        self.csv_name = csv_name
        self.tau = float(tau)
        self.save_heatmap, self.save_overlay, self.save_mask = bool(save_heatmap), bool(save_overlay), bool(save_mask)
        self.image_key, self.map_key, self.mask_key = image_key, map_key, mask_key
        self.score_key, self.found_key = score_key, found_key
        self.rows: list[dict] = []
        self._stems: set[str] = set()
        self._t0 = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_items)
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _start(self, engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.rows, self._stems, self._t0 = [], set(), time.perf_counter()

    def _unique_stem(self, path: str) -> str:
        stem = _stem(path) or "image"
        name, i = stem, 0
        while name in self._stems:
            i += 1
            name = f"{stem}_{i}"
        self._stems.add(name)
        return name

    def _original(self, path: str, item: dict, shape: tuple[int, int]) -> np.ndarray:
        if self.loader is not None:
            try:
                return _plane(self.loader({self.image_key: path})[self.image_key])
            except Exception as e:  # the overlay falls back to the network input
                logger.warning("inference: overlay of %s drawn on the resized input (%s)", path, e)
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
                self.rows.append(self._failed_row(path, failed))
                continue
            try:
                self.rows.append(self._write_one(path, item))
            except Exception as e:  # a write error is one failed row, not a failed run
                reason = f"{type(e).__name__}: {e}"
                logger.warning("inference: could not write the outputs of %s (%s)", path, reason)
                self.rows.append(self._failed_row(path, reason))

    def _failed_row(self, path: str, reason: str) -> dict:
        return {
            "file": path,
            "score": "",
            "anomaly_area_px": "",
            "anomaly_area_fraction": "",
            "lungs_found": "",
            "status": f"failed: {reason}",
        }

    def _write_one(self, path: str, item: dict) -> dict:
        heat = _plane(item[self.map_key]).astype(np.float32)
        mask = _plane(item[self.mask_key]) > 0.5
        stem = self._unique_stem(path)
        affine = np.eye(4)
        meta = getattr(item.get(self.image_key), "meta", None) or {}
        if str(path).lower().endswith((".nii", ".nii.gz")) and "original_affine" in meta:
            affine = np.asarray(meta["original_affine"], dtype=np.float64)
        if self.save_heatmap:
            _atomic_write_bytes(self.output_dir / f"{stem}_heatmap.nii.gz", _nifti_gz_bytes(heat, affine))
        if self.save_mask:
            _atomic_write_bytes(self.output_dir / f"{stem}_mask.png", _png_bytes(mask.astype(np.uint8) * np.uint8(255)))
        if self.save_overlay:
            gray = self._original(path, item, heat.shape)
            if gray.shape != heat.shape:
                gray = _plane(Resize(spatial_size=heat.shape, mode="bilinear")(torch.as_tensor(gray)[None].float()))
            _atomic_write_bytes(self.output_dir / f"{stem}_overlay.png", _png_bytes(overlay_heatmap(gray, heat)))
        area = int(mask.sum())
        return {
            "file": path,
            "score": f"{float(torch.as_tensor(item[self.score_key]).reshape(-1)[0]):.9g}",
            "anomaly_area_px": area,
            "anomaly_area_fraction": f"{area / mask.size:.6f}",
            "lungs_found": _lungs_found(item.get(self.found_key)),
            "status": "ok",
        }

    def _finish(self, engine) -> None:
        rows = self.rows + [self._failed_row(f["path"], f["reason"]) for f in self.report.failed]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write_bytes(self.output_dir / self.csv_name, buf.getvalue().encode("utf-8"))
        ok = [r for r in rows if r["status"] == "ok"]
        failed = len(rows) - len(ok)
        with_anomaly = sum(1 for r in ok if int(r["anomaly_area_px"]) > 0)
        no_lung = sum(1 for r in ok if r["lungs_found"] == "none")
        elapsed = time.perf_counter() - self._t0
        self.summary = {
            "images": len(rows),
            "written": len(ok),
            "failed": failed,
            "with_anomaly": with_anomaly,
            "no_lung": no_lung,
            "seconds": elapsed,
            "images_per_second": len(ok) / elapsed if elapsed > 0 else float("nan"),
        }
        line = (
            f"inference: {len(rows)} images, {len(ok)} written, {failed} failed, {no_lung} without lungs found; "
            f"tau {self.tau:g}; {elapsed:.1f} s ({self.summary['images_per_second']:.2f} images/s); "
            f"outputs in {self.output_dir} (CSV: {self.csv_name})"
        )
        logger.info(line)
        print(line, flush=True)
        for f in rows:
            if f["status"] != "ok":
                logger.warning("inference: %s %s", f["file"], f["status"])
