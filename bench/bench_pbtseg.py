"""Benchmark PBTSeg (docs/method.md section 1): images per second in one process, one thread.

Inputs (``../shared/data``): the 400 real 256 x 256 images of ``covidquex_normal_lung``, the
1024 x 1024 images of ``nih_nofinding_normal``, and those downscaled to 512 x 512. Each size
is timed ``--repeats`` times over all its images; the median throughput is reported, beside
the authors' figure from ``reference/summary.json``. Peak memory is the tracemalloc peak of
one extra pass (Python allocations, numpy included). Results: ``bench/results/pbtseg.json``.

    OMP_NUM_THREADS=1 python bench/bench_pbtseg.py
"""

import argparse
import json
import os
import statistics
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from artasyn.pbtseg import PBTSeg, resize_bilinear_uint8  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("L"))[None] for p in sorted(folder.glob("*.png"))]


def throughput(seg: PBTSeg, images: list[np.ndarray], repeats: int) -> tuple[list[float], list[float]]:
    """Images per second of each run: by wall clock, and by this process's CPU time (the
    latter is less disturbed by other processes on a shared machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for img in images:
            seg(img)
        wall.append(len(images) / (time.perf_counter() - start))
        cpu.append(len(images) / (time.process_time() - start_cpu))
    return wall, cpu


def peak_mib(seg: PBTSeg, images: list[np.ndarray]) -> float:
    tracemalloc.start()
    for img in images:
        seg(img)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("ARTASYN_SHARED_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pbtseg.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging_off()

    summary = json.loads((args.data / "reference" / "summary.json").read_text())
    authors = {r["set"]: r["pbtseg_img_per_s"] for r in summary["pbtseg_authors_code"]}
    nih = load(args.data / "nih_nofinding_normal" / "images")
    inputs = {
        "256 (covidquex_normal_lung)": (
            load(args.data / "covidquex_normal_lung" / "images"),
            authors["covidquex_normal_lung"],
        ),
        "512 (nih, downscaled)": ([resize_bilinear_uint8(i[0], (512, 512))[None] for i in nih], None),
        "1024 (nih_nofinding_normal)": (nih, authors["nih_nofinding_normal"]),
    }
    seg = PBTSeg()
    rows = []
    for name, (images, theirs) in inputs.items():
        runs, cpu_runs = throughput(seg, images, args.repeats)
        median = statistics.median(runs)
        rows.append(
            {
                "input": name,
                "n_images": len(images),
                "img_per_s_median": round(median, 2),
                "img_per_s_runs": [round(r, 2) for r in runs],
                "img_per_cpu_s_median": round(statistics.median(cpu_runs), 2),
                "peak_mib_tracemalloc": round(peak_mib(seg, images[:20]), 2),
                "authors_img_per_s": None if theirs is None else round(theirs, 2),
                "speedup_vs_authors": None if theirs is None else round(median / theirs, 2),
            }
        )
    result = {
        "what": "PBTSeg (artasyn.pbtseg.PBTSeg, spatial_size=256) images/s, one process, one thread",
        "load_average_at_start": os.getloadavg(),
        "measured_on": f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch threads 1",
        "authors_note": "authors' figures: reference/summary.json (segmentation call only; nih timed after cv2 resize)",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(f"{'input':30s} {'n':>5s} {'img/s':>8s} {'img/cpu-s':>9s} {'authors':>8s} {'ratio':>6s} {'peak MiB':>9s}")
    for r in rows:
        theirs = "-" if r["authors_img_per_s"] is None else f"{r['authors_img_per_s']:.2f}"
        ratio = "-" if r["speedup_vs_authors"] is None else f"{r['speedup_vs_authors']:.1f}x"
        print(
            f"{r['input']:30s} {r['n_images']:5d} {r['img_per_s_median']:8.2f} {r['img_per_cpu_s_median']:9.2f}"
            f" {theirs:>8s} {ratio:>6s} {r['peak_mib_tracemalloc']:9.2f}"
        )
    print(f"saved {args.out}")


def logging_off() -> None:
    """No-lung warnings are expected on some images; keep the table readable."""
    import logging

    logging.getLogger("artasyn.pbtseg").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
