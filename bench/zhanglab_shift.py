#!/usr/bin/env python
"""How far each ZhangLab set lies from the training normals, by simple image statistics.

A detector trained on ``zhanglab_train_normal`` flags whatever is unlike those images. When the
healthy images of an evaluation set already differ from them (another acquisition, another
resampling), a reconstruction error rises on healthy images too. This measures that shift
without any network: for each statistic of :func:`trivial_baselines.image_statistics` (plus the
image's brightest value, and the framing: the height, width, top and bottom of the box around the
lungs that robust PBTSeg finds, as fractions of the image), the AUC of telling the training
normals (every ``--stride``-th image) from each other set's images. An AUC near 0.5 means no
shift; the further it is from 0.5, the more that statistic alone tells the set apart. Medians per
set are reported beside.

Usage::

    python bench/zhanglab_shift.py --out bench/results/zhanglab_shift.json

Written atomically as JSON, with a markdown table.
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
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bundle"))

from trivial_baselines import _images, auc, image_statistics  # noqa: E402

from artasyn.lungs import PBTSeg, lung_box  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402

SETS = {
    "train_normal": "zhanglab_train_normal",
    "val_normal": "zhanglab_val/normal",
    "val_pneumonia": "zhanglab_val/pneumonia",
    "test_dev_normal": "zhanglab_test_dev/normal",
    "test_dev_pneumonia": "zhanglab_test_dev/pneumonia",
}


_LUNGS = PBTSeg(mode="robust")  # always returns both lungs (fallbacks), so every image has a box


def framing(img: np.ndarray) -> dict:
    """The box around robust PBTSeg's lungs (:func:`artasyn.lungs.lung_box`, no margin), as
    fractions of the image's height and width."""
    lungs = np.asarray(_LUNGS(img[None].astype(np.float32)))[0]
    (top, left), (bottom, right) = lung_box(lungs, 0.0)
    h, w = lungs.shape
    return {
        "lung_box_height": (bottom - top) / h,
        "lung_box_width": (right - left) / w,
        "lung_box_top": top / h,
        "lung_box_bottom": bottom / h,
    }


def statistics(path: Path) -> dict:
    img = np.asarray(Image.open(path).convert("L"), np.float64)
    return {**image_statistics(img), "max": float(img.max()), **framing(img)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_root = Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument("--data-root", type=Path, default=default_root)
    ap.add_argument("--stride", type=int, default=4, help="every n-th training normal (1241 / 4 = 311)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zhanglab_shift.json")
    args = ap.parse_args(argv)
    stats = {}
    for name, rel in SETS.items():
        folder = args.data_root / rel
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: ZhangLab set {name!r} not found (see ../shared/data/README.md)")
        paths = _images(folder)[:: args.stride if name == "train_normal" else 1]
        stats[name] = [statistics(p) for p in paths]
    names = list(stats["train_normal"][0])
    ref = {k: np.array([s[k] for s in stats["train_normal"]]) for k in names}
    result = {"what": __doc__.split("\n")[0], "stride": args.stride, "n_images": {}, "median": {}, "auc_vs_train": {}}
    for set_name, rows in stats.items():
        result["n_images"][set_name] = len(rows)
        result["median"][set_name] = {k: float(np.median([s[k] for s in rows])) for k in names}
        if set_name == "train_normal":
            continue
        other = {k: np.array([s[k] for s in rows]) for k in names}
        result["auc_vs_train"][set_name] = {
            k: auc(np.r_[ref[k], other[k]], np.r_[np.zeros(ref[k].size), np.ones(other[k].size)]) for k in names
        }
    lines = ["| set (n) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for set_name in stats:
        med = result["median"][set_name]
        cells = []
        for k in names:
            a = result["auc_vs_train"].get(set_name, {}).get(k)
            cells.append(f"{med[k]:.3g}" + ("" if a is None else f" (AUC {a:.2f})"))
        lines.append(f"| {set_name} ({result['n_images'][set_name]}) | " + " | ".join(cells) + " |")
    result["table_markdown"] = "\n".join(lines)
    atomic_write(args.out, json.dumps(result, indent=1))
    print(result["table_markdown"])
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
