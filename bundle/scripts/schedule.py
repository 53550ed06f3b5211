"""How long a training runs, and its learning-rate schedule, for any ``max_iterations`` >= 1.

The trainer runs ``max_epochs`` epochs of ``epoch_length`` iterations, validating after each
epoch; ``max_iterations`` and ``iterations_per_epoch`` are what a user sets.
:func:`iteration_plan` turns them into the trainer's numbers (``train.json``: ids
``iteration_plan``, ``epoch_length``, ``max_epochs``, ``total_iterations``):

- ``epoch_length`` = ``min(iterations_per_epoch, max_iterations)``: a run shorter than one
  epoch is one epoch of ``max_iterations`` iterations (validated once), not one epoch of
  ``iterations_per_epoch``;
- ``max_epochs`` = ``max_iterations // epoch_length``, and the run does
  ``total_iterations`` = ``max_epochs * epoch_length``: ``max_iterations`` itself when it is a
  multiple of the epoch, else rounded down to whole epochs (logged once).

:func:`one_cycle_lr` is ``torch.optim.lr_scheduler.OneCycleLR`` (``cpu.json``: warm-up, then
cosine decay, over ``total_iterations`` steps) for any number of steps: torch divides by zero
when the warm-up is exactly one step (``pct_start * total_steps == 1``, e.g. 20 iterations at
``pct_start`` 0.05), so a warm-up of one step or less is none.

Example::

    >>> from scripts.schedule import iteration_plan
    >>> iteration_plan(20, 10)
    {'epoch_length': 10, 'max_epochs': 2, 'total': 20}
    >>> iteration_plan(5, 1000)
    {'epoch_length': 5, 'max_epochs': 1, 'total': 5}
"""

from __future__ import annotations

import logging

import torch

__all__ = ["iteration_plan", "one_cycle_lr"]

logger = logging.getLogger("artasyn.bundle")


def iteration_plan(max_iterations: int, iterations_per_epoch: int) -> dict:
    """``{"epoch_length", "max_epochs", "total"}`` of a training of ``max_iterations`` (module docstring).

    Raises ``ValueError`` naming the setting when either is below 1.
    """
    for name, value in (("max_iterations", max_iterations), ("iterations_per_epoch", iterations_per_epoch)):
        if int(value) != value or int(value) < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    max_iterations, iterations_per_epoch = int(max_iterations), int(iterations_per_epoch)
    epoch_length = min(iterations_per_epoch, max_iterations)
    max_epochs = max_iterations // epoch_length
    total = max_epochs * epoch_length
    if total != max_iterations:
        logger.info(
            "max_iterations %d is not a multiple of iterations_per_epoch %d: the training runs %d epochs of %d "
            "iterations (%d iterations)",
            max_iterations,
            iterations_per_epoch,
            max_epochs,
            epoch_length,
            total,
        )
    return {"epoch_length": epoch_length, "max_epochs": max_epochs, "total": total}


def one_cycle_lr(
    optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int, pct_start: float = 0.3, **kwargs
) -> torch.optim.lr_scheduler.OneCycleLR:
    """``OneCycleLR(optimizer, max_lr, total_steps, pct_start, **kwargs)`` for any ``total_steps`` >= 1.

    A warm-up of one step or less (``pct_start * total_steps <= 1``) is none (``pct_start`` 0):
    torch's own divides by zero at exactly one. Longer runs get torch's schedule unchanged.
    """
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"one_cycle_lr: total_steps must be >= 1, got {total_steps}")
    pct_start = float(pct_start)
    if pct_start * total_steps <= 1.0:
        pct_start = 0.0
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start, **kwargs
    )
