"""Calibrate the soft anomaly map of L_dice to the error scale of real synthetic anomalies.

``docs/method.md`` section 8: a soft Dice built on the authors' "squared error >= 0.2" stays
near 0.9 even for a perfect reconstruction, because ART-ASyn anomalies brighten the lung by
about 60 gray levels (squared error ~0.05 in [0, 1] units). This benchmark measures, on real
healthy radiographs (COVID-QU-Ex normal, the authors' lung maps, one A_final anomaly each):

- the squared error ``(synthetic - healthy)^2`` inside and outside the anomaly masks
  (quantiles);
- the soft Dice loss of a **perfect** reconstruction (recon = healthy target, which should be
  low) and of the **identity** reconstruction (recon = input, no repair, which should be high)
  for the paper's threshold and for candidate calibrated ones.

Usage::

    python bench/bench_dice_calibration.py [--n 100] [--seed 0]

Prints a table and writes ``bench/results/dice_calibration.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from artasyn.constants import DICE_ERROR_THRESHOLD, DICE_SCALE, PAPER_DICE_ERROR_THRESHOLD
from artasyn.model.losses import SoftDiceAnomalyLoss
from artasyn.synthesis import RandARTAnomaly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))
from scripts.utils import atomic_write  # noqa: E402

DATA = Path(os.environ.get("ARTASYN_SHARED_DATA", ROOT.parent / "shared" / "data"))
CANDIDATES = [
    (PAPER_DICE_ERROR_THRESHOLD, 50.0),
    (0.05, 200.0),
    (0.02, 300.0),
    (0.01, 500.0),
    (0.01, 1000.0),
    (0.005, 1000.0),
]


def synthetic_twins(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``(inputs, targets, masks)`` as B x 1 x H x W in [0, 1], from the first ``n`` images."""
    images = sorted((DATA / "covidquex_normal_lung" / "images").glob("*.png"))
    synth = RandARTAnomaly(variant="final").set_random_state(seed)
    xs, ys, ms, names = [], [], [], []
    for path in images:
        if len(xs) == n:
            break
        lung = np.asarray(Image.open(DATA / "reference" / "pbtseg" / "covidquex_normal_lung" / path.name))[None]
        if not lung.any():
            continue
        img = np.asarray(Image.open(path).convert("L"))[None]
        out, mask = synth(img, lung)
        xs.append(np.asarray(out, np.float32) / 255)
        ys.append(img.astype(np.float32) / 255)
        ms.append(np.asarray(mask, np.float32))
        names.append(path.name)
    return torch.tensor(np.stack(xs)), torch.tensor(np.stack(ys)), torch.tensor(np.stack(ms)), names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of healthy images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (DATA / "covidquex_normal_lung").is_dir():
        sys.exit(f"real data not found at {DATA} (set ARTASYN_SHARED_DATA)")
    x, y, m, names = synthetic_twins(args.n, args.seed)
    se = (x - y) ** 2
    inside, outside = se[m > 0], se[m == 0]
    qs = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90)
    result = {
        "images": len(names),
        "seed": args.seed,
        "variant": "final",
        "lung_maps": "reference/pbtseg (the authors' PBTSeg)",
        "squared_error_inside_mask_quantiles": {str(q): float(torch.quantile(inside, q)) for q in qs},
        "fraction_outside_mask_above_0.005": float((outside > 0.005).float().mean()),
        "defaults": {"threshold": DICE_ERROR_THRESHOLD, "scale": DICE_SCALE},
        "candidates": [],
    }
    print(f"{len(names)} images; squared error inside the masks, quantiles:")
    print("  " + "  ".join(f"q{int(q * 100)}={v:.4f}" for q, v in zip(qs, torch.quantile(inside, torch.tensor(qs)))))
    print("\n| threshold | scale | perfect reconstruction | identity (no repair) |\n|---|---|---|---|")
    for thr, scale in CANDIDATES:
        loss = SoftDiceAnomalyLoss(threshold=thr, scale=scale)
        perfect, identity = float(loss(x, y, m)), float(loss(x, x, m))
        result["candidates"].append({"threshold": thr, "scale": scale, "perfect": perfect, "identity": identity})
        print(f"| {thr} | {scale:g} | {perfect:.3f} | {identity:.3f} |")
    atomic_write(ROOT / "bench" / "results" / "dice_calibration.json", json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
