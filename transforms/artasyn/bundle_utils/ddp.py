"""Multi-GPU (DDP) training of the bundle (``configs/multi_gpu_train.json``, started with ``torchrun``).

Three things differ from one-process training:

- The eq.-1 iteration (:class:`artasyn.bundle_utils.ARTASynTrainingStep`) needs the
  reconstruction, the bottleneck features of the input *and* those of its healthy target.
  ``DistributedDataParallel`` synchronises gradients only for what runs through its own
  ``forward``, once per backward. :class:`TwinForward` is the module DDP wraps: one forward
  ``(x, target) -> (recon, feats_x, feats_target)``; its ``forward_with_features`` / ``encode``
  (what the training step calls) route through the DDP wrapper, so the whole graph of a step
  is one DDP forward. :class:`DDPTrainingStep` tells it the target of the batch.
- Preprocessing scales with the ranks: :func:`split_lung_check` computes the PBTSeg lung maps
  of rank ``r``'s shard (items ``r, r + n, ...``) into the shared ``PersistentDataset``
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
from .training import ARTASynTrainingStep

__all__ = ["DDPTrainingStep", "TwinForward", "rank_zero_dir", "rank_zero_handlers", "split_lung_check", "wrap_ddp"]

logger = logging.getLogger("artasyn.bundle")


class TwinForward(nn.Module):
    """The network as DDP sees it: one forward for the reconstruction and both feature sets.

    ``forward(x)`` is the network's; ``forward(x, target)`` returns ``(recon, feats_x,
    feats_target)``. After :func:`wrap_ddp`, ``forward_with_features(x)`` runs
    ``ddp(x, pending_target)`` and keeps the target features for the ``encode(target)`` that
    follows; without a pending target both fall back to the plain network.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self._ddp: list = []  # the DDP wrapper, kept out of the module tree
        self.pending_target: torch.Tensor | None = None
        self._feats_target: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None):
        if target is None:
            return self.network(x)
        recon, feats_x = self.network.forward_with_features(x)
        return recon, feats_x, self.network.encode(target)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target, self.pending_target = self.pending_target, None
        if target is None or not self._ddp:
            return self.network.forward_with_features(x)
        recon, feats_x, feats_t = self._ddp[0](x, target)
        self._feats_target = (target, feats_t)
        return recon, feats_x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self._feats_target is not None and self._feats_target[0] is x:
            feats, self._feats_target = self._feats_target[1], None
            return feats
        return self.network.encode(x)


def wrap_ddp(network: nn.Module, device: str | torch.device, **ddp_kwargs) -> nn.parallel.DistributedDataParallel:
    """``DistributedDataParallel(TwinForward(network))`` on ``device`` (the process group must exist)."""
    device = torch.device(device)
    twin = TwinForward(network)
    ddp = nn.parallel.DistributedDataParallel(
        twin, device_ids=[device] if device.type == "cuda" else None, **ddp_kwargs
    )
    twin._ddp.append(ddp)
    return ddp


class DDPTrainingStep(ARTASynTrainingStep):
    """:class:`ARTASynTrainingStep` for a :func:`wrap_ddp` network: the target goes through DDP too."""

    def __call__(self, engine, batchdata: dict) -> dict:
        core = getattr(engine.network, "module", None)
        if isinstance(core, TwinForward) and self.target_key in batchdata:
            target = self._to(engine, batchdata[self.target_key])  # _to of this tensor returns it as is
            batchdata = {**batchdata, self.target_key: target}
            core.pending_target = target
        return super().__call__(engine, batchdata)


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
            shard_ds, DataReport(), name=f"{lung_check.name} shard {rank}/{world}", num_workers=lung_check.num_workers
        ).run()
        dist.barrier()
    if rank == 0 and report_on_rank0:
        return lung_check.run()
    return None


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
