#!/usr/bin/env python
"""Benchmark: what the decision thresholds of a trained checkpoint do on its held-apart test images.

The thresholds are calibrated on the validation half (``train.json``'s ``validate#dataset``)
exactly as the training's :class:`scripts.thresholds.ThresholdCalibrator` does, and applied to
the test half (``evaluate.json``'s), for several pixel quantiles. Two ways of setting the pixel
threshold are compared, both on the healthy validation images' anomaly maps:

- ``pooled``: the quantile ``q`` of all their pixel values (the bundle's rule,
  ``threshold_pixel_quantile``): at most ``1 - q`` of the healthy pixels are masked;
- ``image_max``: the quantile ``q`` of each image's largest value: at most ``1 - q`` of the
  healthy images get a non-empty mask.

Per setting: the share of healthy test images with a non-empty absolute mask, the masked share
of their pixels, the share of diseased test images with one, and the micro Dice of the absolute
masks on the diseased images with a lesion mask (and the same for the relative masks of the
first tau, for comparison); and the image labels' sensitivity / specificity at the
specificity and F1 thresholds. The network runs once per image; nothing is written but
``--out`` (pass ``--set cache_dir=...`` to keep the lung cache and phantoms out of the tree).

Example (the small preset's checkpoint on the embedded phantoms)::

    python bench/bench_thresholds.py --ckpt /tmp/run/models/model.pt --presets small.json \\
        --set 'cache_dir="/tmp/run/cache"' --out bench/results/thresholds_small.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(REPO / "bundle"))


def _maps(config_files: list[str], overrides: dict, ckpt: Path) -> list[dict]:
    """Score, label, anomaly map and lesion mask of every item of ``validate#dataset``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files)
    for k, v in overrides.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    net.eval()
    scoring = parser.get_parsed_content("validate#scoring")
    out = []
    for item in parser.get_parsed_content("validate#dataset"):
        with torch.no_grad():
            item["pred"] = net(torch.as_tensor(item["image"])[None].float())[0]
        d = scoring(item)
        out.append(
            {
                "score": float(d["score"][0]),
                "label": int(float(torch.as_tensor(d["label"]).reshape(-1)[0]) > 0.5),
                "map": torch.as_tensor(d["anomaly_map"]).reshape(-1, *d["anomaly_map"].shape[-2:]).amax(0).numpy(),
                "relative": np.asarray(d["pred_mask"])[0] > 0.5,  # the first tau's relative mask
                "gt": None if float(d.get("has_mask", [0])[0]) < 0.5 else np.asarray(d["mask"])[0] > 0.5,
            }
        )
    return out


def _rates(items: list[dict], mask) -> dict:
    """What the masks ``mask(item)`` do: on healthy images (any pixel, share of pixels), on diseased ones."""
    healthy = [mask(o) for o in items if o["label"] == 0]
    diseased = [(mask(o), o["gt"]) for o in items if o["label"] == 1]
    tp = fp = fn = 0
    for m, gt in diseased:
        if gt is not None:
            tp += int((m & gt).sum())
            fp += int((m & ~gt).sum())
            fn += int((~m & gt).sum())
    return {
        "healthy_mask_rate": float(np.mean([m.any() for m in healthy])) if healthy else None,
        "healthy_pixels_masked": float(np.mean([m.mean() for m in healthy])) if healthy else None,
        "diseased_mask_rate": float(np.mean([m.any() for m, _ in diseased])) if diseased else None,
        "micro_dice": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None,
    }


def main() -> None:
    from artasyn.thresholds import calibrate_thresholds, quantile_threshold

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True, type=Path)
    ap.add_argument("--presets", nargs="*", default=[], help="preset files in bundle/configs (e.g. small.json)")
    ap.add_argument("--set", nargs="*", default=[], metavar="ID=JSON", help="more overrides, e.g. dataset_dir=...")
    ap.add_argument("--quantiles", nargs="*", type=float, default=[0.95, 0.99, 0.999, 0.9999, 1.0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    presets = [str(CONFIGS / p) for p in args.presets]
    t0 = time.perf_counter()
    val = _maps([str(CONFIGS / "train.json"), *presets], overrides, args.ckpt)
    test = _maps([str(CONFIGS / "train.json"), *presets, str(CONFIGS / "evaluate.json")], overrides, args.ckpt)
    healthy = [o for o in val if o["label"] == 0]
    calib = calibrate_thresholds([o["score"] for o in val], [o["label"] for o in val], [o["map"] for o in healthy])
    labels = {}
    for name in ("image_threshold_specificity", "image_threshold_f1"):
        t = calib[name]
        if t is None:
            continue
        h = [o["score"] > t for o in test if o["label"] == 0]
        d = [o["score"] > t for o in test if o["label"] == 1]
        labels[name] = {
            "threshold": t,
            "test_specificity": 1 - float(np.mean(h)) if h else None,
            "test_sensitivity": float(np.mean(d)) if d else None,
        }
    pixels = []
    for q in args.quantiles:
        for rule, values in (
            ("pooled", [o["map"].ravel() for o in healthy]),
            ("image_max", [np.array([o["map"].max()]) for o in healthy]),
        ):
            t = quantile_threshold(np.concatenate(values), q)
            pixels.append(
                {"rule": rule, "quantile": q, "pixel_threshold": t, **_rates(test, lambda o, t=t: o["map"] > t)}
            )
    result = {
        "checkpoint": str(args.ckpt),
        "presets": args.presets,
        "overrides": overrides,
        "n_val": {"healthy": calib["n_healthy"], "diseased": calib["n_diseased"]},
        "n_test": {"healthy": sum(o["label"] == 0 for o in test), "diseased": sum(o["label"] == 1 for o in test)},
        "calibration": calib,
        "labels_on_test": labels,
        "pixel_rules_on_test": pixels,
        "relative_masks_on_test": {"tau": 0.2, **_rates(test, lambda o: o["relative"])},
        "seconds": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from scripts.utils import atomic_write

        atomic_write(args.out, text + "\n")


if __name__ == "__main__":
    main()
