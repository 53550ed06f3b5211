"""Speed of the baseline syntheses (AnatPaste, CutPaste, Perlin noise) at 256 x 256.

One process, one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``). For each
variant: the array transform (``artasyn.baselines.BASELINES``, and ``RandARTAnomaly`` for
``final`` as the reference point) on numpy inputs; one warm-up pass, then ``--runs`` timed
passes over the images; reports the median images per second by wall clock and by process CPU
time (less affected by other processes on the machine), the fraction of images painted, the
median mask area and the median brightening inside the mask. Target: >= 100 img/s each.

Data: ``covidquex_normal_lung`` (256 x 256; the first ``--n`` images by name) with the
authors' PBTSeg lung maps of ``reference/pbtseg`` (identical to ours on every image), or with
the ground-truth lung masks (``--lungs gt``); images whose map is empty are left out (they are
returned unchanged and would flatter the speed).

Usage::

    OMP_NUM_THREADS=1 python bench/bench_baselines.py [--runs 5] [--n 200] [--variants anatpaste cutpaste perlin final]

Writes ``bench/results/baselines.json`` (atomically: a temporary file, then ``os.replace``)
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "transforms"))
sys.path.insert(0, str(REPO / "bundle"))

from artasyn.baselines import BASELINES  # noqa: E402
from artasyn.synthesis import RandARTAnomaly  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402

TARGET_IMG_PER_S = 100.0


def load(data: Path, n: int, lungs: str) -> tuple[list, list, int]:
    """(images, lung maps, number left out for an empty map), 1 x 256 x 256 uint8 each."""
    folder = data / "covidquex_normal_lung"
    names = sorted(p.stem for p in (folder / "images").glob("*.png"))[:n]
    imgs, maps, empty = [], [], 0
    for name in names:
        img = np.asarray(Image.open(folder / "images" / f"{name}.png").convert("L"))
        if lungs == "pbtseg":
            lung = np.asarray(Image.open(data / "reference" / "pbtseg" / folder.name / f"{name}.png"))
        else:
            lung = (np.asarray(Image.open(folder / "masks" / f"{name}.png").convert("L")) > 127).astype(np.uint8)
        if not (lung > 0).any():
            empty += 1
            continue
        imgs.append(img[None])
        maps.append(lung[None])
    return imgs, maps, empty


def make(variant: str):
    return RandARTAnomaly(variant="final") if variant == "final" else BASELINES[variant]()


def bench(variant: str, imgs: list, maps: list, runs: int) -> dict:
    t = make(variant).set_random_state(0)
    painted, area, bright = [], [], []
    w0 = time.perf_counter()
    for im, lu in zip(imgs, maps):
        out, mask = t(im, lu)
        painted.append(bool(t.last_painted))
        m = mask[0] > 0
        area.append(float(m.mean()))
        if m.any():
            bright.append(float((out[0].astype(np.float64) - im[0])[m].mean()))
    warm = time.perf_counter() - w0
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        for im, lu in zip(imgs, maps):
            t(im, lu)
        wall.append(len(imgs) / (time.perf_counter() - t0))
        cpu.append(len(imgs) / (time.process_time() - c0))
    return {
        "n_images": len(imgs),
        "warmup_pass_img_per_s": len(imgs) / warm,
        "img_per_s_wall_median": statistics.median(wall),
        "img_per_s_cpu_median": statistics.median(cpu),
        "img_per_s_wall_runs": wall,
        "img_per_s_cpu_runs": cpu,
        "meets_target": statistics.median(wall) >= TARGET_IMG_PER_S if variant != "final" else None,
        "painted_fraction": float(np.mean(painted)),
        "mask_area_median": float(np.median(area)),
        "change_in_mask_median": float(np.median(bright)) if bright else None,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ARTASYN_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--n", type=int, default=200, help="images (the first N of covidquex_normal_lung by name)")
    ap.add_argument("--runs", type=int, default=5, help="timed passes; the median is reported")
    ap.add_argument("--lungs", choices=["pbtseg", "gt"], default="pbtseg")
    ap.add_argument("--variants", nargs="+", default=[*BASELINES, "final"], choices=[*BASELINES, "final"])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "baselines.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    imgs, maps, empty = load(Path(args.data), args.n, args.lungs)
    if not imgs:
        raise SystemExit(f"no images with lungs found under {args.data}")
    load_avg = os.getloadavg()
    results = {v: bench(v, imgs, maps, args.runs) for v in args.variants}
    out = {
        "what": "array transforms on numpy uint8 1x256x256 inputs, one process, one thread, after a warm-up pass",
        "data": f"covidquex_normal_lung, first {args.n} by name, lung maps: {args.lungs}",
        "left_out_empty_lung_map": empty,
        "target_img_per_s": TARGET_IMG_PER_S,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_avg_start": load_avg,
            "load_avg_end": os.getloadavg(),
        },
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "variants": results,
    }
    atomic_write(Path(args.out), json.dumps(out, indent=1))
    print(
        f"{'variant':>10} {'n':>4} {'img/s wall':>11} {'img/s cpu':>10} {'warm-up':>8} {'painted':>8} {'mask area':>10}"
    )
    for v, r in results.items():
        print(
            f"{v:>10} {r['n_images']:>4} {r['img_per_s_wall_median']:>11.1f} {r['img_per_s_cpu_median']:>10.1f} "
            f"{r['warmup_pass_img_per_s']:>8.1f} {r['painted_fraction']:>8.3f} {r['mask_area_median']:>10.4f}"
        )
    print(f"target >= {TARGET_IMG_PER_S:.0f} img/s per baseline; load average {load_avg[0]:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
