"""Datalists for the bundle: the authors' folder layout or a MONAI datalist JSON.

The files of a folder that are not images (:func:`scripts.loading.is_image_file`: PNG, JPEG,
NIfTI, DICOM) are named as skipped, each once, in the log and in the JSON data report
(``skipped``), and counted. Every image is checked before a workflow starts, by decoding it in full through the loading
chain the workflow uses (:func:`scripts.loading.check_radiograph`); a file that cannot be used
(unreadable, truncated, NaN / infinite values, not 2-D, smaller than ``min_size``, constant)
is left out and listed by path with its reason in the log and in the JSON data report
(``rejected``), never dropped silently; a file accepted with a conversion (alpha dropped,
palette, values rescaled to 0..255) is listed under ``converted``. A file that still fails
later (in the lung cache, in a DataLoader worker) is added to ``rejected`` by
:class:`scripts.lungs.LungCheck` and left out. PBTSeg's no-lung images are added to the same
report.

Items:

- training (healthy images only): ``{"image": path, "image_path": path}``;
- validation / test: ``{"image": path, "image_path": path, "label": 0 | 1, "mask": path or ""}``
  where ``label`` is 1 for a diseased image and ``mask`` its lesion mask (``""``: no mask;
  such an image counts for AP / AUC but not for Dice). ``image_path`` keeps the file name
  through loading and caching, for the per-image outputs.

Folder layout (the authors', ``docs/method.md``; masks matched by file stem)::

    <root>/train/healthy/*            training, healthy
    <root>/val/{healthy,diseased}/*   validation (optional; otherwise split from test)
    <root>/test/healthy/*             test, label 0
    <root>/test/diseased/*            test, label 1
    <root>/test/diseased_mask/*       lesion masks (also <root>/ground_truth/diseased/*, the
                                      authors' place, and <root>/test/masks/*)

Datalist JSON (MONAI's, paths relative to the JSON file or to ``base_dir``)::

    {
        "training": [{"image": "a.png"}, ...],
        "validation": [{"image": "b.png", "label": 1, "mask": "b_mask.png"}, ...],
        "test": [...],
    }

Without a ``validation`` (or ``val``) folder or section, validation is a deterministic
``val_fraction`` of the test items (interleaved over the sorted file names, per label), and
the ``test`` section is the rest, so that the checkpoint chosen on validation is evaluated
on images it was not chosen on.

Example::

    >>> from scripts.datalist import build_datalist, DataReport
    >>> report = DataReport()
    >>> train = build_datalist("/data/cxr", "training", report=report)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .dicom import has_dicom_preamble
from .loading import IMAGE_SUFFIXES, MIN_IMAGE_SIZE, SUPPORTED_FORMATS, check_radiograph, is_image_file, read_radiograph

__all__ = [
    "IMAGE_SUFFIXES",
    "DataReport",
    "build_datalist",
    "check_image_file",
    "check_mask_file",
    "inspect_image_file",
    "data_source",
    "ensure_dataset",
    "find_images",
    "is_inference_output",
    "load_datalist_json",
    "skip_reason",
    "split_validation",
]

logger = logging.getLogger("artasyn.bundle")

MASK_DIRS = ("{split}/diseased_mask", "{split}/masks", "ground_truth/diseased")
SECTIONS = ("training", "validation", "test")
#: what names the outputs of ``run inference`` (``<stem>.artasyn-mask.png``, ...): never read as inputs
INFERENCE_OUTPUT_TAG = ".artasyn-"


def _stem(path: str | Path) -> str:
    """The name without its image suffix; a DICOM file named without one (``1.2.840.5``) keeps its whole name."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if has_dicom_preamble(path) else Path(name).stem


def is_inference_output(path: str | Path) -> bool:
    """Whether ``path`` is named as an output of ``run inference`` (``<stem>.artasyn-<kind>.<ext>``)."""
    return INFERENCE_OUTPUT_TAG in Path(path).name


def skip_reason(path: str | Path) -> str:
    """Why a file of a folder is not read as an image (it names the supported formats)."""
    path = Path(path)
    kind = f"{path.suffix!r} file" if path.suffix else "file without a suffix or the DICOM preamble"
    return f"not an image type the bundle reads ({kind}); supported: {SUPPORTED_FORMATS}"


def find_images(folder: str | Path, report=None) -> list[str]:
    """Image files of ``folder`` (not recursive), sorted by name; ``[]`` if it doesn't exist.

    Images are the files :func:`scripts.loading.is_image_file` accepts (PNG, JPEG, NIfTI by their
    suffix, DICOM by its suffix or its preamble). Every other file is named as skipped with
    :func:`skip_reason`: through ``report.add_skipped(path, reason)`` (a :class:`DataReport` or
    an inference report, which log it once and keep it for their JSON / CSV), else in a warning.
    Outputs of an earlier inference run (:func:`is_inference_output`), hidden files (``.*``)
    and sub-folders are not read either: they are counted in the log.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    images, skipped, outputs, hidden, folders = [], [], 0, 0, 0
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            folders += 1
        elif p.name.startswith("."):
            hidden += 1
        elif is_inference_output(p):
            outputs += 1
        elif is_image_file(p):
            images.append(str(p))
        else:
            skipped.append(str(p))
    for p in skipped:
        if report is not None:
            report.add_skipped(p, skip_reason(p))
        else:
            logger.warning("file skipped: %s (%s)", p, skip_reason(p))
    counts = [
        (len(skipped), "skipped (not images)"),
        (outputs, f"outputs of an inference run skipped (*{INFERENCE_OUTPUT_TAG}*)"),
        (hidden, "hidden files not read"),
        (folders, "sub-folders not read (folders are not read recursively)"),
    ]
    said = [f"{n} {what}" for n, what in counts if n]
    if said:
        logger.info("%s: %d images; %s", folder, len(images), ", ".join(said))
    return images


def inspect_image_file(path: str | Path, min_size: int = MIN_IMAGE_SIZE) -> tuple[str | None, list[str]]:
    """``(reason, notes)`` of :func:`scripts.loading.check_radiograph`: the file decoded in full.

    ``reason`` is ``None`` when the image can be used, else why not; ``notes`` name the
    conversions an accepted image goes through (alpha dropped, palette, values rescaled).
    """
    return check_radiograph(path, min_size=min_size)


def check_image_file(path: str | Path, min_size: int = MIN_IMAGE_SIZE) -> str | None:
    """``None`` if ``path`` can be used as an image, else the reason it cannot.

    Every pixel is decoded through the workflows' own loading chain (PNG / JPEG / NIfTI / DICOM), so a
    truncated stream, an unsupported layout, NaN / infinite values, an image smaller than
    ``min_size`` or a constant image are found here, before any workflow starts.
    """
    return inspect_image_file(path, min_size)[0]


def check_mask_file(path: str | Path) -> tuple[str | None, bool]:
    """``(reason, empty)`` of a lesion mask: decoded in full; ``empty`` when it marks no pixel."""
    from .utils import root_cause

    path = Path(path)
    if not path.is_file():
        return "file not found", False
    try:
        m = read_radiograph(path).as_tensor().float()
        if not bool(torch.isfinite(m).all()):
            return "non-finite values in the mask", False
        return None, not bool((m > 0.5 * float(m.max())).any()) if float(m.max()) > 0 else True
    except Exception as e:
        return root_cause(e), False


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


class DataReport:
    """What the data preparation found, by path: logged, counted and saved as JSON (atomically).

    ``skipped``: files of the data folders that are not images, each ``{"path", "reason"}``.
    ``rejected``: files left out, each ``{"path", "reason", "stage"}`` (``stage``: ``pre-check``,
    or ``lung cache`` for a file that failed later); the JSON also carries them under their
    former name ``unreadable``. ``converted``: accepted images read with a conversion
    (``{"path", "note"}``). ``no_lung`` / ``one_lung``: images where PBTSeg found no lung / one
    lung only (kept: the network still learns to reconstruct them; a no-lung image gets no
    synthetic anomaly, a one-lung image gets its anomalies in the lung found). ``missing_mask``:
    diseased images without a usable lesion mask (AP / AUC only).
    ``cache``: what the lung cache did (``reused``, ``computed``, ``recomputed_changed``,
    ``recomputed_damaged``). ``files``: every image the datalists accepted (not saved; the
    log filter of :mod:`scripts.logs` leaves the library's warnings about them to this report).

    Each per-file fact is logged once, when it is recorded (a rejected file and a file without
    lungs as a warning, a conversion as information); :meth:`log` then gives the counts.
    ``log_files=False``: a scratch report whose lung facts are recorded again elsewhere (the
    per-rank shards of :mod:`scripts.ddp`) logs none.
    """

    def __init__(self, path: str | Path | None = None, log_files: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.skipped: list[dict] = []
        self.log_files = bool(log_files)
        self.rejected: list[dict] = []
        self.converted: list[dict] = []
        self.no_lung: list[str] = []
        self.one_lung: list[str] = []
        self.missing_mask: list[str] = []
        self.counts: dict[str, int] = {}
        self.cache: dict[str, int] = {}
        self.files: set[str] = set()

    @property
    def unreadable(self) -> list[dict]:
        """The former name of :attr:`rejected`."""
        return self.rejected

    def add_rejected(self, path: str, reason: str, stage: str = "pre-check") -> None:
        """Record a file left out (logged as a warning naming it and the reason)."""
        self.rejected.append({"path": str(path), "reason": str(reason), "stage": stage})
        logger.warning("image left out (%s): %s (%s)", stage, path, reason)

    add_unreadable = add_rejected

    def add_skipped(self, path: str, reason: str) -> None:
        """Record a file of a data folder that is not an image (logged once, naming it)."""
        if any(item["path"] == str(path) for item in self.skipped):
            return  # the folder was listed again (validation and test share it)
        self.skipped.append({"path": str(path), "reason": str(reason)})
        logger.warning("file skipped: %s (%s)", path, reason)

    def add_converted(self, path: str, note: str) -> None:
        """Record an accepted image read with a conversion (logged once, naming it)."""
        self.converted.append({"path": str(path), "note": str(note)})
        logger.info("image converted on reading: %s (%s)", path, note)

    def add_no_lung(self, path: str, section: str = "training") -> None:
        """Record an image where PBTSeg found no lung (logged once as a warning, naming it)."""
        if str(path) in self.no_lung:
            return
        self.no_lung.append(str(path))
        if not self.log_files:
            return
        logger.warning(
            "PBTSeg found no lung in %s (%s): kept%s",
            path,
            section,
            "; no synthetic anomaly is painted on it" if section == "training" else "; scored on the whole image",
        )

    def to_dict(self) -> dict:
        return {
            "counts": dict(self.counts),
            "n_skipped": len(self.skipped),
            "n_rejected": len(self.rejected),
            "n_converted": len(self.converted),
            "n_unreadable": len(self.rejected),
            "n_no_lung": len(self.no_lung),
            "n_one_lung": len(self.one_lung),
            "n_missing_mask": len(self.missing_mask),
            "skipped": self.skipped,
            "rejected": self.rejected,
            "converted": self.converted,
            "unreadable": self.rejected,
            "no_lung": self.no_lung,
            "one_lung": self.one_lung,
            "missing_mask": self.missing_mask,
            "cache": dict(self.cache),
        }

    def summary(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in self.counts.items())
        return (
            f"data: {counts}; skipped (not images): {len(self.skipped)}, rejected: {len(self.rejected)}, "
            f"converted: {len(self.converted)}, "
            f"no lung found: {len(self.no_lung)}, one lung only: {len(self.one_lung)}, "
            f"diseased without mask: {len(self.missing_mask)}"
        )

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the report as JSON (atomically) to ``path`` or the report's own path."""
        from .utils import atomic_write

        path = Path(path) if path is not None else self.path
        if path is None:
            return None
        return atomic_write(path, json.dumps(self.to_dict(), indent=2))

    def log(self) -> None:
        """Log the counts (each file was named once when it was recorded) and where the report is."""
        where = f" (every file in {self.path})" if self.path is not None else ""
        logger.info("%s%s", self.summary(), where)


def _checked(items: list[dict], report: DataReport | None, section: str, min_size: int = MIN_IMAGE_SIZE) -> list[dict]:
    """Drop the items whose image cannot be used (reported); a bad or empty mask only loses the mask."""
    report = report if report is not None else DataReport()
    out = []
    for item in items:
        reason, notes = inspect_image_file(item["image"], min_size)
        if reason is not None:
            report.add_rejected(item["image"], reason)
            continue
        for note in notes:
            report.add_converted(item["image"], note)
        report.files.add(str(item["image"]))
        mask = item.get("mask", "")
        if mask:
            reason, empty = check_mask_file(mask)
            if reason is not None:
                report.add_rejected(mask, f"lesion mask of {item['image']}: {reason}")
                item = {**item, "mask": ""}
            elif empty and item.get("label", 0):
                report.add_converted(mask, f"lesion mask of {item['image']} marks no pixel: AP / AUC only")
                item = {**item, "mask": ""}
        if item.get("label", 0) and not item.get("mask", ""):
            report.missing_mask.append(item["image"])
        out.append(item)
    report.counts[section] = len(out)
    return out


def split_validation(items: list[dict], val_fraction: float) -> tuple[list[dict], list[dict]]:
    """Deterministic split of labelled items into (validation, rest).

    Per label, over the items sorted by image path, item ``i`` goes to validation when
    ``floor((i + 1) * f) > floor(i * f)``: exactly ``floor(n * f)`` items, spread evenly.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    val, rest = [], []
    for label in sorted({int(it.get("label", 0)) for it in items}):
        group = sorted((it for it in items if int(it.get("label", 0)) == label), key=lambda it: it["image"])
        for i, it in enumerate(group):
            (val if int((i + 1) * val_fraction) > int(i * val_fraction) else rest).append(it)
    return val, rest


def _folder_items(root: Path, split: str, report: DataReport | None = None) -> list[dict]:
    items = [{"image": p, "label": 0, "mask": ""} for p in find_images(root / split / "healthy", report)]
    masks: dict[str, str] = {}
    for pattern in MASK_DIRS:
        for p in find_images(root / pattern.format(split=split), report):
            masks.setdefault(_stem(p), p)
    diseased = find_images(root / split / "diseased", report)
    items += [{"image": p, "label": 1, "mask": masks.get(_stem(p), "")} for p in diseased]
    return items


def _resolve(path: str, base: Path) -> str:
    if not path:
        return ""
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else base / p)


def load_datalist_json(path: str | Path, section: str, base_dir: str | Path | None = None) -> list[dict]:
    """Items of ``section`` in a MONAI datalist JSON, image and mask paths made absolute.

    Missing ``label`` means 0 (healthy), missing ``mask`` means none. ``validation`` also
    accepts the section names ``val`` and ``validation_set``.
    """
    path = Path(path)
    with open(path) as f:
        content = json.load(f)
    base = Path(base_dir) if base_dir else path.parent
    names = {"validation": ("validation", "val", "validation_set"), "test": ("test", "testing")}.get(
        section, (section,)
    )
    raw = next((content[n] for n in names if n in content), None)
    if raw is None:
        return []
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"image": item}
        if "image" not in item:
            raise ValueError(f"{path}: item {i} of section {section!r} has no 'image' key: {item}")
        out.append(
            {
                "image": _resolve(item["image"], base),
                "label": int(item.get("label", 0)),
                "mask": _resolve(item.get("mask", "") or "", base),
            }
        )
    return out


def build_datalist(
    source: str | Path,
    section: str,
    val_fraction: float = 0.5,
    report: DataReport | None = None,
    base_dir: str | Path | None = None,
    max_items: int | None = None,
    min_size: int = MIN_IMAGE_SIZE,
) -> list[dict]:
    """The checked items of ``section`` (``training``, ``validation`` or ``test``).

    Args:
        source: a dataset folder in the authors' layout, or a MONAI datalist JSON file.
        section: ``training``, ``validation`` or ``test``.
        val_fraction: part of the test items used for validation when the data has no
            validation folder / section (the test section is then the rest).
        report: collects the unreadable files (and is logged and saved by the caller).
        base_dir: base of relative paths in a datalist JSON (default: the JSON's folder).
        max_items: keep at most ``max_items`` items (after the split; for smoke runs): the
            first ones for training, an even share of each label otherwise.
        min_size: images smaller than ``min_size`` x ``min_size`` pixels are rejected.
    """
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    source = Path(os.path.expanduser(str(source)))
    if source.is_file():
        if section == "training":
            items = [{"image": it["image"]} for it in load_datalist_json(source, "training", base_dir)]
        else:
            val = load_datalist_json(source, "validation", base_dir)
            test = load_datalist_json(source, "test", base_dir)
            if not val:
                val, test = split_validation(test, val_fraction)
            items = val if section == "validation" else test
    elif source.is_dir():
        if section == "training":
            items = [{"image": p} for p in find_images(source / "train" / "healthy", report)]
        else:
            val = _folder_items(source, "val", report)
            test = _folder_items(source, "test", report)
            if not val:
                val, test = split_validation(test, val_fraction)
            items = val if section == "validation" else test
    else:
        raise FileNotFoundError(
            f"dataset not found: {source} is neither a folder in the layout <root>/train/healthy, "
            "<root>/test/{healthy,diseased} nor a datalist JSON file"
        )
    if max_items is not None and len(items) > int(max_items):
        if section == "training":
            items = items[: int(max_items)]
        else:  # the same share of each label, spread over the sorted names
            items = split_validation(items, int(max_items) / len(items))[0]
    items = _checked(items, report, section, min_size)
    for item in items:  # the path survives loading (cached items carry no metadata)
        item["image_path"] = item["image"]
    if section == "training" and not items:
        raise ValueError(f"no readable training image in {source} (section {section!r})")
    logger.info("%s: %d items from %s", section, len(items), source)
    return items


def ensure_dataset(dataset_dir: str | Path, default_dir: str | Path, size: int = 256, **phantom_kwargs) -> str:
    """The dataset to use: ``dataset_dir``, generating the embedded default there if it is it.

    When ``dataset_dir`` is the default folder (``default_dir``), the procedural chest X-ray
    phantoms of :func:`artasyn.phantom.generate_phantom_dataset`
    are written there unless a complete set with the same settings is already there (atomically,
    so a second process sees all or nothing). Any other
    ``dataset_dir`` must exist: a typo never trains on phantoms silently.
    """
    dataset_dir = Path(os.path.expanduser(str(dataset_dir)))
    default_dir = Path(os.path.expanduser(str(default_dir)))
    if dataset_dir.resolve() == default_dir.resolve():
        from artasyn.phantom import generate_phantom_dataset

        if not find_images(dataset_dir / "train" / "healthy"):
            logger.info("embedded default: generating chest X-ray phantoms (%d px) in %s", size, dataset_dir)
        # reuses a complete set with the same settings, (re)builds it otherwise, atomically
        generate_phantom_dataset(str(dataset_dir), size=size, **phantom_kwargs)
        return str(dataset_dir)
    if not dataset_dir.exists():
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist (the embedded default is {default_dir})")
    return str(dataset_dir)


def data_source(
    datalist_file: str | Path | None, dataset_dir: str | Path, default_dir: str | Path, size: int = 256
) -> str:
    """What the datalists read: ``datalist_file`` when given, else :func:`ensure_dataset` of ``dataset_dir``.

    The ``data_source`` of ``train.json`` (``--datalist_file`` wins over ``--dataset_dir``).
    """
    if datalist_file:
        path = Path(os.path.expanduser(str(datalist_file)))
        if not path.is_file():
            raise FileNotFoundError(f"datalist_file {path} is not a file")
        return str(path)
    return ensure_dataset(dataset_dir, default_dir, size=size)
