"""The cached PBTSeg pass: lung maps computed once, on disk, and no-lung images reported.

``PersistentDataset`` caches every item up to the first random transform; with PBTSeg
before the synthesis, the cache holds the lung maps. :class:`LungCacheDataset` is the
``PersistentDataset`` of the bundle:

- an entry is keyed by the item with every file it names stamped by path, size and mtime
  (:func:`scripts.utils.file_item_hash`) and by the deterministic transforms' settings and code
  (:func:`scripts.utils.stable_transform_hash`): an image replaced in place, a changed
  ``spatial_size`` or updated PBTSeg code gets a new entry; a replaced image is logged (``changed since it was
  cached``) and its old entry deleted;
- a damaged entry (truncated, not a cache file, the wrong content) is recomputed and
  rewritten, with a warning naming it; entries are written atomically
  (:func:`scripts.utils.atomic_torch_save`, the user's umask);
- with ``skip_failed`` (training), an item whose transforms still fail in a DataLoader worker
  is logged with the file and the root cause and replaced by the next item, so the run goes on.

:class:`LungCheck` walks the dataset's deterministic part once in ``initialize`` (so the maps
are computed, possibly in worker processes, and cached before training), catches a failure
per item (the file is named in the log and listed as rejected in the :class:`DataReport`,
stage ``lung cache``, and removed from the dataset), records the images where PBTSeg found no
lung, or one lung only, and what the cache did (reused, computed, recomputed). Training
reuses the same cache files (same item hash, same transform hash).
"""

from __future__ import annotations

import hashlib
import logging
from copy import deepcopy
from pathlib import Path

import torch
from monai.data import DataLoader, Dataset, PersistentDataset
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import convert_to_tensor

from .datalist import DataReport
from .utils import as_bool, atomic_torch_save, atomic_write, file_item_hash, root_cause, stable_transform_hash

__all__ = ["CACHE_STATUSES", "LungCacheDataset", "LungCheck", "deterministic_prefix"]

logger = logging.getLogger("artasyn.bundle")

#: what the cache did for an item (the counts of the data report's ``cache``)
CACHE_STATUSES = ("reused", "computed", "recomputed_changed", "recomputed_damaged")


def _first(batch):
    return batch[0]


def deterministic_prefix(transform: Compose) -> Compose:
    """The transforms of ``transform`` up to its first random (or non-MONAI) one."""
    first = transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    return Compose(transform.transforms[: first if first is not None else len(transform.transforms)])


class LungCacheDataset(PersistentDataset):
    """``PersistentDataset`` keyed by file stamps and settings, robust to damaged entries (module docstring).

    Args:
        data, transform, cache_dir: as ``PersistentDataset``.
        hash_func: the item key (default :func:`scripts.utils.file_item_hash`).
        hash_transform: the settings key (default :func:`scripts.utils.stable_transform_hash`).
        image_key: the key of the image path (names the file in messages).
        skip_failed: replace an item whose transforms fail by the next one (logged), instead of
            raising; for training, where a batch can do without one image.
        kwargs: the other ``PersistentDataset`` arguments.
    """

    def __init__(
        self,
        data,
        transform,
        cache_dir,
        hash_func=file_item_hash,
        hash_transform=stable_transform_hash,
        image_key: str = "image",
        skip_failed: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(data, transform, cache_dir, hash_func=hash_func, hash_transform=hash_transform, **kwargs)
        self.image_key = image_key
        self.skip_failed = as_bool(skip_failed, "skip_failed")

    def _path_of(self, item) -> str:
        if not isinstance(item, dict):
            return str(item)
        return str(item.get(f"{self.image_key}_path") or item.get(self.image_key, ""))

    def _index_file(self, path: str) -> Path:
        return Path(self.cache_dir) / "index" / f"{hashlib.md5(path.encode('utf-8')).hexdigest()}.{self.transform_hash}"

    def cache_item(self, item) -> tuple[dict, str]:
        """``(deterministic part of item, status)``, from the cache or computed; ``status``: :data:`CACHE_STATUSES`."""
        if self.cache_dir is None:
            return self._pre_transform(deepcopy(item)), "computed"
        key = self.hash_func(item).decode("utf-8")
        hashfile = Path(self.cache_dir) / f"{key}{self.transform_hash}.pt"
        path = self._path_of(item)
        status = "computed"
        if hashfile.is_file():
            try:
                cached = torch.load(hashfile, weights_only=self.weights_only)
                if not isinstance(cached, dict) or self.image_key not in cached:
                    raise ValueError(f"not a cache entry of this dataset (keys: {sorted(cached)[:8]})")
                return cached, "reused"
            except Exception as e:  # a damaged entry is recomputed, never fatal
                logger.warning("lung cache: damaged entry %s of %s (%s): recomputed", hashfile, path, root_cause(e))
                status = "recomputed_damaged"
        index = self._index_file(path) if path else None
        if status == "computed" and index is not None and index.is_file():
            old = index.read_text().strip()
            if old and old != key:
                logger.warning("lung cache: %s changed since it was cached (size or mtime): lung map recomputed", path)
                status = "recomputed_changed"
                stale = Path(self.cache_dir) / f"{old}{self.transform_hash}.pt"
                stale.unlink(missing_ok=True)
        computed = self._pre_transform(deepcopy(item))
        try:
            atomic_torch_save(convert_to_tensor(computed, convert_numeric=False, track_meta=self.track_meta), hashfile)
            if index is not None:
                atomic_write(index, key)
        except OSError as e:  # a read-only or full cache folder costs time, not the run
            logger.warning("lung cache: cannot write %s (%s); the entry is not cached", hashfile, root_cause(e))
        return computed, status

    def _cachecheck(self, item_transformed):
        return self.cache_item(item_transformed)[0]

    def _transform(self, index: int):
        try:
            return super()._transform(index)
        except Exception as e:
            path = self._path_of(self.data[index])
            if not self.skip_failed or len(self.data) < 2:
                raise RuntimeError(f"{path}: {root_cause(e)}") from e
            logger.warning(
                "%s failed in a data worker (%s): left out of this batch, the next image takes its place",
                path,
                root_cause(e),
            )
            return self._transform_next(index, 1)

    def _transform_next(self, index: int, tries: int):
        nxt = (index + tries) % len(self.data)
        try:
            return super()._transform(nxt)
        except Exception as e:
            if tries >= min(len(self.data) - 1, 8):
                raise RuntimeError(f"{self._path_of(self.data[nxt])}: {root_cause(e)}") from e
            logger.warning("%s failed in a data worker (%s)", self._path_of(self.data[nxt]), root_cause(e))
            return self._transform_next(index, tries + 1)


class _FoundLungs(Dataset):
    """``(index, image path, right found, left found, cache status, error)`` of each item of a cached prefix."""

    def __init__(self, prefix_ds: PersistentDataset, image_key: str, lung_key: str, found_key: str) -> None:
        super().__init__(data=prefix_ds.data)
        self.prefix_ds, self.image_key, self.lung_key, self.found_key = prefix_ds, image_key, lung_key, found_key

    def __getitem__(self, index):  # type: ignore[override]
        raw = self.prefix_ds.data[index]
        path = str(raw.get(f"{self.image_key}_path") or raw[self.image_key])
        try:
            if isinstance(self.prefix_ds, LungCacheDataset):
                item, status = self.prefix_ds.cache_item(raw)
            else:
                item, status = self.prefix_ds[index], "reused"
            if self.found_key in item:
                right, left = (bool(v) for v in torch.as_tensor(item[self.found_key]).reshape(-1)[:2])
            else:
                lung = torch.as_tensor(item[self.lung_key])
                right, left = bool((lung == 1).any()), bool((lung == 2).any())
        except Exception as e:  # one file's failure is that file's, reported by the caller
            return index, path, False, False, "failed", root_cause(e, path)
        return index, path, right, left, status, ""


class LungCheck:
    """Compute and cache the PBTSeg maps of ``dataset`` once, and report no-lung and failing images.

    Args:
        dataset: the :class:`LungCacheDataset` (or a ``PersistentDataset``) of training or
            validation (its transform holds ``PBTSegd`` before any random transform).
        report: the :class:`DataReport` to fill (logged; saved when it has a path).
        name: the dataset's name in the log.
        num_workers: DataLoader workers for the pass.
        image_key, lung_key: keys of the image path and the lung map.
        found_key: PBTSegd's ``[right_found, left_found]`` key (default ``image_lungs_found``).

    An item whose transforms fail is listed as rejected (stage ``lung cache``, with the file
    and the innermost error) and removed from ``dataset.data``; the run goes on.
    """

    def __init__(
        self,
        dataset: PersistentDataset,
        report: DataReport | None = None,
        name: str = "training",
        num_workers: int = 0,
        image_key: str = "image",
        lung_key: str = "lung",
        found_key: str = "image_lungs_found",
    ) -> None:
        self.dataset = dataset
        self.report = report if report is not None else DataReport()
        self.name, self.num_workers = name, int(num_workers)
        self.image_key, self.lung_key, self.found_key = image_key, lung_key, found_key

    def _prefix_dataset(self) -> PersistentDataset:
        ds = self.dataset
        prefix = deterministic_prefix(ds.transform if isinstance(ds.transform, Compose) else Compose([ds.transform]))
        if isinstance(ds, LungCacheDataset):
            out = LungCacheDataset(
                data=ds.data, transform=prefix, cache_dir=ds.cache_dir, hash_func=ds.hash_func, image_key=ds.image_key
            )
        else:
            out = PersistentDataset(data=ds.data, transform=prefix, cache_dir=ds.cache_dir, hash_func=ds.hash_func)
        out.transform_hash = ds.transform_hash  # same cache files as the dataset itself
        return out

    def run(self) -> DataReport:
        """Walk the dataset once; returns the report (also logged and saved)."""
        if not isinstance(self.dataset, PersistentDataset):
            raise TypeError(f"LungCheck needs a PersistentDataset, got {type(self.dataset).__name__}")
        found = _FoundLungs(self._prefix_dataset(), self.image_key, self.lung_key, self.found_key)
        loader = DataLoader(found, batch_size=1, num_workers=self.num_workers, collate_fn=_first)
        n = none = one = 0
        failed: list[int] = []
        statuses = dict.fromkeys(CACHE_STATUSES, 0)
        for index, path, right, left, status, error in loader:
            if status == "failed":
                failed.append(index)
                self.report.add_rejected(path, error, stage="lung cache")
                continue
            n += 1
            statuses[status] += 1
            if not (right or left):
                none += 1
                self.report.add_no_lung(path, self.name)
            elif not (right and left):
                one += 1
                self.report.one_lung.append(path)
        if failed:
            data = self.dataset.data
            keep = [item for i, item in enumerate(data) if i not in set(failed)]
            if isinstance(data, list):
                data[:] = keep  # the datalist itself: every later reader sees the same items
            else:
                self.dataset.data = keep
        logger.info(
            "PBTSeg lung maps (%s, cached in %s): %d images, no lung found in %d, one lung only in %d, left out %d; "
            "cache: %d reused, %d computed, %d recomputed (image changed), %d recomputed (damaged entry)",
            self.name,
            self.dataset.cache_dir,
            n,
            none,
            one,
            len(failed),
            statuses["reused"],
            statuses["computed"],
            statuses["recomputed_changed"],
            statuses["recomputed_damaged"],
        )
        self.report.counts[f"{self.name}_no_lung"] = none
        if failed:
            self.report.counts[self.name] = n
        for key, value in statuses.items():
            self.report.cache[key] = self.report.cache.get(key, 0) + value
        self.report.save()
        if n == 0 and self.name == "training":
            raise ValueError(f"no usable training image left after the lung cache pass (see {self.report.path})")
        return self.report
