#!/usr/bin/env python
"""Trivial image-level baselines: what a detector's AUC / AP must beat (``docs/method.md`` section 8).

Five statistics that need no learning, each scored on the same images as the detector:

- ``image_mean``: mean intensity of the whole image;
- ``central_mean``: mean intensity of the central region (the middle half in each direction);
- ``image_std``: standard deviation of the image;
- ``high_freq_energy``: mean squared difference between the image and its 3 x 3 box blur
  (sharpness / noise);
- ``bright_p995``: the image's brightest values, as its 99.5th intensity percentile (a robust
  maximum: burned-in markers and single hot pixels do not set it). On ZhangLab the pneumonia
  images are less bright at the top of their histogram, so this one alone is a strong detector
  there (lower = diseased).

Images are read as 8-bit grayscale at their stored size. AUC is the Mann-Whitney statistic
from ranks (ties averaged) and AP the step-wise average precision, both in numpy only. Each
statistic is reported as it is (higher = diseased) and in its better orientation
(``auc_best = max(auc, 1 - auc)``, with the AP of that orientation): the fair bar, since a
sign is a free choice.

Usage (``zhanglab_val`` by default; writes ``bench/results/trivial_baselines.json`` atomically)::

    python bench/trivial_baselines.py
    python bench/trivial_baselines.py --healthy DIR --diseased DIR --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))

from scripts.utils import atomic_write  # noqa: E402

SUFFIXES = (".png", ".jpg", ".jpeg")
STATISTICS = ("image_mean", "central_mean", "image_std", "high_freq_energy", "bright_p995")


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given their average rank (numpy only)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    r = np.empty(len(x), np.float64)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return r


def auc(scores, labels) -> float:
    """ROC AUC (Mann-Whitney U from ranks, ties averaged); NaN with one class only."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels) == 1
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = ranks(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def average_precision(scores, labels) -> float:
    """AP = sum over thresholds of (recall step) x precision, as sklearn's (ties grouped)."""
    s, y = np.asarray(scores, np.float64), (np.asarray(labels) == 1).astype(np.float64)
    if y.sum() == 0 or y.sum() == len(y):
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def image_statistics(img: np.ndarray) -> dict:
    """The statistics of :data:`STATISTICS` for one grayscale image (``H x W``, any range)."""
    img = np.asarray(img, np.float64)
    h, w = img.shape
    p = np.pad(img, 1, mode="edge")
    blur = sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    return {
        "image_mean": float(img.mean()),
        "central_mean": float(img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean()),
        "image_std": float(img.std()),
        "high_freq_energy": float(((img - blur) ** 2).mean()),
        "bright_p995": float(np.percentile(img, 99.5)),
    }


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SUFFIXES)


def trivial_baselines(items: list[dict]) -> dict:
    """AUC / AP of every statistic over ``items`` (``{"image": path, "label": 0 | 1}``).

    Returns ``{statistic: {"auc", "ap", "auc_best", "ap_best", "orientation"}}`` and ``n_images``.
    """
    stats = [image_statistics(np.asarray(Image.open(it["image"]).convert("L"))) for it in items]
    y = np.asarray([int(it["label"]) for it in items])
    out: dict = {"n_images": len(items), "n_diseased": int(y.sum())}
    for name in STATISTICS:
        s = np.asarray([st[name] for st in stats])
        a, ap = auc(s, y), average_precision(s, y)
        a_inv, ap_inv = auc(-s, y), average_precision(-s, y)
        flip = a_inv > a
        out[name] = {
            "auc": a,
            "ap": ap,
            "auc_best": a_inv if flip else a,
            "ap_best": ap_inv if flip else ap,
            "orientation": "lower = diseased" if flip else "higher = diseased",
        }
    return out


def zhanglab_val_items(data_root: Path) -> list[dict]:
    val = Path(data_root) / "zhanglab_val"
    return [{"image": str(p), "label": 0} for p in _images(val / "normal")] + [
        {"image": str(p), "label": 1} for p in _images(val / "pneumonia")
    ]


def table(res: dict) -> str:
    lines = ["| statistic | AUC | AP | AUC (better sign) | AP (better sign) |", "|---|---|---|---|---|"]
    for name in STATISTICS:
        r = res[name]
        lines.append(f"| {name} | {r['auc']:.3f} | {r['ap']:.3f} | {r['auc_best']:.3f} | {r['ap_best']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--healthy", type=Path, help="folder of healthy images (default: zhanglab_val/normal)")
    ap.add_argument("--diseased", type=Path, help="folder of diseased images (default: zhanglab_val/pneumonia)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "trivial_baselines.json")
    args = ap.parse_args(argv)
    if args.healthy and args.diseased:
        items = [{"image": str(p), "label": 0} for p in _images(args.healthy)]
        items += [{"image": str(p), "label": 1} for p in _images(args.diseased)]
        where = {"healthy": str(args.healthy), "diseased": str(args.diseased)}
    else:
        items = zhanglab_val_items(args.data_root)
        where = {"set": "zhanglab_val (normal = 0, pneumonia = 1)"}
    res = {"data": where, **trivial_baselines(items)}
    print(table(res))
    atomic_write(args.out, json.dumps(res, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
