"""The training iteration of ART-ASyn for MONAI's ``SupervisedTrainer`` (``docs/method.md`` section 3).

``SupervisedTrainer`` computes ``loss_function(network(inputs), targets)``; eq. 1 also needs
the anomaly mask and the bottleneck features of both the input and its healthy target, so
:class:`ARTASynTrainingStep` is the trainer's ``iteration_update``, and the trainer's network
is :class:`TwinReconstruction`: one ``forward(input, target) -> (reconstruction,
features_input, features_target)``. The step makes that one call, whether the module is used
as it is or wrapped in ``DistributedDataParallel`` (``scripts.ddp.wrap_ddp``): DDP then sees
the whole graph of the step in its own forward, and no state passes between calls. It follows MONAI's own
iteration (events ``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``,
``MODEL_COMPLETED``; AMP through ``engine.scaler``; ``optim_set_to_none``) and puts every loss
term in ``engine.state.output`` (``loss``, ``loss_global``, ``loss_local``, ``loss_feat``,
``loss_dice``) for ``StatsHandler`` / ``TensorBoardStatsHandler`` via :func:`loss_terms`.

A batch is a list-collated set of samples (``monai.data.list_data_collate``): each healthy
image and its 1 to 3 synthetic twins, so its size varies from batch to batch.

Example (config)::

    "train_network": {"_target_": "scripts.training.TwinReconstruction", "network": "@network"},
    "train#trainer": {"_target_": "SupervisedTrainer", ..., "network": "@train_network",
        "loss_function": "@loss",
        "iteration_update": {"_target_": "scripts.training.ARTASynTrainingStep"}}
"""

from __future__ import annotations

import logging

import torch
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch import nn

from .utils import as_bool

__all__ = [
    "ARTASynTrainingStep",
    "TrainingTimeLimit",
    "TwinReconstruction",
    "cpu_has_native_bf16",
    "healthy_rows",
    "loss_terms",
    "prepare_network",
]

LOSS_TERMS = ("global", "local", "feat", "dice")

logger = logging.getLogger("artasyn.bundle")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions in oneDNN (x86: AVX512 or AMX; Arm: BF16).

    Without it PyTorch falls back to a reference kernel: on an AVX2-only CPU a 3 x 3
    convolution under bfloat16 autocast measured 47x slower than in float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def prepare_network(
    network: torch.nn.Module, device: str | torch.device, channels_last: bool = False
) -> torch.nn.Module:
    """Move ``network`` to ``device``; channels-last memory format when asked (CUDA only)."""
    device = torch.device(device)
    network = network.to(device)
    if channels_last and device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    return network


class TwinReconstruction(nn.Module):
    """The training view of the reconstruction network: one forward for everything eq. 1 needs.

    ``forward(input, target) -> (reconstruction, features_input, features_target)``: the
    reconstruction of ``input`` and its bottleneck features from one encoder pass
    (``network.forward_with_features``), and the bottleneck features of its healthy ``target``.
    With ``target=None`` the third value is ``None`` (the feature term is off and its encoder
    pass is saved).

    A training batch holds each healthy image itself (input = target) beside its twins
    (``RandARTTwinsd(include_healthy=True)``), so the features of every target are already
    among the input features: with ``reuse_healthy_features`` (default) a twin's target
    features are those of the batch row whose input equals its target, and ``network.encode``
    runs only for targets with no such row. That saves the second encoder pass (forward and
    backward) and its batch-norm update on a batch of targets; the authors' step encodes the
    input twice and the target once on top of the full pass.

    Args:
        network: a module with ``forward_with_features(x) -> (recon, feats)`` and
            ``encode(x) -> feats``, as :class:`artasyn.model.networks.AnomalyUNet`. Its parameters are
            this module's (``network.`` prefixed in a ``state_dict``); checkpoints, EMA and
            inference use ``network`` itself.
    """

    def __init__(self, network: nn.Module, reuse_healthy_features: bool = True) -> None:
        super().__init__()
        self.reuse_healthy_features = as_bool(reuse_healthy_features, "reuse_healthy_features")
        for name in ("forward_with_features", "encode"):
            if not callable(getattr(network, name, None)):
                raise TypeError(
                    f"TwinReconstruction needs a network with {name}() (as artasyn.model.networks.AnomalyUNet), "
                    f"got {type(network).__name__}"
                )
        self.network = network

    def forward(
        self, inputs: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        recon, feats_in = self.network.forward_with_features(inputs)
        if target is None:
            return recon, feats_in, None
        if not self.reuse_healthy_features:
            return recon, feats_in, self.network.encode(target)
        source = healthy_rows(inputs, target)
        missing = source < 0
        if bool(missing.all()):
            return recon, feats_in, self.network.encode(target)
        feats_target = feats_in[source.clamp_min(0)]
        if bool(missing.any()):
            feats_target = feats_target.clone()
            feats_target[missing] = self.network.encode(target[missing])
        return recon, feats_in, feats_target


def healthy_rows(inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """For each row of ``target``, a row ``j`` with ``inputs[j] == target[j] == target[i]`` (or -1).

    The rows whose input is its own target are the healthy samples of the batch; a twin's
    target is matched to the healthy row holding the same image (exact equality).
    """
    n = inputs.shape[0]
    flat_in, flat_t = inputs.detach().reshape(n, -1), target.detach().reshape(n, -1)
    healthy = (flat_in == flat_t).all(dim=1).nonzero().flatten()
    out = torch.full((n,), -1, dtype=torch.long, device=inputs.device)
    if healthy.numel() == 0:
        return out
    match = (flat_t[:, None, :] == flat_in[None, healthy, :]).all(dim=2)  # n x h
    found = match.any(dim=1)
    out[found] = healthy[match.float().argmax(dim=1)[found]]
    return out


class ARTASynTrainingStep:
    """``iteration_update`` of ``SupervisedTrainer`` for the eq.-1 loss.

    Args:
        image_key: network input (healthy image or synthetic twin), ``B x 1 x H x W`` in [0, 1].
        target_key: its healthy image, same shape.
        mask_key: the anomaly mask, same shape, {0, 1}.
        channels_last: feed channels-last tensors (CUDA; put the network in that format with
            :func:`prepare_network`).
        cpu_bf16: on a CPU, run the forward and the loss under bfloat16 autocast (weights,
            gradients and the optimizer stay float32); faster where the CPU has bfloat16
            instructions (``bench/bench_train_step.py`` measures it). Where it has none
            (:func:`cpu_has_native_bf16` is false, e.g. AVX2-only x86) the step trains in
            float32 instead and logs one warning: bfloat16 would be tens of times slower there.

    ``engine.loss_function`` is :class:`artasyn.model.losses.ARTASynLoss` (or anything with its
    call signature returning a dict with ``total``). ``engine.network`` is a
    :class:`TwinReconstruction`, or a ``DistributedDataParallel`` of one: the step calls
    ``engine.network(input, target)`` once (``target`` is ``None`` when the loss weighs the
    feature term 0) and passes what it returns to the loss.
    """

    def __init__(
        self,
        image_key: str = "image",
        target_key: str = "target",
        mask_key: str = "anomaly_mask",
        channels_last: bool = False,
        cpu_bf16: bool = False,
    ) -> None:
        self.image_key, self.target_key, self.mask_key = image_key, target_key, mask_key
        self.channels_last = as_bool(channels_last, "channels_last")
        self.cpu_bf16 = as_bool(cpu_bf16, "cpu_bf16")
        self._cpu_bf16_native: bool | None = None  # probed on the first CPU step

    def _use_cpu_bf16(self) -> bool:
        if not self.cpu_bf16:
            return False
        if self._cpu_bf16_native is None:
            self._cpu_bf16_native = cpu_has_native_bf16()
            if not self._cpu_bf16_native:
                logger.warning(
                    "cpu_bf16 is set, but this CPU has no native bfloat16 support (oneDNN: AVX512 or "
                    "AMX on x86, BF16 on Arm); training in float32 instead (bfloat16 autocast would be "
                    "tens of times slower here)"
                )
        return self._cpu_bf16_native

    def _to(self, engine, x) -> torch.Tensor:
        if isinstance(x, MetaTensor):
            x = x.as_tensor()
        x = torch.as_tensor(x).to(engine.state.device, non_blocking=engine.non_blocking).float()
        if self.channels_last and x.dim() == 4 and x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __call__(self, engine, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        for key in (self.image_key, self.target_key, self.mask_key):
            if key not in batchdata:
                raise KeyError(
                    f"ARTASynTrainingStep: the batch has no {key!r} (keys: {sorted(batchdata)}); "
                    "the training transforms must end with RandARTTwinsd (or give target and mask)"
                )
        inputs = self._to(engine, batchdata[self.image_key])
        target = self._to(engine, batchdata[self.target_key])
        mask = self._to(engine, batchdata[self.mask_key])
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: target}
        network = engine.network
        if not isinstance(getattr(network, "module", network), TwinReconstruction):
            raise TypeError(
                "ARTASynTrainingStep: the trainer's network must be a scripts.training.TwinReconstruction "
                f"(or a DistributedDataParallel of one), got {type(network).__name__}; wrap the network: "
                "TwinReconstruction(network)"
            )
        loss_fn = engine.loss_function
        need_feat = float(getattr(loss_fn, "w_feat", 1.0)) != 0.0

        def _forward_loss() -> torch.Tensor:
            recon, feat_in, feat_target = network(inputs, target if need_feat else None)
            if not need_feat:
                feat_in = None
            engine.state.output[Keys.PRED] = recon
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            terms = loss_fn(inputs, recon, target, mask, feat_in, feat_target)
            loss = terms["total"] if isinstance(terms, dict) else terms
            engine.state.output[Keys.LOSS] = loss
            if isinstance(terms, dict):
                for name in LOSS_TERMS:
                    if name in terms:
                        engine.state.output[f"loss_{name}"] = terms[name].detach()
            engine.state.output["n_samples"] = int(inputs.shape[0])
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            return loss

        network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                loss = _forward_loss()
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            bf16 = inputs.device.type == "cpu" and self._use_cpu_bf16()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = _forward_loss()
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def loss_terms(output) -> dict:
    """Output transform for ``StatsHandler`` / ``TensorBoardStatsHandler``: every loss term.

    Works on the trainer's output whether it was decollated (a list of per-sample dicts, the
    loss replicated) or not (one dict).
    """
    o = output[0] if isinstance(output, list) else output
    out = {}
    for key in (Keys.LOSS, *(f"loss_{n}" for n in LOSS_TERMS), "n_samples"):
        if key in o:
            v = o[key]
            out[key] = v.detach().float().item() if isinstance(v, torch.Tensor) else v
    return out


class TrainingTimeLimit:
    """Stops the training cleanly after ``limit_sec`` seconds of wall-clock time (0: no limit).

    The clock starts when the engine starts; the check runs after every iteration, and
    ``engine.terminate()`` still fires ``COMPLETED``, so ``CheckpointSaver(save_final=True)``
    writes the final weights. For fixed time budgets (benchmarks, shared machines).
    """

    def __init__(self, limit_sec: float = 0) -> None:
        self.limit_sec = float(limit_sec or 0)
        self._start: float | None = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if self.limit_sec > 0:
            engine.add_event_handler(Events.STARTED, self._started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _started(self, engine) -> None:
        import time

        self._start = time.perf_counter()

    def __call__(self, engine) -> None:
        import logging
        import time

        if self._start is not None and time.perf_counter() - self._start > self.limit_sec:
            logging.getLogger("artasyn.bundle").info(
                "time limit of %.0f s reached at iteration %d: stopping the training",
                self.limit_sec,
                engine.state.iteration,
            )
            engine.terminate()
