"""Any ``--max_iterations`` >= 1 trains: the iteration plan and the one-cycle schedule (``scripts.schedule``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_presets import TINY_TRAIN, outputs

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
TRAIN, CPU = str(CONFIGS / "train.json"), str(CONFIGS / "cpu.json")


@pytest.mark.parametrize(
    ("max_iterations", "per_epoch", "plan"),
    [
        (20, 10, (10, 2, 20)),
        (1, 100, (1, 1, 1)),
        (5, 1000, (5, 1, 5)),  # shorter than one epoch: one epoch of max_iterations
        (25, 10, (10, 2, 20)),  # not a multiple: rounded down to whole epochs
        (800, 100, (100, 8, 800)),
    ],
)
def test_iteration_plan(max_iterations, per_epoch, plan):
    from scripts.schedule import iteration_plan

    got = iteration_plan(max_iterations, per_epoch)
    assert (got["epoch_length"], got["max_epochs"], got["total"]) == plan


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_iteration_plan_refuses_fewer_than_one_iteration(bad):
    from scripts.schedule import iteration_plan

    with pytest.raises(ValueError, match="max_iterations must be a whole number >= 1"):
        iteration_plan(bad, 10)


def test_one_cycle_lr_steps_through_any_length():
    """torch's OneCycleLR divides by zero at 20 steps with pct_start 0.05; this one runs every length."""
    from scripts.schedule import one_cycle_lr

    args = {"pct_start": 0.05, "anneal_strategy": "cos", "div_factor": 10.0, "final_div_factor": 100.0}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ZeroDivisionError):
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=20, cycle_momentum=False, **args)
    for total in range(1, 61):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        sched = one_cycle_lr(opt, 1e-3, total, cycle_momentum=False, **args)
        lrs = [opt.param_groups[0]["lr"]]
        for _ in range(total - 1):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        assert all(0 < lr <= 1e-3 * (1 + 1e-9) for lr in lrs), (total, lrs)
        if total > 20:  # a warm-up of more than one step: torch's schedule, unchanged
            ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
            ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, 1e-3, total_steps=total, cycle_momentum=False, **args)
            ref_lrs = [ref_opt.param_groups[0]["lr"]]
            for _ in range(total - 1):
                ref_opt.step()
                ref.step()
                ref_lrs.append(ref_opt.param_groups[0]["lr"])
            assert lrs == pytest.approx(ref_lrs)


@pytest.mark.parametrize(("max_iterations", "per_epoch"), [(20, 10), (1, None)])
def test_cpu_preset_trains_any_number_of_iterations(max_iterations, per_epoch, tmp_path):
    """``cpu.json --max_iterations 20 --iterations_per_epoch 10`` (and ``--max_iterations 1``) train and validate."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    over = {"max_iterations": max_iterations, **({"iterations_per_epoch": per_epoch} if per_epoch else {})}
    tiny = {**TINY_TRAIN, "max_train_items": 4, "max_val_items": 4, "log_every": 1000}
    wf = ConfigWorkflow(
        config_file=[TRAIN, CPU], workflow_type="train", logging_file=False, **outputs(tmp_path), **tiny, **over
    )
    n_threads = torch.get_num_threads()
    try:
        wf.initialize()
        trainer = wf.parser.get_parsed_content("train#trainer")
        lrs = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: lrs.append(e.optimizer.param_groups[0]["lr"]))
        wf.run()
        wf.finalize()
    finally:
        torch.set_num_threads(n_threads)
    assert trainer.state.iteration == max_iterations == len(lrs)
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "model_final.pt").is_file()
    assert all(lr > 0 for lr in lrs)
