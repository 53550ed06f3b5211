"""The bundle's image resize (``scripts.resize.AntialiasResize``) against MONAI's anti-aliased ``Resize``.

Two parts, results in ``bench/results/resize.json`` (written atomically) and Markdown tables on
stdout:

- ``speed``: CPU milliseconds of one resize (one torch thread, median of ``--repeats``) of a
  real radiograph per input size (NIH ChestX-ray14 1024 x 1024 as it is, and resized with PIL to
  the other input sizes) to 128 x 128 (``cpu.json``) and 256 x 256 (the paper), both ways, and
  the largest difference of their outputs (0..255);
- ``scores``: ``run inference`` (``inference.json`` with the ``--preset``'s model, every output
  written) on ``--n`` real radiographs (a third each of ``nih_nofinding_normal`` 1024,
  ``covidquex_covid_infection`` 256 and ``zhanglab_test_dev/pneumonia`` 224 x 224 RGB JPEG),
  once as configured and once with MONAI's ``Resized(mode="bilinear", anti_aliasing=True)`` in
  place of the image resize (``preprocessing_tail#2``), with the checkpoint of
  ``bench_inference.py`` (seeded random weights, decision thresholds calibrated on 8
  ``covidquex_normal_lung`` images): the largest relative difference of the scores, and how
  many labels, mask pixels (at the original size) and heat-map values differ.

    nice -n 15 python bench/bench_resize.py [--preset cpu] [--n 21] [--repeats 7] [--out bench/results/resize.json]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bundle"))

from bench_inference import DATA, make_checkpoint, preset_overrides, run_once, write_json  # noqa: E402

#: MONAI's transform, in place of the bundle's image resize in ``inference.json``
MONAI_RESIZE = {
    "preprocessing_tail#2": {
        "_target_": "Resized",
        "keys": "image",
        "spatial_size": "@spatial_size",
        "mode": "bilinear",
        "anti_aliasing": True,
    }
}
IN_SIZES = [(1024, 1024), (1700, 1400), (512, 512), (256, 256), (224, 224)]
OUT_SIZES = [(128, 128), (256, 256)]


def _median_ms(transform, img, repeats: int) -> float:
    transform(img)  # warm-up (and the matrices' cache)
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        transform(img)
        times.append(time.process_time() - t0)
    return 1000 * statistics.median(times)


def speed(repeats: int) -> list[dict]:
    from monai.transforms import Resize
    from PIL import Image

    from scripts.loading import LoadChestXRayd
    from scripts.resize import AntialiasResize

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    nih = sorted((DATA / "nih_nofinding_normal" / "images").glob("*.png"))[0]
    image = LoadChestXRayd("image")({"image": str(nih)})["image"]
    rows = []
    for h, w in IN_SIZES:
        if (h, w) == tuple(image.shape[1:]):
            img = image
        else:
            gray = Image.fromarray(image[0].numpy().astype(np.uint8)).resize((w, h), Image.BILINEAR)
            img = torch.as_tensor(np.asarray(gray, dtype=np.float32))[None]
        for out in OUT_SIZES:
            ours, theirs = AntialiasResize(out), Resize(out, mode="bilinear", anti_aliasing=True)
            rows.append(
                {
                    "input": [h, w],
                    "output": list(out),
                    "monai_ms": round(_median_ms(theirs, img, repeats), 2),
                    "ours_ms": round(_median_ms(ours, img, repeats), 2),
                    "max_abs_diff": float((ours(img) - theirs(img)).abs().max()),
                }
            )
            r = rows[-1]
            print(f"  {h} x {w} -> {out[0]}: MONAI {r['monai_ms']} ms, ours {r['ours_ms']} ms", flush=True)
    torch.set_num_threads(previous)
    return rows


def _outputs(folder: Path) -> dict:
    import nibabel as nib
    from PIL import Image

    with open(folder / "anomaly_scores.csv") as f:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    out = {}
    for name, row in rows.items():
        stem = Path(name).stem
        out[name] = {
            "score": float(row["score"]),
            "label": row["label"],
            "mask": np.asarray(Image.open(folder / f"{stem}.artasyn-mask.png")),
            "heatmap": np.asarray(nib.load(str(folder / f"{stem}.artasyn-heatmap.nii.gz")).dataobj),
        }
    return out


def scores(preset: str, n: int) -> dict:
    overrides = preset_overrides(preset)
    third = max(1, n // 3)
    files = [
        *sorted((DATA / "nih_nofinding_normal" / "images").glob("*.png"))[:third],
        *sorted((DATA / "covidquex_covid_infection" / "images").glob("*.png"))[:third],
        *sorted((DATA / "zhanglab_test_dev" / "pneumonia").glob("*.jpeg"))[: n - 2 * third],
    ]
    work = Path(tempfile.mkdtemp(prefix="bench_resize_"))
    try:
        calib = sorted((DATA / "covidquex_normal_lung" / "images").glob("*.png"))[-8:]
        ckpt = make_checkpoint(work / "model.pt", overrides, [str(p) for p in calib])
        runs = {}
        for name, extra in (("ours", {}), ("monai", MONAI_RESIZE)):
            run_once([str(f) for f in files], work / name, ckpt, {**overrides, **extra})
            runs[name] = _outputs(work / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours, monai = runs["ours"], runs["monai"]
    if sorted(ours) != sorted(monai) or len(ours) != len(files):
        raise RuntimeError(f"the two runs wrote different images: {sorted(ours)} / {sorted(monai)}")
    rel = [abs(ours[k]["score"] - monai[k]["score"]) / abs(monai[k]["score"]) for k in ours]
    return {
        "preset": preset,
        "overrides": overrides,
        "images": {
            "nih_nofinding_normal (1024)": third,
            "covidquex_covid_infection (256)": third,
            "zhanglab_test_dev/pneumonia (224)": n - 2 * third,
        },
        "max_relative_score_difference": max(rel),
        "median_relative_score_difference": statistics.median(rel),
        "labels_differing": sum(ours[k]["label"] != monai[k]["label"] for k in ours),
        "labels_abnormal": sum(ours[k]["label"] == "abnormal" for k in ours),
        "mask_pixels_differing": int(sum((ours[k]["mask"] != monai[k]["mask"]).sum() for k in ours)),
        "mask_pixels": int(sum(ours[k]["mask"].size for k in ours)),
        "heatmap_max_abs_difference": float(max(np.abs(ours[k]["heatmap"] - monai[k]["heatmap"]).max() for k in ours)),
        "heatmap_max": float(max(monai[k]["heatmap"].max() for k in ours)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=("cpu", "paper"), default="cpu", help="scores: the model")
    ap.add_argument("--n", type=int, default=21, help="scores: real radiographs, a third of each set")
    ap.add_argument("--repeats", type=int, default=7, help="speed: timed resizes per size")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "resize.json"))
    args = ap.parse_args()

    print("speed (CPU ms, one thread):", flush=True)
    out = {"load_avg_start": [round(x, 2) for x in os.getloadavg()], "speed": speed(args.repeats)}
    print(f"scores ({args.preset} preset, {args.n} real radiographs, both resizes):", flush=True)
    out["scores"] = scores(args.preset, args.n)
    out["torch"] = torch.__version__
    write_json(Path(args.out), out)

    print("\n| input | output | MONAI Resize, CPU ms | AntialiasResize, CPU ms | ratio | max abs diff (0..255) |")
    print("|---|---|---|---|---|---|")
    for r in out["speed"]:
        ratio = r["monai_ms"] / max(r["ours_ms"], 1e-3)
        print(
            f"| {r['input'][0]} x {r['input'][1]} | {r['output'][0]} x {r['output'][1]} | {r['monai_ms']:.1f} "
            f"| {r['ours_ms']:.1f} | {ratio:.0f}x | {r['max_abs_diff']:.1e} |"
        )
    s = out["scores"]
    print(
        f"\nscores, {sum(s['images'].values())} images ({s['preset']} preset): max relative difference "
        f"{s['max_relative_score_difference']:.1e}, labels differing {s['labels_differing']} "
        f"(abnormal {s['labels_abnormal']}), mask pixels differing {s['mask_pixels_differing']} of "
        f"{s['mask_pixels']}, heat map max abs difference {s['heatmap_max_abs_difference']:.1e} "
        f"(max {s['heatmap_max']:.3g})"
    )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
