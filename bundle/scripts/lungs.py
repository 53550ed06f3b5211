"""The cached PBTSeg pass: lung maps computed once, on disk, and no-lung images reported.

``PersistentDataset`` caches every item up to the first random transform; with PBTSeg
before the synthesis, the cache holds the lung maps. :class:`LungCheck` walks the dataset's
deterministic part once in ``initialize`` (so the maps are computed, possibly in worker
processes, and cached before training) and records the images where PBTSeg found no lung, or
one lung only, in the :class:`DataReport`, which is logged and saved. Training reuses the same
cache files (same item hash, same transform hash).
"""

from __future__ import annotations

import logging

import torch
from monai.data import DataLoader, Dataset, PersistentDataset
from monai.transforms import Compose, RandomizableTrait, Transform

from .datalist import DataReport

__all__ = ["LungCheck", "deterministic_prefix"]


def _first(batch):
    return batch[0]


logger = logging.getLogger("artasyn.bundle")


def deterministic_prefix(transform: Compose) -> Compose:
    """The transforms of ``transform`` up to its first random (or non-MONAI) one."""
    first = transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    return Compose(transform.transforms[: first if first is not None else len(transform.transforms)])


class _FoundLungs(Dataset):
    """``(image path, right found, left found)`` of each item of a cached prefix dataset."""

    def __init__(self, prefix_ds: PersistentDataset, image_key: str, lung_key: str, found_key: str) -> None:
        super().__init__(data=prefix_ds.data)
        self.prefix_ds, self.image_key, self.lung_key, self.found_key = prefix_ds, image_key, lung_key, found_key

    def __getitem__(self, index):  # type: ignore[override]
        item = self.prefix_ds[index]
        path = str(self.prefix_ds.data[index][self.image_key])
        if self.found_key in item:
            right, left = (bool(v) for v in torch.as_tensor(item[self.found_key]).reshape(-1)[:2])
        else:
            lung = torch.as_tensor(item[self.lung_key])
            right, left = bool((lung == 1).any()), bool((lung == 2).any())
        return path, right, left


class LungCheck:
    """Compute and cache the PBTSeg maps of ``dataset`` once, and report no-lung images.

    Args:
        dataset: the ``PersistentDataset`` of training or validation (its transform holds
            ``PBTSegd`` before any random transform).
        report: the :class:`DataReport` to fill (logged; saved when it has a path).
        name: the dataset's name in the log.
        num_workers: DataLoader workers for the pass.
        image_key, lung_key: keys of the image path and the lung map.
        found_key: PBTSegd's ``[right_found, left_found]`` key (default ``image_lungs_found``).
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
        for path, right, left in loader:
            n += 1
            if not (right or left):
                none += 1
                self.report.no_lung.append(path)
            elif not (right and left):
                one += 1
                self.report.one_lung.append(path)
        logger.info(
            "PBTSeg lung maps (%s, cached in %s): %d images, no lung found in %d, one lung only in %d",
            self.name,
            self.dataset.cache_dir,
            n,
            none,
            one,
        )
        self.report.counts[f"{self.name}_no_lung"] = none
        self.report.save()
        return self.report
