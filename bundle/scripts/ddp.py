"""Multi-GPU (DDP) training of the bundle (``configs/multi_gpu_train.json``, started with ``torchrun``).

Three things differ from one-process training:

- The trainer's network is ``DistributedDataParallel(TwinReconstruction(network))``
  (:func:`wrap_ddp`). The eq.-1 step (:class:`scripts.training.ARTASynTrainingStep`) makes one
  call, ``forward(input, target) -> (recon, features_input, features_target)``, exactly as
  without DDP; the whole graph of a step runs in DDP's own forward, so every gradient is
  synchronised. EMA, checkpoints (``model_raw``) and validation use ``network`` itself, with
  the same parameter names as in one-process training.
- Preprocessing scales with the ranks: :class:`DistributedLungCheck` computes the PBTSeg lung
  maps of rank ``r``'s shard (items ``r, r + n, ...``) into the shared ``PersistentDataset``
  cache, waits for every rank, then rank 0 walks the whole (now cached) set for the report.
- Logging and saving happen on rank 0 only (:func:`rank_zero_handlers`); validation runs on
  every rank on its shard of the validation set, and MONAI's metrics gather the shards.

Example::

    torchrun --standalone --nproc_per_node=2 -m monai.bundle run training \\
        --config_file "['bundle/configs/train.json','bundle/configs/multi_gpu_train.json']"
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from monai.data import PersistentDataset, partition_dataset
from torch import nn

from .datalist import DataReport
from .lungs import LungCheck
from .training import TwinReconstruction

__all__ = ["DistributedLungCheck", "rank_zero_dir", "rank_zero_handlers", "split_lung_check", "wrap_ddp"]

logger = logging.getLogger("artasyn.bundle")


def wrap_ddp(network: nn.Module, device: str | torch.device, **ddp_kwargs) -> nn.parallel.DistributedDataParallel:
    """``DistributedDataParallel(TwinReconstruction(network))`` on ``device`` (the process group must exist)."""
    device = torch.device(device)
    return nn.parallel.DistributedDataParallel(
        TwinReconstruction(network), device_ids=[device] if device.type == "cuda" else None, **ddp_kwargs
    )


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def split_lung_check(lung_check: LungCheck, report_on_rank0: bool = True) -> DataReport | None:
    """Compute the PBTSeg lung maps of ``lung_check``'s dataset split across the ranks.

    Rank ``r`` of ``n`` caches items ``r, r + n, ...`` (``monai.data.partition_dataset``,
    not shuffled, not padded) in the dataset's shared ``cache_dir``; after a barrier rank 0 runs
    the full :class:`LungCheck`, which now only reads cached files, so the report covers every
    image. Returns the report on rank 0, ``None`` on the others.
    """
    rank, world = _rank_world()
    ds = lung_check.dataset
    if not isinstance(ds, PersistentDataset):
        raise TypeError(f"split_lung_check needs a PersistentDataset, got {type(ds).__name__}")
    if world > 1:
        shard = partition_dataset(list(ds.data), num_partitions=world, shuffle=False, even_divisible=False)[rank]
        shard_ds = PersistentDataset(data=shard, transform=ds.transform, cache_dir=ds.cache_dir, hash_func=ds.hash_func)
        shard_ds.transform_hash = ds.transform_hash  # the same cache files as the full dataset
        LungCheck(
            shard_ds,
            DataReport(log_files=False),  # rank 0's full pass below names each file once
            name=f"{lung_check.name} shard {rank}/{world}",
            num_workers=lung_check.num_workers,
        ).run()
        dist.barrier()
    if rank == 0 and report_on_rank0:
        return LungCheck.run(lung_check)
    return None


class DistributedLungCheck(LungCheck):
    """:class:`scripts.lungs.LungCheck` whose ``run`` is :func:`split_lung_check` (shards per rank).

    Returns the report on rank 0 and ``None`` on the others; in one process it is a plain
    ``LungCheck``.
    """

    def run(self) -> DataReport | None:  # type: ignore[override]
        return split_lung_check(self)


#: handlers that every rank must run: validation and EMA (each rank validates its shard with the
#: same EMA weights), and those that gather across ranks (MONAI's MetricsSaver all-gathers file names)
ALL_RANK_HANDLERS = ("ValidationHandler", "EMAHandler", "MetricsSaver")


def rank_zero_handlers(handlers: list, rank: int | None = None, all_ranks: tuple[str, ...] = ALL_RANK_HANDLERS) -> list:
    """``handlers`` on rank 0; on the other ranks only those whose class is named in ``all_ranks``.

    Logging (``StatsHandler``, TensorBoard, progress bar) and saving (checkpoints, CSV, JSON,
    panels) happen on rank 0; validation runs on every rank, each on its shard of the
    validation set (``DistributedSampler``), and MONAI's metrics gather the shards, so AUC, AP
    and Dice are those of the whole set.
    """
    rank = _rank_world()[0] if rank is None else int(rank)
    if rank == 0:
        return list(handlers)
    return [h for h in handlers if type(h).__name__ in all_ranks]


def rank_zero_dir(path: str, rank: int | None = None) -> str:
    """``path`` on rank 0; a throw-away temporary folder elsewhere (for writers created on every rank)."""
    import tempfile

    rank = _rank_world()[0] if rank is None else int(rank)
    return str(path) if rank == 0 else tempfile.mkdtemp(prefix=f"artasyn_rank{rank}_")
