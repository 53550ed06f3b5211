"""EMA of the network weights (the paper: decay 0.9999), with an ignite handler.

The average is a :class:`torch.optim.swa_utils.AveragedModel` over parameters *and* buffers
(``use_buffers=True``), so batch-norm running statistics are averaged too and the EMA model
is usable for inference as it is; validation runs on it, and ``CheckpointSaver`` saves its
``module`` as the ``model`` weights.

``warmup`` (default on) uses the decay ``min(decay, (1 + n) / (10 + n))`` after ``n``
updates, so that a short run is not dominated by the random initial weights; with
``warmup=False`` the decay is constant from the first step, as in the authors' code.

``tail_start`` (our option, off by default) turns the average into an equal-weight average of
the weights after every update from update ``tail_start`` on (stochastic weight averaging of
the run's tail): the EMA restarts from the weights of that update and then weighs every later
update equally. On ZhangLab the EMA of a short CPU run swings by several AUC points from one
validation to the next while the equal average of the second half does not (``cpu.json``).

Example::

    >>> import torch
    >>> from scripts.ema import create_ema_model
    >>> net = torch.nn.Linear(2, 2)
    >>> ema = create_ema_model(net, decay=0.99)
    >>> ema.update_parameters(net)
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel

from .utils import as_bool

__all__ = ["EMAHandler", "create_ema_model", "ema_decay"]


def ema_decay(decay: float, num_averaged: int, warmup: bool = True, tail_start: int = 0) -> float:
    """The decay used for the update after ``num_averaged`` previous updates.

    With ``tail_start > 0``, update number ``u = num_averaged + 1`` at or after ``tail_start``
    uses ``(u - tail_start) / (u - tail_start + 1)``: 0 at ``tail_start`` (a restart from the
    current weights), then an equal-weight running mean.

    >>> ema_decay(0.995, 9, warmup=False, tail_start=10), ema_decay(0.995, 12, tail_start=10)
    (0.0, 0.75)
    """
    u = int(num_averaged) + 1
    if tail_start > 0 and u >= tail_start:
        k = u - int(tail_start)
        return k / (k + 1.0)
    if warmup:
        return min(float(decay), (1.0 + num_averaged) / (10.0 + num_averaged))
    return float(decay)


class _EMAUpdate:
    """``multi_avg_fn`` of ``AveragedModel``: ``ema = d * ema + (1 - d) * current``.

    Integer buffers (``num_batches_tracked``) are copied; picklable (no closure).
    """

    def __init__(self, decay: float, warmup: bool, tail_start: int = 0) -> None:
        self.decay, self.warmup = float(decay), as_bool(warmup, "ema_warmup")
        self.tail_start = int(tail_start)
        if self.tail_start < 0:
            raise ValueError(f"ema_tail_start must be >= 0 (0: off), got {tail_start}")

    def __call__(self, ema_params, current_params, num_averaged) -> None:
        d = ema_decay(self.decay, int(num_averaged), self.warmup, self.tail_start)
        floats = [(e, c) for e, c in zip(ema_params, current_params) if e.is_floating_point()]
        others = [(e, c) for e, c in zip(ema_params, current_params) if not e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1.0 - d)
        for e, c in others:
            e.copy_(c)


def create_ema_model(
    network: torch.nn.Module,
    decay: float = 0.9999,
    warmup: bool = True,
    device: str | torch.device | None = None,
    tail_start: int = 0,
) -> AveragedModel:
    """An ``AveragedModel`` holding the EMA of ``network`` (parameters and buffers).

    ``tail_start``: from this update on (1-based; the update count equals the iteration when
    the handler updates every iteration), an equal-weight average instead (0: off).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    update = _EMAUpdate(decay, warmup, tail_start)
    return AveragedModel(network, device=device, multi_avg_fn=update, use_buffers=True)


class EMAHandler:
    """Ignite handler: updates ``ema_model`` from ``network`` after every ``interval`` iterations.

    Args:
        ema_model: from :func:`create_ema_model`.
        network: the trained network (``DistributedDataParallel`` is unwrapped).
        interval: update every ``interval`` iterations.
    """

    def __init__(self, ema_model: AveragedModel, network: torch.nn.Module, interval: int = 1) -> None:
        self.ema_model = ema_model
        self.network = network
        self.interval = int(interval)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def __call__(self, engine) -> None:
        net = getattr(self.network, "module", self.network)
        with torch.no_grad():
            self.ema_model.update_parameters(net)
