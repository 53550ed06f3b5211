#!/usr/bin/env python
"""GPU training speed of the bundle: the paper network at 256 x 256, with and without AMP.

1. Synthetic throughput: the bundle's own training iteration
   (:class:`scripts.training.ARTASynTrainingStep` in a MONAI ``SupervisedTrainer``, the
   eq.-1 loss, AdamW, EMA update) on random batches already on the GPU, so that data loading
   does not count: iterations/s and samples/s for fp32, AMP, and AMP + channels-last.
   A batch is ``--batch-size`` healthy images with 2 twins each on average (the mean of
   1..3), i.e. ``3 * batch_size`` samples.
2. Real data: the bundle itself (``train.json``, paper defaults) on ZhangLab
   (``--dataset zhanglab``: ``zhanglab_train_normal``, validated on ``zhanglab_val``; the
   paper's benchmark) or COVID-QU-Ex (``--dataset covidquex``) for ``--minutes`` minutes of
   wall-clock time, data loading, PBTSeg cache and on-the-fly ART-ASyn synthesis in
   ``--num-workers`` workers included: iterations done, iterations/s, the share of time the
   GPU step waited for data, and the time the paper's schedule (``train.json``'s
   ``max_iterations``, 100k) would take at that rate (``estimated_hours_full_schedule``;
   validation passes not included).

Prints and writes JSON to ``--out``. Without a CUDA device it writes ``{"skipped": reason}``
to ``--out``, prints the reason and exits with code 2.

The paper setting on a ZhangLab root (``<root>/train/healthy``, ``<root>/val/{healthy,diseased}``)
is the bundle's own command, no preset::

    python -m monai.bundle run training --config_file bundle/configs/train.json --dataset_dir <root>

Example::

    python bench/gpu_train_speed.py --out bench/results/gpu_train_speed.json --minutes 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"


def synthetic_speed(batch: int, size: int, iters: int, warmup: int, amp: bool, channels_last: bool) -> dict:
    import torch
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    sys.path.insert(0, str(BUNDLE))  # the bundle's own code, imported as ``scripts``
    from artasyn.model.losses import ARTASynLoss
    from artasyn.model.networks import AnomalyUNet
    from scripts.ema import EMAHandler, create_ema_model
    from scripts.training import ARTASynTrainingStep, TwinReconstruction, prepare_network

    device = torch.device("cuda:0")
    torch.manual_seed(0)
    net = prepare_network(AnomalyUNet(), device, channels_last)
    ema = create_ema_model(net, decay=0.9999)
    n = 3 * batch
    target = torch.rand(n, 1, size, size, device=device)
    mask = (torch.rand(n, 1, size, size, device=device) > 0.97).float()
    image = torch.maximum(target, mask * 0.8)
    data = [{"image": image, "target": target, "anomaly_mask": mask}] * (iters + warmup)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=data,
        network=TwinReconstruction(net),
        optimizer=opt,
        loss_function=ARTASynLoss(),
        iteration_update=ARTASynTrainingStep(channels_last=channels_last),
        amp=amp,
        decollate=False,
        train_handlers=[EMAHandler(ema, net)],
    )
    marks = {}

    def mark(engine):
        if engine.state.iteration == warmup:
            torch.cuda.synchronize()
            marks["t0"] = time.perf_counter()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, mark)
    torch.cuda.reset_peak_memory_stats()
    trainer.run()
    torch.cuda.synchronize()
    dt = time.perf_counter() - marks["t0"]
    return {
        "amp": amp,
        "channels_last": channels_last,
        "samples_per_batch": n,
        "size": size,
        "iterations": iters,
        "seconds": round(dt, 3),
        "iterations_per_s": round(iters / dt, 3),
        "samples_per_s": round(iters * n / dt, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "final_loss": float(trainer.state.output["loss"]),
    }


def real_data_run(
    data_root: Path, minutes: float, num_workers: int, workdir: Path, amp: bool, dataset: str = "zhanglab"
) -> dict:
    """The bundle on real healthy images for ``minutes``: counts iterations and data waits."""
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train_real import build_real_datalist
    from bench_zhanglab import build_zhanglab_datalist

    from scripts.utils import atomic_write

    workdir.mkdir(parents=True, exist_ok=True)
    dl = build_zhanglab_datalist(data_root) if dataset == "zhanglab" else build_real_datalist(data_root)
    dl_path = workdir / "datalist.json"
    atomic_write(dl_path, json.dumps(dl, indent=1))
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        workflow_type="train",
        bundle_root=str(BUNDLE),
        ckpt_dir=str(workdir / "models"),
        output_dir=str(workdir / "eval"),
        runs_dir=str(workdir / "runs"),
        cache_dir=str(workdir / "cache"),
        datalist_file=str(dl_path),
        num_workers=num_workers,
        max_train_seconds=int(minutes * 60),
        iterations_per_epoch=10**9,
        max_iterations=10**9,
        amp=amp,
        log_every=100,
    )
    t_init = time.perf_counter()
    wf.initialize()  # PBTSeg cache of the training and validation sets
    t_init = time.perf_counter() - t_init
    trainer = wf.parser.get_parsed_content("train#trainer")
    stamps = {"wait": 0.0, "last_end": None, "samples": 0}

    def started(engine):
        stamps["last_end"] = time.perf_counter()

    def got_batch(engine):
        if stamps["last_end"] is not None:
            stamps["wait"] += time.perf_counter() - stamps["last_end"]

    def done(engine):
        torch.cuda.synchronize()
        stamps["last_end"] = time.perf_counter()
        stamps["samples"] += int(engine.state.output.get("n_samples", 0))

    trainer.add_event_handler(Events.EPOCH_STARTED, started)
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, got_batch)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, done)
    t0 = time.perf_counter()
    wf.run()
    dt = time.perf_counter() - t0
    it = trainer.state.iteration
    full = int(json.loads((CONFIGS / "train.json").read_text())["max_iterations"])
    return {
        "dataset": dataset,
        "amp": amp,
        "num_workers": num_workers,
        "minutes": minutes,
        "init_seconds_pbtseg_cache": round(t_init, 1),
        "iterations": it,
        "seconds": round(dt, 1),
        "iterations_per_s": round(it / dt, 3),
        "samples_per_s": round(stamps["samples"] / dt, 1),
        "data_wait_fraction": round(stamps["wait"] / dt, 3),
        "full_schedule_iterations": full,
        "estimated_hours_full_schedule": round(full / max(it / dt, 1e-9) / 3600, 2),
        "n_training_images": dl["counts"]["training"],
        "final_loss": float(trainer.state.output["loss"]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--minutes", type=float, default=5.0, help="real-data training time (0: skip)")
    ap.add_argument("--batch-size", type=int, default=4, help="healthy images per batch (paper: 4)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=50, help="timed iterations per synthetic setting")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--num-workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--dataset", choices=["zhanglab", "covidquex"], default="zhanglab", help="real-data run")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/artasyn_gpu_speed"))
    args = ap.parse_args(argv)

    import torch

    sys.path.insert(0, str(BUNDLE))  # the bundle's own code, imported as ``scripts``
    from scripts.utils import atomic_write

    def write(content: dict) -> None:
        atomic_write(args.out, json.dumps(content, indent=2))

    if not torch.cuda.is_available():
        reason = "no CUDA device (torch.cuda.is_available() is False); nothing measured"
        write({"skipped": reason, "torch": torch.__version__, "python": platform.python_version()})
        print(f"gpu_train_speed: {reason}", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "batch_healthy": args.batch_size,
        "size": args.size,
        "synthetic": [],
        "real": None,
    }

    def save():
        write(result)

    for amp, cl in ((False, False), (True, False), (True, True)):
        try:
            r = synthetic_speed(args.batch_size, args.size, args.iters, args.warmup, amp, cl)
        except Exception as e:  # keep the other settings' numbers
            r = {"amp": amp, "channels_last": cl, "error": f"{type(e).__name__}: {e}"}
        result["synthetic"].append(r)
        print(json.dumps(r), flush=True)
        save()
        torch.cuda.empty_cache()
    if args.minutes > 0:
        try:
            result["real"] = real_data_run(
                args.data_root, args.minutes, args.num_workers, args.workdir, amp=True, dataset=args.dataset
            )
        except Exception as e:
            result["real"] = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(result["real"]), flush=True)
    save()
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
