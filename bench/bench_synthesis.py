"""Benchmark of the ART-ASyn synthesis chain (``RandARTAnomaly``, variant ``final``).

One process, one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``). For each size:
a warm-up pass (fills the stamp bank, which is built lazily), then ``--runs`` timed passes over
the images; reports the median images per second by wall clock and by process CPU time (the
CPU figure is less affected by other processes sharing the machine), the stamp-bank warm-up,
and the peak memory (``ru_maxrss``). Compared with the authors' figure of
``reference/summary.json`` (``img_per_s``, same machine kind, one thread).

Data: 256 x 256: the 200 ``covidquex_normal_lung`` images listed in ``summary.json`` with the
authors' lung maps; 512 and 1024: ``nih_nofinding_normal`` (1024 x 1024; 512 = bilinear
downscale) with lung maps from :class:`artasyn.lungs.pbtseg.PBTSeg` when it is importable, else the
sizes are skipped.

Usage::

    OMP_NUM_THREADS=1 python bench/bench_synthesis.py [--runs 3] [--n-large 20]

Writes ``bench/results/synthesis.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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

from artasyn.synthesis import RandARTAnomaly  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402


def load_256(data: Path, names: list[str]):
    imgs, lungs = [], []
    for n in names:
        imgs.append(np.asarray(Image.open(data / "covidquex_normal_lung" / "images" / f"{n}.png").convert("L"))[None])
        lungs.append(np.asarray(Image.open(data / "reference" / "pbtseg" / "covidquex_normal_lung" / f"{n}.png"))[None])
    return imgs, lungs


def load_large(data: Path, size: int, n: int):
    try:
        from artasyn.lungs.pbtseg import PBTSeg
    except Exception as e:  # pragma: no cover - depends on the colleague's module
        print(f"[skip {size}] artasyn.lungs.pbtseg not importable: {e}")
        return [], []
    seg = PBTSeg()
    files = sorted((data / "nih_nofinding_normal" / "images").glob("*.png"))[:n]
    imgs, lungs = [], []
    for f in files:
        im = Image.open(f).convert("L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im)[None]
        lung = np.asarray(seg(arr))
        if (lung > 0).any():
            imgs.append(arr)
            lungs.append(lung)
    return imgs, lungs


def bench(imgs, lungs, runs: int) -> dict:
    t = RandARTAnomaly(variant="final").set_random_state(0)
    w0 = time.perf_counter()
    for im, lu in zip(imgs, lungs):
        t(im, lu)
    warm = time.perf_counter() - w0
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        for im, lu in zip(imgs, lungs):
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
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n-large", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "synthesis.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    ref = json.loads((data / "reference" / "summary.json").read_text())["artasyn_synthesis_authors_code"]
    authors = float(ref["img_per_s"])
    results = {}
    imgs, lungs = load_256(data, ref["images"])
    results["256"] = bench(imgs, lungs, args.runs)
    for size in (512, 1024):
        imgs, lungs = load_large(data, size, args.n_large)
        if imgs:
            results[str(size)] = bench(imgs, lungs, max(1, args.runs - 1))
    for r in results.values():
        r["ratio_to_authors_wall"] = r["img_per_s_wall_median"] / authors
        r["ratio_to_authors_cpu"] = r["img_per_s_cpu_median"] / authors
    out = {
        "what": "RandARTAnomaly(variant='final'), one process, one thread, numpy inputs, after a warm-up pass",
        "authors_img_per_s_256": authors,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "load_avg": os.getloadavg()},
        "sizes": results,
    }
    atomic_write(Path(args.out), json.dumps(out, indent=1))
    print(f"{'size':>6} {'n':>4} {'img/s wall':>11} {'img/s cpu':>10} {'warm-up':>8} {'x authors':>10} {'peak MiB':>9}")
    for size, r in results.items():
        print(
            f"{size:>6} {r['n_images']:>4} {r['img_per_s_wall_median']:>11.1f} {r['img_per_s_cpu_median']:>10.1f} "
            f"{r['warmup_pass_img_per_s']:>8.1f} {r['ratio_to_authors_wall']:>10.1f} {r['peak_rss_mib']:>9.0f}"
        )
    print(f"authors (summary.json, 256): {authors:.2f} img/s; wrote {args.out}")


if __name__ == "__main__":
    main()
