"""Inference speed of the bundle: end to end per input size, and the network alone.

Two parts, results in ``bench/results/inference.json`` (written atomically) and Markdown
tables on stdout:

- ``end_to_end``: ``run inference`` of ``configs/inference.json`` (its defaults: every output
  written, the DataLoader workers, threads and writer settings of the config) on folders of
  real radiographs, in images per second of the whole ``run`` (the pre-check of every input,
  loading, resizing, PBTSeg, the network, the map and mask back at the original size, the
  heat map NIfTI, the overlay and mask PNGs, the CSV). Sets: the first ``--n`` NIH images
  (``nih_nofinding_normal``, 1024 x 1024) as they are (``1024``) and resized with PIL to 512
  and 256 (``512``, ``256``: synthetic sizes, same content), and ``mixed``: NIH 1024 and
  ``covidquex_normal_lung`` 256 x 256 alternating (``--n`` in all). ``--sizes`` also takes
  ``1700`` (NIH upsampled to 1700 x 1400, a large detector). Each set runs ``--repeats``
  times (a fresh output folder each time) after one warm-up run; the median is reported with
  every run and the 1-minute load average before each (the machine may be shared: compare
  medians taken at a similar load), and the CPU seconds per image (this process and its
  DataLoader workers, user + system; less sensitive to other load: ``2 / cpu_seconds_per_image``
  bounds the rate on 2 free cores).
- ``network_only``: the reconstruction network alone (eval mode, no gradients, random input at
  the working size, one thread) for batch sizes 1 and 4, of both presets (``cpu``, ``paper``).

``--part end_to_end`` or ``--part network`` runs one part and keeps the other in ``--out``.

Model: ``--preset cpu`` (default) is the network and anomaly map of ``cpu.json`` (the 2-core
preset: each image cropped to its lungs with a margin of 0.08, 128 x 128, width 8, positive
map, sigma 3), ``--preset paper`` the paper's network at
256 x 256 (``inference.json`` as it is). The checkpoint is ``--ckpt`` (its network must be the
preset's), or by default seeded random weights with decision thresholds calibrated on 8
``covidquex_normal_lung`` images (``artasyn.scoring.thresholds.calibrate_thresholds``), so labels,
absolute masks and their small-component filter run as with a trained checkpoint.

``--before <json>`` copies the ``end_to_end`` part of an earlier result file (e.g. measured at
an earlier commit with the same command) under ``before`` and adds the ratio of the medians.

    nice -n 15 python bench/bench_inference.py [--part all] [--preset cpu] [--n 24] [--repeats 3] \\
        [--sizes 256 512 1024 mixed] [--before old.json] [--out bench/results/inference.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))  # the bundle's own code, imported as ``scripts``

from scripts.utils import atomic_torch_save, atomic_write  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CONFIGS = ROOT / "bundle" / "configs"
#: the ids of ``cpu.json`` that define its model and anomaly map (its other ids are training-only)
CPU_MODEL_IDS = ("spatial_size", "lung_box_margin", "score_map_mode", "score_map_sigma")


def preset_overrides(preset: str) -> dict:
    """The overrides of ``inference.json`` for ``preset`` (``cpu``: ``cpu.json``'s model ids; ``paper``: none)."""
    if preset == "paper":
        return {}
    cpu = json.loads((CONFIGS / "cpu.json").read_text())
    return {k: v for k, v in cpu.items() if k in CPU_MODEL_IDS or k.startswith("network_def#")}


def _parser(overrides: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    for k, v in overrides.items():
        parser[k] = v
    return parser


def make_checkpoint(path: Path, overrides: dict, calib_files: list[str], seed: int = 0) -> Path:
    """Seeded random weights of the preset's network, with thresholds calibrated on ``calib_files``."""
    from artasyn.scoring import AnomalyScored, SmoothedInputInferer
    from artasyn.scoring.thresholds import calibrate_thresholds

    torch.manual_seed(seed)
    parser = _parser(overrides)
    parser["ckpt_path"] = str(path)
    net = parser.get_parsed_content("network_def").eval()
    pre = parser.get_parsed_content("preprocessing")
    names = ("score_map_mode", "score_map_sigma", "score_map_intensity", "score_input_sigma")
    opts = {k: parser.get_parsed_content(k) for k in names}
    inferer = SmoothedInputInferer(opts["score_input_sigma"])
    scorer = AnomalyScored(
        image_key="image",
        pred_key="recon",
        map_mode=opts["score_map_mode"],
        map_sigma=opts["score_map_sigma"],
        map_intensity=opts["score_map_intensity"],
        map_key="anomaly_map",
        score_key="score",
        mask_key="anomaly_mask",
        gt_key=None,
        has_mask_key=None,
    )
    scores, maps = [], []
    with torch.no_grad():
        for f in calib_files:
            d = pre({"image": f})
            out = scorer({"image": d["image"], "recon": inferer(d["image"][None], net)[0]})
            scores.append(float(torch.as_tensor(out["score"]).reshape(-1)[0]))
            maps.append(torch.as_tensor(out["anomaly_map"]).reshape(-1, *out["anomaly_map"].shape[-2:])[0].numpy())
    thresholds = calibrate_thresholds(scores, [0] * len(scores), maps, pixel_rule="image_max")
    thresholds.update(
        score_map_mode=str(opts["score_map_mode"]),
        score_map_sigma=float(opts["score_map_sigma"]),
        score_map_intensity=float(opts["score_map_intensity"]),
        score_input_sigma=float(opts["score_input_sigma"]),
        score_in_lungs=False,
        mask_in_lungs=False,
        epoch=0,
    )
    atomic_torch_save({"model": net.state_dict(), "thresholds": thresholds}, path)
    return path


def make_sets(work: Path, names: list[str], n: int) -> dict[str, list[str]]:
    """Input folders per set name (see the module docstring); the shared data is only read."""
    from PIL import Image

    nih = sorted((DATA / "nih_nofinding_normal" / "images").glob("*.png"))[:n]
    cqx = sorted((DATA / "covidquex_normal_lung" / "images").glob("*.png"))[: n // 2]
    if len(nih) < n:
        raise FileNotFoundError(f"need {n} NIH images in {DATA / 'nih_nofinding_normal'}, found {len(nih)}")
    sets: dict[str, list[str]] = {}
    for name in names:
        if name == "1024":
            sets[name] = [str(p) for p in nih]
        elif name in ("256", "512", "1700"):
            size = (1700, 1400) if name == "1700" else (int(name), int(name))  # (height, width)
            folder = work / f"in_{name}"
            folder.mkdir(parents=True, exist_ok=True)
            for p in nih:
                with Image.open(p) as im:
                    im.convert("L").resize(size[::-1], Image.Resampling.LANCZOS).save(folder / p.name)
            sets[name] = [str(folder / p.name) for p in nih]
        elif name == "mixed":
            if len(cqx) < n // 2:
                raise FileNotFoundError(f"need {n // 2} images in {DATA / 'covidquex_normal_lung'}, found {len(cqx)}")
            mixed = [str(p) for pair in zip(nih[: n - n // 2], cqx) for p in pair]
            sets[name] = mixed + [str(p) for p in nih[len(cqx) : n - n // 2]]
        else:
            raise ValueError(f"unknown set {name!r}: one of 256, 512, 1024, 1700, mixed")
    return sets


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the DataLoader workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def inference_workflow(files: list[str], out: Path, ckpt: Path, overrides: dict):
    """``inference.json``'s workflow on ``files`` (listed in ``<out>.txt``) into a fresh ``out``, initialised."""
    from monai.bundle import ConfigWorkflow

    shutil.rmtree(out, ignore_errors=True)
    listing = out.parent / f"{out.name}.txt"
    atomic_write(listing, "\n".join(files) + "\n")
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        workflow_type="infer",
        logging_file=False,
        bundle_root=str(ROOT / "bundle"),
        ckpt_path=str(ckpt),
        output_dir=str(out),
        input_files=str(listing),
        **overrides,
    )
    wf.initialize()
    return wf


def run_once(files: list[str], out: Path, ckpt: Path, overrides: dict) -> dict:
    """One ``run inference`` on ``files`` into ``out``: wall seconds of ``run`` and the writer's summary."""
    wf = inference_workflow(files, out, ckpt, overrides)
    load = os.getloadavg()[0]
    cpu0 = _cpu_seconds()
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
        t0 = time.perf_counter()
        wf.run()
        seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    summary = dict(getattr(wf.parser.get_parsed_content("writer"), "summary", {}))
    wf.finalize()
    if summary.get("written") != len(files):
        raise RuntimeError(f"run into {out}: {summary.get('written')} of {len(files)} images written ({summary})")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "load_avg_1min": load,
        "writer_images_per_s": summary.get("images_per_second"),
    }


def end_to_end(sets: dict, ckpt: Path, overrides: dict, repeats: int, work: Path) -> list[dict]:
    first = next(iter(sets.values()))
    run_once(first[:4], work / "warmup", ckpt, overrides)
    rows = []
    for name, files in sets.items():
        runs = [run_once(files, work / f"out_{name}_{r}", ckpt, overrides) for r in range(repeats)]
        rates = [len(files) / r["seconds"] for r in runs]
        rows.append(
            {
                "set": name,
                "n": len(files),
                "images_per_s": round(statistics.median(rates), 3),
                "images_per_s_runs": [round(x, 3) for x in rates],
                "cpu_seconds_per_image": round(statistics.median(r["cpu_seconds"] for r in runs) / len(files), 4),
                "load_avg_1min": [round(r["load_avg_1min"], 2) for r in runs],
                "writer_images_per_s_runs": [round(r["writer_images_per_s"] or float("nan"), 3) for r in runs],
            }
        )
        r = rows[-1]
        print(
            f"  {name}: {r['images_per_s']:.2f} images/s (runs {r['images_per_s_runs']}), "
            f"{r['cpu_seconds_per_image']:.3f} CPU s/image",
            flush=True,
        )
    return rows


def rate(net, device, batch: int, repeats: int, size: int = 256) -> float:
    x = torch.rand(batch, 1, size, size, device=device)
    with torch.no_grad():
        net(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t0)


def network_only(overrides: dict, repeats: int, threads: int = 1) -> dict:
    previous = torch.get_num_threads()
    load = os.getloadavg()[0]
    torch.set_num_threads(threads)
    parser = _parser(overrides)
    size = int(parser.get_parsed_content("spatial_size")[0])
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        net = parser.get_parsed_content("network_def", lazy=False).to(device).eval()
        for batch in (1, 4):
            rows.append(
                {
                    "device": str(device),
                    "batch": batch,
                    "images_per_s": round(rate(net, device, batch, repeats, size), 3),
                }
            )
    torch.set_num_threads(previous)
    return {
        "load_avg_start": round(load, 2),
        "input": [1, size, size],
        "parameters": sum(p.numel() for p in net.parameters()),
        "cpu_threads": threads,
        "results": rows,
    }


def write_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def run_end_to_end(args) -> dict:
    overrides = preset_overrides(args.preset)
    work = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    try:
        ckpt = Path(args.ckpt) if args.ckpt else None
        if ckpt is None:
            calib = sorted((DATA / "covidquex_normal_lung" / "images").glob("*.png"))[-8:]
            ckpt = make_checkpoint(work / "model.pt", overrides, [str(p) for p in calib])
        sets = make_sets(work, args.sizes, args.n)
        load_start = os.getloadavg()
        print(f"end to end ({args.preset} preset, load average {load_start[0]:.2f}):", flush=True)
        rows = end_to_end(sets, ckpt, overrides, args.repeats, work)
        load_end = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "what": "images/s of `run inference` (inference.json defaults, every output written), median of repeats",
        "label": args.label,
        "preset": args.preset,
        "overrides": overrides,
        "checkpoint": args.ckpt or "seeded random weights + thresholds calibrated on 8 covidquex_normal_lung images",
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in load_end],
        "results": rows,
    }


def print_tables(out: dict) -> None:
    if "end_to_end" in out:
        res = out["end_to_end"]
        print(
            f"\n| set | images | images/s ({res['preset']} preset, median of {res['repeats']}) | before | ratio "
            "| CPU s/image | load avg |"
        )
        print("|---|---|---|---|---|---|---|")
        old = {r["set"]: r["images_per_s"] for r in out.get("before", {}).get("results", [])}
        for r in res["results"]:
            b = old.get(r["set"])
            ratio = f"{r['images_per_s'] / b:.1f}x" if b else ""
            loads = "-".join(f"{x:.1f}" for x in (min(r["load_avg_1min"]), max(r["load_avg_1min"])))
            print(
                f"| {r['set']} | {r['n']} | {r['images_per_s']:.2f} | {b if b else ''} | {ratio} "
                f"| {r['cpu_seconds_per_image']:.3f} | {loads} |"
            )
    for preset, net in out.get("network_only", {}).items():
        size = f"{net['input'][1]} x {net['input'][2]}"
        print(
            f"\nnetwork only, {preset} preset ({size}, {net['parameters']} parameters, {net['cpu_threads']} thread, "
            f"load average {net.get('load_avg_start', float('nan')):.1f}):"
        )
        for r in net["results"]:
            print(f"| {r['device']} | batch {r['batch']} | {r['images_per_s']:.2f} images/s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("all", "end_to_end", "network"), default="all")
    ap.add_argument("--preset", choices=("cpu", "paper"), default="cpu", help="end to end: the model")
    ap.add_argument("--ckpt", default=None, help="a checkpoint of the preset's network (default: made here)")
    ap.add_argument("--n", type=int, default=24, help="images per set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=["256", "512", "1024", "mixed"])
    ap.add_argument("--before", default=None, help="an earlier result JSON: its end_to_end becomes 'before'")
    ap.add_argument("--label", default="", help="what was measured (e.g. the commit)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "inference.json"))
    args = ap.parse_args()

    path = Path(args.out)
    out = json.loads(path.read_text()) if args.part != "all" and path.is_file() else {}
    if args.part in ("all", "end_to_end"):
        out["end_to_end"] = run_end_to_end(args)
        out.pop("before", None), out.pop("ratio", None)
        if args.before:
            before = json.loads(Path(args.before).read_text())
            out["before"] = before.get("end_to_end", before)
            old = {r["set"]: r["images_per_s"] for r in out["before"].get("results", [])}
            rows = out["end_to_end"]["results"]
            out["ratio"] = {r["set"]: round(r["images_per_s"] / old[r["set"]], 2) for r in rows if old.get(r["set"])}
    if args.part in ("all", "network"):
        out["network_only"] = {preset: network_only(preset_overrides(preset), repeats=5) for preset in ("cpu", "paper")}
    write_json(path, out)
    print_tables(out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
