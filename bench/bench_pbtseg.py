"""Benchmark PBTSeg (docs/method.md section 1), per mode: quality on every real set, and speed.

Two parts, both in one process with one thread, for ``PBTSeg(mode="paper")`` (the authors'
algorithm) and ``PBTSeg(mode="robust")`` (``artasyn.lungs.robust``):

- ``modes``: on every set of ``../shared/data`` (the three ``covidquex_*`` sets, NIH, the
  ZhangLab train-normal and validation sets): how often a lung is missing from the label map
  (one or both), how often the robust mode had to fall back (a side mirrored or templated),
  the mean and median Dice of the union of both lungs against the ground-truth lung masks
  (``covidquex_*`` only), the fraction of the COVID infection-mask pixels that lie inside the
  lung map (pooled over the set), and the images per second of that pass. PNGs are read as
  8-bit grey, the ZhangLab RGB JPEGs through :class:`artasyn.intensity.ToGrayscale`, all at
  their native size (PBTSeg resizes to 256 and maps back). The robust mode was developed on
  one half of each set (``crc32(stem) % 2 == 0``); the Dice and the infection share of the
  other half are reported apart (``dice_heldout_mean``, ``infection_pixels_inside_heldout``).
  Results: ``bench/results/pbtseg_modes.json``.
- ``speed``: the 400 images of ``covidquex_normal_lung`` (256 x 256), NIH at 1024 x 1024 and
  downscaled to 512 x 512, each timed ``--repeats`` times; medians, beside the authors'
  figure of ``reference/summary.json``. Results: ``bench/results/pbtseg.json``.

    OMP_NUM_THREADS=1 python bench/bench_pbtseg.py               # both parts
    OMP_NUM_THREADS=1 python bench/bench_pbtseg.py --part modes
"""

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from artasyn.intensity import ToGrayscale  # noqa: E402
from artasyn.lungs.pbtseg import PBTSEG_MODES, PBTSeg, resize_bilinear_uint8  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))  # the bundle's own code, imported as ``scripts``

from scripts.utils import atomic_write  # noqa: E402

#: set name -> (image folder, ground-truth lung folder, infection-mask folder), below the data root
SETS = {
    "covidquex_normal_lung": ("covidquex_normal_lung/images", "covidquex_normal_lung/masks", None),
    "covidquex_noncovid_lung": ("covidquex_noncovid_lung/images", "covidquex_noncovid_lung/masks", None),
    "covidquex_covid_infection": (
        "covidquex_covid_infection/images",
        "covidquex_covid_infection/masks_lung",
        "covidquex_covid_infection/masks",
    ),
    "nih_nofinding_normal": ("nih_nofinding_normal/images", None, None),
    "zhanglab_train_normal": ("zhanglab_train_normal", None, None),
    "zhanglab_val_normal": ("zhanglab_val/normal", None, None),
    "zhanglab_val_pneumonia": ("zhanglab_val/pneumonia", None, None),
}
HEALTHY = ("covidquex_normal_lung", "nih_nofinding_normal", "zhanglab_train_normal", "zhanglab_val_normal")


def is_dev(stem: str) -> bool:
    """The half of each set the robust mode was developed on."""
    return zlib.crc32(stem.encode()) % 2 == 0


def image_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def read_gray(path: Path) -> np.ndarray:
    """``1 x H x W`` uint8: PNGs as PIL "L", RGB JPEGs through ToGrayscale (channel-last RGB)."""
    with Image.open(path) as im:
        if im.mode == "RGB":
            return np.asarray(ToGrayscale()(np.asarray(im)))
        return np.asarray(im.convert("L"))[None]


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def load(folder: Path) -> list[np.ndarray]:
    return [read_gray(p) for p in image_paths(folder)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def quality(seg: PBTSeg, data: Path, name: str) -> dict:
    """One pass of ``seg`` over one set: misses, fallbacks, Dice, infection inclusion, speed."""
    images_dir, lung_dir, inf_dir = SETS[name]
    paths = image_paths(data / images_dir)
    images = [read_gray(p) for p in paths]
    maps, found, sources = [], [], []
    start = time.process_time()
    for img in images:
        out, f = seg.segment(img)
        maps.append(out[0])
        found.append(f)
    elapsed = time.process_time() - start
    if seg.mode == "robust":  # which step gave each side (cheap to recompute: not timed)
        from artasyn.lungs.robust import robust_lungs

        sources = [robust_lungs(resize_bilinear_uint8(i[0], (256, 256)), **seg.robust_kwargs)[2] for i in images]
    row = {
        "set": name,
        "n": len(images),
        "missing_one_or_both": sum(not (r and left) for r, left in found),
        "missing_both": sum(not (r or left) for r, left in found),
        "img_per_cpu_s": round(len(images) / elapsed, 2),
    }
    row["missing_one_or_both_fraction"] = round(row["missing_one_or_both"] / len(images), 4)
    if sources:
        row["fallback_one_or_both"] = sum(s != ("threshold", "threshold") for s in sources)
        row["fallback_both"] = sum(s == ("template", "template") for s in sources)
        row["fallback_one_or_both_fraction"] = round(row["fallback_one_or_both"] / len(images), 4)
    if lung_dir is not None:
        dev = np.array([is_dev(p.stem) for p in paths])
        scores = np.array([dice(m > 0, read_mask(data / lung_dir / f"{p.stem}.png")) for m, p in zip(maps, paths)])
        row["dice_mean"] = round(float(scores.mean()), 4)
        row["dice_median"] = round(float(np.median(scores)), 4)
        row["dice_dev_mean"] = round(float(scores[dev].mean()), 4)
        row["dice_heldout_mean"] = round(float(scores[~dev].mean()), 4)
    if inf_dir is not None:
        inside, total = np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64)  # [held-out, dev]
        for m, p in zip(maps, paths):
            inf = read_mask(data / inf_dir / f"{p.stem}.png")
            inside[int(is_dev(p.stem))] += int((inf & (m > 0)).sum())
            total[int(is_dev(p.stem))] += int(inf.sum())
        row["infection_pixels_inside"] = round(int(inside.sum()) / max(int(total.sum()), 1), 4)
        row["infection_pixels_inside_dev"] = round(int(inside[1]) / max(int(total[1]), 1), 4)
        row["infection_pixels_inside_heldout"] = round(int(inside[0]) / max(int(total[0]), 1), 4)
    return row


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


def write_json(path: Path, result: dict) -> None:
    """``result`` as JSON, written atomically (the bundle's writer)."""
    atomic_write(path, json.dumps(result, indent=1) + "\n")


def speed_part(args: argparse.Namespace) -> list[dict]:
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
    rows = []
    for mode in PBTSEG_MODES:
        seg = PBTSeg(mode=mode)
        for name, (images, theirs) in inputs.items():
            runs, cpu_runs = throughput(seg, images, args.repeats)
            median = statistics.median(runs)
            rows.append(
                {
                    "mode": mode,
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
    write_json(
        args.out_speed,
        {
            "what": "PBTSeg (artasyn.lungs.pbtseg.PBTSeg, spatial_size=256) images/s per mode, one process, one thread",
            "load_average_at_start": os.getloadavg(),
            "measured_on": f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch threads 1",
            "authors_note": "authors' figures: reference/summary.json (segmentation call only; "
            "nih timed after cv2 resize)",
            "results": rows,
        },
    )
    print(
        f"{'mode':7s} {'input':30s} {'n':>5s} {'img/s':>8s} {'img/cpu-s':>9s} {'authors':>8s} {'ratio':>6s}"
        f" {'peak MiB':>9s}"
    )
    for r in rows:
        theirs = "-" if r["authors_img_per_s"] is None else f"{r['authors_img_per_s']:.2f}"
        ratio = "-" if r["speedup_vs_authors"] is None else f"{r['speedup_vs_authors']:.1f}x"
        print(
            f"{r['mode']:7s} {r['input']:30s} {r['n_images']:5d} {r['img_per_s_median']:8.2f}"
            f" {r['img_per_cpu_s_median']:9.2f} {theirs:>8s} {ratio:>6s} {r['peak_mib_tracemalloc']:9.2f}"
        )
    print(f"saved {args.out_speed}")
    return rows


def modes_part(args: argparse.Namespace, speed_rows: list[dict]) -> None:
    rows = []
    for mode in PBTSEG_MODES:
        seg = PBTSeg(mode=mode)
        for name in SETS:
            row = quality(seg, args.data, name)
            row["mode"] = mode
            rows.append(row)
            print(f"  {mode} {name}: done", flush=True)
    medians = {r["mode"]: r["img_per_s_median"] for r in speed_rows if r["input"].startswith("256")}
    result = {
        "what": "PBTSeg per mode and per set: lungs missing from the label map, robust fallbacks, Dice of the "
        "union of both lungs against the ground-truth lungs, COVID infection-mask pixels inside the map, speed",
        "command": "OMP_NUM_THREADS=1 python bench/bench_pbtseg.py",
        "measured_on": f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch threads 1",
        "load_average_at_start": os.getloadavg(),
        "development_split": "robust mode developed on the images with crc32(stem) % 2 == 0 of each set; "
        "dice_dev_mean / dice_heldout_mean and infection_pixels_inside_dev / _heldout split the Dice and the "
        "infection share by that rule; the ZhangLab validation sets were only measured",
        "healthy_sets": list(HEALTHY),
        "img_per_s_256_median": medians,
        "results": rows,
    }
    write_json(args.out_modes, result)
    head = (
        f"{'mode':7s} {'set':26s} {'n':>5s} {'miss1+':>7s} {'miss2':>6s} {'fallbk':>7s} {'Dice':>6s} {'Dice-ho':>7s}"
        f" {'infIn':>6s} {'img/cpu-s':>9s}"
    )
    print(head)
    for r in rows:
        fb = "-" if "fallback_one_or_both" not in r else f"{r['fallback_one_or_both_fraction']:.3f}"
        dm = "-" if "dice_mean" not in r else f"{r['dice_mean']:.3f}"
        dh = "-" if "dice_heldout_mean" not in r else f"{r['dice_heldout_mean']:.3f}"
        inf = "-" if "infection_pixels_inside" not in r else f"{r['infection_pixels_inside']:.3f}"
        print(
            f"{r['mode']:7s} {r['set']:26s} {r['n']:5d} {r['missing_one_or_both_fraction']:7.3f}"
            f" {r['missing_both']:6d} {fb:>7s} {dm:>6s} {dh:>7s} {inf:>6s} {r['img_per_cpu_s']:9.1f}"
        )
    print("img/s at 256 x 256 (medians of the speed part):", medians)
    print(f"saved {args.out_modes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("ARTASYN_SHARED_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--part", choices=("all", "speed", "modes"), default="all")
    parser.add_argument("--out-speed", type=Path, default=ROOT / "bench" / "results" / "pbtseg.json")
    parser.add_argument("--out-modes", type=Path, default=ROOT / "bench" / "results" / "pbtseg_modes.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging_off()
    speed_rows = speed_part(args) if args.part in ("all", "speed") else []
    if args.part in ("all", "modes"):
        modes_part(args, speed_rows)


def logging_off() -> None:
    """No-lung warnings are expected on some images; keep the table readable."""
    import logging

    logging.getLogger("artasyn.lungs.pbtseg").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
