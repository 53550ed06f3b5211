"""Benchmark: does an inference overlay look hotter on a diseased radiograph than on a healthy one?

``run inference`` of ``configs/inference.json`` with a trained checkpoint, twice on the same
images: ``--overlay_scale calibrated`` (the default: twice the checkpoint's ``healthy_peak`` at
the top of the colours) and ``image`` (each overlay scaled to its own maximum). From each written
overlay PNG: its colour, the mean over its pixels of ``max(R, G, B) - min(R, G, B)`` (the
radiograph is grey, so only the map adds colour), and the share of pixels in the upper half of
the colours (``anomaly_map`` at least half the top colour's value, read from the written heat
map and the scale the writer used). Reported per class (median) and as the AUC of the colour
as a healthy-against-diseased score: how well a reader glancing at overlays could tell the two
apart. Nothing is written but ``--out`` (atomically) and the two output folders under ``--work``.

    python bench/bench_overlay_scale.py --ckpt <work>/models/model_final.pt \\
        --healthy <shared>/zhanglab_test_dev/normal --diseased <shared>/zhanglab_test_dev/pneumonia \\
        --n 40 --work /tmp/overlay --out bench/results/overlay_scale_zhanglab.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import inference_workflow  # noqa: E402
from trivial_baselines import auc  # noqa: E402

from scripts.loading import is_image_file  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402

MODES = ("calibrated", "image")


def overlay_colour(path: Path) -> float:
    """Mean over the pixels of ``max(R, G, B) - min(R, G, B)``: 0 for a grey image."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())


def hot_share(heat: np.ndarray, peak: float | None) -> float:
    """Share of the map's pixels drawn in the upper half of the colours (``peak`` None: its own maximum)."""
    top = float(heat.max()) if peak is None else float(peak)
    return float(np.mean(heat >= 0.5 * top)) if top > 0 else 0.0


def run(files: list[str], out: Path, ckpt: Path, mode: str, overrides: dict) -> tuple[list[dict], float | None, float]:
    """``run inference`` into ``out``: its CSV rows, the writer's overlay peak, and the seconds."""
    import csv

    wf = inference_workflow(files, out, ckpt, {**overrides, "overlay_scale": mode, "save_mask": False})
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
        wf.run()
    seconds = time.perf_counter() - t0
    peak = wf.parser.get_parsed_content("writer").overlay_peak
    wf.finalize()
    with open(out / "anomaly_scores.csv") as f:
        rows = list(csv.DictReader(f))
    return rows, peak, seconds


def measure(rows: list[dict], out: Path, peak: float | None, healthy: set[str]) -> list[dict]:
    per_image = []
    for r in rows:
        if r["status"] != "ok":
            raise RuntimeError(f"{r['file']}: {r['status']}")
        heat = np.asarray(nib.load(str(out / r["heatmap"])).dataobj, dtype=np.float32)
        per_image.append(
            {
                "file": r["file"],
                "healthy": r["file"] in healthy,
                "score": float(r["score"]),
                "label": r["label"],
                "colour": overlay_colour(out / r["overlay"]),
                "hot_share": hot_share(heat, peak),
            }
        )
    return per_image


def summarise(per_image: list[dict]) -> dict:
    h = [p for p in per_image if p["healthy"]]
    d = [p for p in per_image if not p["healthy"]]
    labels = [0] * len(h) + [1] * len(d)
    out = {}
    for key in ("colour", "hot_share"):
        out[key] = {
            "healthy_median": statistics.median(p[key] for p in h),
            "diseased_median": statistics.median(p[key] for p in d),
            "auc_diseased_vs_healthy": auc([p[key] for p in h + d], labels),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--healthy", type=Path, required=True, help="a folder of healthy radiographs")
    ap.add_argument("--diseased", type=Path, required=True, help="a folder of diseased radiographs")
    ap.add_argument("--n", type=int, default=40, help="the first n images (sorted) of each folder")
    ap.add_argument("--work", type=Path, required=True, help="where the two inference outputs go")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", nargs="*", default=[], metavar="ID=JSON", help="more inference.json overrides")
    args = ap.parse_args()
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes ID=JSON, got {item!r}")
        overrides[key] = json.loads(value)

    def first(folder: Path) -> list[str]:
        files = sorted(str(p) for p in folder.iterdir() if is_image_file(p))[: args.n]
        if not files:
            raise SystemExit(f"no images in {folder}")
        return files

    healthy, diseased = first(args.healthy), first(args.diseased)
    result = {
        "checkpoint": str(args.ckpt),
        "healthy_dir": str(args.healthy),
        "diseased_dir": str(args.diseased),
        "n_healthy": len(healthy),
        "n_diseased": len(diseased),
        "overrides": overrides,
        "modes": {},
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    for mode in MODES:
        out = args.work / mode
        rows, peak, seconds = run(healthy + diseased, out, args.ckpt, mode, overrides)
        per_image = measure(rows, out, peak, set(healthy))
        result["modes"][mode] = {
            "overlay_peak": peak,
            "seconds": round(seconds, 1),
            **summarise(per_image),
            "per_image": per_image,
        }
    atomic_write(args.out, json.dumps(result, indent=1) + "\n")
    print(f"{len(healthy)} healthy, {len(diseased)} diseased; {args.ckpt}")
    print(
        "| overlay_scale | top colour at | colour: healthy / diseased (median) | AUC "
        "| upper-half share: healthy / diseased | AUC |"
    )
    print("|---|---|---|---|---|---|")
    for mode, m in result["modes"].items():
        c, s = m["colour"], m["hot_share"]
        peak = "each image's max" if m["overlay_peak"] is None else f"{m['overlay_peak']:.4g}"
        print(
            f"| {mode} | {peak} | {c['healthy_median']:.2f} / {c['diseased_median']:.2f} | "
            f"{c['auc_diseased_vs_healthy']:.3f} | {s['healthy_median']:.3f} / {s['diseased_median']:.3f} | "
            f"{s['auc_diseased_vs_healthy']:.3f} |"
        )


if __name__ == "__main__":
    main()
