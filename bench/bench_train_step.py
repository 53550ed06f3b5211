#!/usr/bin/env python
"""Benchmark: samples/s of our CPU training step against the authors' step, side by side.

Both steps train the same architecture (the authors' UNet configuration: width, channel
multipliers, residual blocks, attention resolutions, dropout, batch norm, residual
down/up-sampling) at the same image size on the same batch (``--batch`` healthy images, each
with ``--twins`` synthetic twins: ``batch x (1 + twins)`` samples per step), with AdamW and an
EMA update every step, in one process, interleaved (ours, authors', ours, ...) so that the
load of a shared machine hits both alike. The batch is random images and masks: the step's
cost does not depend on the content.

- ``ours``: the bundle's step as it trains (``scripts.training.ARTASynTrainingStep`` in a MONAI
  ``SupervisedTrainer``, ``TwinReconstruction`` of ``artasyn.model.networks.AnomalyUNet`` (variant
  ``ours_noreuse``: with a separate encoder pass of the targets, as before the reuse of the
  healthy rows' features),
  ``artasyn.model.losses.ARTASynLoss``, ``scripts.ema.EMAHandler``): one encoder-decoder pass of the
  input and one encoder pass of its healthy target; with ``--channels-last`` and
  ``bf16`` variants (the step's ``cpu_bf16``: bfloat16 autocast of the forward and loss;
  run only where the CPU has native bfloat16, otherwise left out with a note in the JSON);
- ``authors``: their ``TrainLoop.run_step`` (``utils/train_util.py``) on their ``UNetModel``
  (``models/unet.py``): two encoder passes for the feature term plus a full pass, a hard-threshold
  Dice. Their code is *not* part of this project: export it yourself and pass its folder
  (the one holding ``models/`` and ``utils/``) as ``--authors-dir``; without it that column is
  skipped. Two imports it needs but that do not act on the step are stubbed when absent:
  ``blobfile`` (checkpoint I/O) and ``torchmetrics.segmentation.DiceScore`` (replaced by a
  micro Dice of the same hard masks, no gradient in either case).

Usage::

    git --git-dir=<mirror of angelacao-hub/ART-ASyn> archive HEAD ART-ASyn | tar x -C /tmp/authors
    python bench/bench_train_step.py --authors-dir /tmp/authors/ART-ASyn --size 128 --threads 1

Writes ``bench/results/train_step.json`` atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))

from scripts.utils import atomic_write  # noqa: E402


def make_batch(batch: int, twins: int, size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = batch * (1 + twins)
    target = torch.rand(batch, 1, size, size, generator=g).repeat_interleave(1 + twins, 0)
    mask = (torch.rand(n, 1, size, size, generator=g) > 0.9).float()
    mask[:: 1 + twins] = 0  # the healthy image itself
    image = (target + 0.25 * mask).clamp(0, 1)
    return {"image": image, "target": target, "anomaly_mask": mask, "anomaly_label": mask.amax((1, 2, 3))}


def our_network(args):
    from artasyn.model.networks import AnomalyUNet

    return AnomalyUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=args.channels,
        channel_mult=tuple(args.channel_mult),
        num_res_blocks=args.num_res_blocks,
        attention_downsample=tuple(args.attention_downsample),
        num_heads=1,
        dropout=0.1,
        norm="batch",
        resblock_updown=True,
    )


class OurStep:
    """The bundle's training iteration, driven by MONAI's ``SupervisedTrainer``."""

    def __init__(
        self, args, batch: dict, steps: int, channels_last: bool = False, bf16: bool = False, reuse: bool = True
    ) -> None:
        from monai.engines import SupervisedTrainer

        from artasyn.model.losses import ARTASynLoss
        from scripts.ema import EMAHandler, create_ema_model
        from scripts.training import ARTASynTrainingStep, TwinReconstruction

        net = our_network(args)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            cl = torch.channels_last
            batch = {k: v.contiguous(memory_format=cl) if v.dim() == 4 else v for k, v in batch.items()}
        self.batch = batch
        self.bf16 = bf16
        self.n_params = sum(p.numel() for p in net.parameters())
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
        step = ARTASynTrainingStep(cpu_bf16=bf16)
        self.trainer = SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=0,
            epoch_length=steps,
            train_data_loader=[batch] * steps,
            network=TwinReconstruction(net, reuse_healthy_features=reuse),
            optimizer=opt,
            loss_function=ARTASynLoss(w_global=1.0, w_local=2.0, w_feat=1.0, w_dice=1.0),
            iteration_update=step,
            amp=False,
            decollate=False,
        )
        EMAHandler(create_ema_model(net, decay=0.9999), net).attach(self.trainer)
        self.trainer.logger.setLevel("WARNING")

    def run(self) -> float:
        """One more epoch of ``steps`` iterations (the trainer continues from its state); seconds."""
        self.trainer.state.max_epochs += 1
        t0 = time.perf_counter()
        self.trainer.run()
        return time.perf_counter() - t0


def _stub_missing_authors_deps() -> list[str]:
    stubbed = []
    try:
        import blobfile  # noqa: F401
    except ImportError:
        sys.modules["blobfile"] = types.ModuleType("blobfile")
        stubbed.append("blobfile")
    try:
        from torchmetrics.segmentation import DiceScore  # noqa: F401
    except ImportError:

        class DiceScore:  # micro Dice of hard masks (no gradient, as theirs)
            def __init__(self, *a, **k) -> None:
                pass

            def __call__(self, pred, target):
                p, t = pred > 0.5, target > 0.5
                return 2 * (p & t).sum() / ((p.sum() + t.sum()).clamp_min(1))

        tm = types.ModuleType("torchmetrics")
        seg = types.ModuleType("torchmetrics.segmentation")
        seg.DiceScore = DiceScore
        tm.segmentation = seg
        sys.modules["torchmetrics"], sys.modules["torchmetrics.segmentation"] = tm, seg
        stubbed.append("torchmetrics.segmentation.DiceScore")
    try:
        import utils.datasets  # noqa: F401  (their data loading; train_util imports one helper)
    except ImportError:
        import utils

        ds = types.ModuleType("utils.datasets")
        ds.normalize_to_01 = lambda x: x  # imported by train_util, unused by the step
        sys.modules["utils.datasets"] = ds
        utils.datasets = ds
        stubbed.append("utils.datasets (needs torchvision)")
    return stubbed


class AuthorsStep:
    """The authors' ``TrainLoop.run_step`` on their ``UNetModel`` (code imported from ``authors_dir``)."""

    def __init__(self, args, batch: dict, steps: int, authors_dir: Path) -> None:
        self.steps = steps
        sys.path.insert(0, str(authors_dir))
        self.stubbed = _stub_missing_authors_deps()
        import tempfile

        from models.unet import UNetModel
        from utils import logger
        from utils.train_util import TrainLoop

        logger.configure(Path(tempfile.mkdtemp(prefix="authors_log_")), format_strs=["log"])  # as their train.py

        model = UNetModel(
            in_channels=1,
            model_channels=args.channels,
            out_channels=1,
            num_res_blocks=args.num_res_blocks,
            attention_resolutions=tuple(args.attention_downsample),
            dropout=0.1,
            channel_mult=tuple(args.channel_mult),
            dims=2,
            use_checkpoint=False,
            use_fp16=False,
            num_heads=1,
            num_head_channels=-1,
            num_heads_upsample=-1,
            use_scale_shift_norm=True,
            resblock_updown=True,
        )
        self.n_params = sum(p.numel() for p in model.parameters())
        self.loop = TrainLoop(
            model=model,
            data=None,
            lr=1e-4,
            ema_rate="0.9999",
            log_interval=100,
            save_interval=10**9,
            device=torch.device("cpu"),
        )
        n = batch["image"].shape[0]
        self.batch = (batch["image"], batch["target"], batch["anomaly_mask"], batch["anomaly_label"], torch.arange(n))

    def run(self) -> float:
        t0 = time.perf_counter()
        for _ in range(self.steps):
            self.loop.run_step(self.batch)
        return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--authors-dir", type=Path, default=None, help="folder with the authors' models/ and utils/")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4, help="healthy images per step")
    ap.add_argument("--twins", type=int, default=2, help="synthetic twins per healthy image (mean of 1..3)")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--channel-mult", type=int, nargs="+", default=[1, 1, 2, 3, 4])
    ap.add_argument("--num-res-blocks", type=int, default=2)
    ap.add_argument("--attention-downsample", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["ours", "ours_channels_last", "ours_bf16"])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_step.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = make_batch(args.batch, args.twins, args.size)
    n_samples = batch["image"].shape[0]

    from scripts.training import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16()
    notes = []
    variants = list(args.variants)
    if not native_bf16 and any("bf16" in v for v in variants):
        dropped = [v for v in variants if "bf16" in v]
        variants = [v for v in variants if "bf16" not in v]
        notes.append(
            f"this CPU has no native bfloat16 (oneDNN): {dropped} not run (the step would train them in float32)"
        )
        print(notes[-1], flush=True)
    steps: dict = {}
    for v in variants:
        steps[v] = OurStep(
            args, batch, args.steps, channels_last="channels_last" in v, bf16="bf16" in v, reuse="noreuse" not in v
        )
    if args.authors_dir and (args.authors_dir / "utils" / "train_util.py").is_file():
        steps["authors"] = AuthorsStep(args, batch, args.steps, args.authors_dir)
        if steps["authors"].stubbed:
            stubbed = steps["authors"].stubbed
            notes.append(f"stubbed in the authors' imports (absent here, not acting on the step): {stubbed}")
    else:
        print(
            "authors' column skipped: pass --authors-dir <folder with the authors' models/ and utils/> "
            "(export their repository outside this project)",
            flush=True,
        )
    for s in steps.values():  # warm-up: one round, not timed
        s.run()
    times: dict = {k: [] for k in steps}
    for r in range(args.rounds):
        for k, s in steps.items():
            times[k].append(s.run() / args.steps)
        line = "  ".join(f"{k} {n_samples / times[k][-1]:.2f} samples/s" for k in steps)
        print(f"round {r + 1}: {line}", flush=True)
    res = {
        "what": "training step samples/s (median over rounds), same architecture, size and batch, interleaved",
        "size": args.size,
        "samples_per_step": n_samples,
        "batch_healthy": args.batch,
        "twins": args.twins,
        "network": {
            "channels": args.channels,
            "channel_mult": args.channel_mult,
            "num_res_blocks": args.num_res_blocks,
            "attention_downsample": args.attention_downsample,
        },
        "threads": args.threads,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "cpu_native_bf16": native_bf16,
        "notes": notes,
        "results": {},
    }
    for k, ts in times.items():
        med = sorted(ts)[len(ts) // 2]
        res["results"][k] = {
            "samples_per_s": n_samples / med,
            "s_per_step_runs": ts,
            "n_params": steps[k].n_params,
        }
    if "authors" in res["results"]:
        a = res["results"]["authors"]["samples_per_s"]
        for r in res["results"].values():
            r["ratio_to_authors"] = r["samples_per_s"] / a
    for k, r in res["results"].items():
        print(f"{k:22s} {r['samples_per_s']:8.2f} samples/s  x{r.get('ratio_to_authors', float('nan')):.2f}")
    atomic_write(args.out, json.dumps(res, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
