"""Datalists for the bundle: the authors' folder layout or a MONAI datalist JSON.

Every image is checked before training (opened and its header or its compressed stream
verified, which is cheap); a file that cannot be read is listed by path in the log and in
the JSON data report, and counted, never dropped silently. PBTSeg's no-lung images are added
to the same report by :class:`scripts.lungs.LungCheck`.

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

__all__ = [
    "IMAGE_SUFFIXES",
    "DataReport",
    "build_datalist",
    "check_image_file",
    "data_source",
    "ensure_dataset",
    "find_images",
    "load_datalist_json",
    "split_validation",
]

logger = logging.getLogger("artasyn.bundle")

#: File name endings read as images (PNG / JPEG through PIL, NIfTI through nibabel).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".nii", ".nii.gz")
MASK_DIRS = ("{split}/diseased_mask", "{split}/masks", "ground_truth/diseased")
SECTIONS = ("training", "validation", "test")


def _stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def find_images(folder: str | Path) -> list[str]:
    """Image files of ``folder`` (not recursive), sorted by name; ``[]`` if it doesn't exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir()) if _is_image(p)]


def check_image_file(path: str | Path) -> str | None:
    """``None`` if ``path`` looks readable, else the reason it is not.

    PNG / JPEG: PIL opens it and verifies the stream (PNG chunk CRCs; a truncated file
    fails); NIfTI: nibabel reads the header and checks the data block's size.
    """
    path = Path(path)
    if not path.is_file():
        return "file not found"
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            if len(img.shape) not in (2, 3) or (len(img.shape) == 3 and img.shape[2] not in (1, 3, 4)):
                return f"NIfTI of shape {img.shape} is not a 2-D image"
            if not name.endswith(".gz"):
                need = int(img.header.get_data_offset()) + int(
                    img.header.get_data_dtype().itemsize * int(_prod(img.shape))
                )
                if path.stat().st_size < need:
                    return f"truncated NIfTI ({path.stat().st_size} of {need} bytes)"
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.verify()
    except Exception as e:  # every reader error is a reason, reported by path
        return f"{type(e).__name__}: {e}"
    return None


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


class DataReport:
    """What the data preparation found wrong, by path: logged, counted and saved as JSON.

    ``unreadable``: images (or masks) that cannot be opened, with the reason; they are left
    out of the datalist and listed here. ``no_lung``: images where PBTSeg found no lung (kept:
    the network still learns to reconstruct them, but they get no synthetic anomaly).
    ``missing_mask``: diseased images without a lesion mask (AP / AUC only).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.unreadable: list[dict] = []
        self.no_lung: list[str] = []
        self.one_lung: list[str] = []
        self.missing_mask: list[str] = []
        self.counts: dict[str, int] = {}

    def add_unreadable(self, path: str, reason: str) -> None:
        self.unreadable.append({"path": str(path), "reason": reason})
        logger.warning("unreadable image left out: %s (%s)", path, reason)

    def to_dict(self) -> dict:
        return {
            "counts": dict(self.counts),
            "n_unreadable": len(self.unreadable),
            "n_no_lung": len(self.no_lung),
            "n_one_lung": len(self.one_lung),
            "n_missing_mask": len(self.missing_mask),
            "unreadable": self.unreadable,
            "no_lung": self.no_lung,
            "one_lung": self.one_lung,
            "missing_mask": self.missing_mask,
        }

    def summary(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in self.counts.items())
        return (
            f"data: {counts}; unreadable: {len(self.unreadable)}, no lung found: {len(self.no_lung)}, "
            f"one lung only: {len(self.one_lung)}, diseased without mask: {len(self.missing_mask)}"
        )

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the report as JSON (atomically) to ``path`` or the report's own path."""
        path = Path(path) if path is not None else self.path
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    def log(self) -> None:
        logger.info(self.summary())
        for item in self.unreadable:
            logger.warning("  unreadable: %s (%s)", item["path"], item["reason"])
        for p in self.no_lung:
            logger.warning("  no lung found: %s", p)
        if self.path is not None:
            logger.info("data report: %s", self.path)


def _checked(items: list[dict], report: DataReport | None, section: str) -> list[dict]:
    """Drop the items whose image cannot be read (reported); a bad mask only loses the mask."""
    out = []
    for item in items:
        reason = check_image_file(item["image"])
        if reason is not None:
            if report is not None:
                report.add_unreadable(item["image"], reason)
            else:
                logger.warning("unreadable image left out: %s (%s)", item["image"], reason)
            continue
        mask = item.get("mask", "")
        if mask:
            reason = check_image_file(mask)
            if reason is not None:
                if report is not None:
                    report.add_unreadable(mask, f"lesion mask of {item['image']}: {reason}")
                item = {**item, "mask": ""}
        if item.get("label", 0) and not item.get("mask", "") and report is not None:
            report.missing_mask.append(item["image"])
        out.append(item)
    if report is not None:
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


def _folder_items(root: Path, split: str) -> list[dict]:
    items = [{"image": p, "label": 0, "mask": ""} for p in find_images(root / split / "healthy")]
    masks: dict[str, str] = {}
    for pattern in MASK_DIRS:
        for p in find_images(root / pattern.format(split=split)):
            masks.setdefault(_stem(p), p)
    items += [{"image": p, "label": 1, "mask": masks.get(_stem(p), "")} for p in find_images(root / split / "diseased")]
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
            items = [{"image": p} for p in find_images(source / "train" / "healthy")]
        else:
            val = _folder_items(source, "val")
            test = _folder_items(source, "test")
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
    items = _checked(items, report, section)
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
