#!/usr/bin/env python
"""Benchmark: what the decision thresholds of a trained checkpoint do on its held-apart test images.

The thresholds are calibrated on the validation half (``train.json``'s ``validate#dataset``)
with :func:`artasyn.scoring.thresholds.calibrate_thresholds`, as the training's
:class:`scripts.thresholds.ThresholdCalibrator` does, and applied to the test half
(``evaluate.json``'s) with :func:`artasyn.scoring.absolute_mask`, as
:class:`artasyn.scoring.thresholds.AnomalyDecisiond` does. The pixel threshold is swept over

- the rule: ``pooled`` (the quantile ``q`` of all the healthy validation map values: at most
  ``1 - q`` of the healthy pixels masked) or ``image_max`` (the quantile ``q`` of each healthy
  validation image's largest value still masked: at most ``1 - q`` of the healthy images with a
  non-empty mask);
- the quantile ``q``;
- ``min_mask_px``: masks drop their 8-connected components of fewer map pixels (0: none).

Per setting: the pixel threshold, the share of healthy validation images left with a mask,
and on the test half the share of healthy images with a non-empty mask
(``healthy_mask_rate``), the masked share of their pixels, the share of diseased images with
one, and the micro Dice of the masks on the diseased images with a lesion mask (``null``
without any; the relative masks of the first tau are given for comparison); and the image
labels' sensitivity / specificity at the specificity and F1 thresholds. The network runs once
per image. When the validation and test sets are the same files (a datalist whose
``validation`` and ``test`` are one set), the result says so (``same_images``: calibrated and
measured on the same images, so the healthy rates there are the calibration's own) and adds a
held-out estimate, ``two_fold``: calibrated on every other image, measured on the others, both
ways. Nothing is written but ``--out`` (atomically); pass ``--set cache_dir=...`` to keep the
lung cache and phantoms out of the tree.

Examples (the small preset's checkpoint on the embedded phantoms; a ``cpu.json`` checkpoint
trained by ``bench/bench_zhanglab.py``, validated and tested on ``zhanglab_val``)::

    python bench/bench_thresholds.py --ckpt /tmp/run/models/model.pt --presets small.json \\
        --set 'cache_dir="/tmp/run/cache"' --out bench/results/thresholds_small.json
    python bench/bench_thresholds.py --ckpt <work>/final_seed0/models/model_final.pt --presets cpu.json \\
        --set 'cache_dir="/tmp/zl_cache"' 'datalist_file="<work>/datalist.json"' \\
        --out bench/results/thresholds_zhanglab.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(REPO / "bundle"))

QUANTILES = (0.9, 0.95, 0.99, 0.999, 0.9999, 1.0)
MIN_MASK_PX = (0, 8, 16, 32, 64, 128)


def _parser(config_files: list[str], overrides: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _files(parser) -> list[str]:
    return [str(d["image"]) for d in parser.get_parsed_content("validate#datalist")]


def _maps(parser, ckpt: Path) -> list[dict]:
    """Score, label, anomaly map (``H x W``), lungs (with ``mask_in_lungs``) and lesion mask of every item."""
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    net.eval()
    scoring = parser.get_parsed_content("validate#scoring")
    inferer = parser.get_parsed_content("validate#inferer")  # the network's input as the evaluator gives it
    in_lungs = bool(parser.get_parsed_content("mask_in_lungs"))
    out = []
    for item in parser.get_parsed_content("validate#dataset"):
        with torch.no_grad():
            item["pred"] = inferer(torch.as_tensor(item["image"])[None].float(), net)[0]
        d = scoring(item)
        amap = torch.as_tensor(d["anomaly_map"])
        out.append(
            {
                "score": float(d["score"][0]),
                "label": int(float(torch.as_tensor(d["label"]).reshape(-1)[0]) > 0.5),
                "map": amap.reshape(-1, *amap.shape[-2:]).amax(0),
                "lung": torch.as_tensor(d["lung"]) if in_lungs else None,
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


def _labels(calib: dict, test: list[dict]) -> dict:
    """Sensitivity / specificity of the image labels at the specificity and F1 thresholds."""
    out = {}
    for name in ("image_threshold_specificity", "image_threshold_f1"):
        t = calib[name]
        if t is None:
            continue
        h = [o["score"] > t for o in test if o["label"] == 0]
        d = [o["score"] > t for o in test if o["label"] == 1]
        out[name] = {
            "threshold": t,
            "test_specificity": 1 - float(np.mean(h)) if h else None,
            "test_sensitivity": float(np.mean(d)) if d else None,
        }
    return out


def _calibrate(items: list[dict], **setting) -> dict:
    """:func:`artasyn.scoring.thresholds.calibrate_thresholds` of ``items`` (the bundle's defaults, or ``setting``)."""
    from artasyn.scoring.thresholds import calibrate_thresholds

    healthy = [o for o in items if o["label"] == 0]
    return calibrate_thresholds(
        [o["score"] for o in items],
        [o["label"] for o in items],
        [o["map"] for o in healthy],
        healthy_lungs=[o["lung"] for o in healthy],
        **setting,
    )


def _masks(calib: dict):
    """The absolute mask of an item under ``calib`` (as :class:`artasyn.AnomalyDecisiond` draws it)."""
    from artasyn.scoring import absolute_mask

    t, min_px = calib["pixel_threshold"], calib["min_mask_px"]
    return lambda o: absolute_mask(o["map"], t, o["lung"], min_px)[0].numpy() > 0.5


def _two_fold(items: list[dict], measure, setting: dict) -> dict:
    """``measure(calib, fold)`` held out: calibrated on every other item, measured on the rest, both ways.

    For a set that is both validation and test: each image is measured once, by thresholds
    that did not see it. The rates are averaged over the two folds, weighted by their sizes
    (the rates' own denominators: healthy images for specificity and healthy mask rate,
    diseased ones for the others).
    """
    folds = [items[0::2], items[1::2]]
    results = [measure(_calibrate(folds[k], **setting), folds[1 - k]) for k in (0, 1)]
    n = [{c: sum(o["label"] == c for o in f) for c in (0, 1)} for f in (folds[1], folds[0])]

    def merge(a, b, key: str, na: dict, nb: dict):
        if a is None or b is None:
            return None
        if isinstance(a, dict):
            return {k: merge(a[k], b.get(k), k, na, nb) for k in a if k != "threshold"}
        c = 0 if ("healthy" in key or "specificity" in key) else 1
        return (a * na[c] + b * nb[c]) / (na[c] + nb[c]) if na[c] + nb[c] else None

    out = merge(results[0], results[1], "", n[0], n[1])
    return {k: v for k, v in out.items() if k != "micro_dice"}


def _fmt(v) -> str:
    return "  n/a" if v is None else f"{v:5.3f}"


def main() -> None:
    from artasyn import constants as C
    from artasyn.scoring.thresholds import PIXEL_RULES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True, type=Path)
    ap.add_argument("--presets", nargs="*", default=[], help="preset files in bundle/configs (e.g. small.json)")
    ap.add_argument("--set", nargs="*", default=[], metavar="ID=JSON", help="more overrides, e.g. dataset_dir=...")
    ap.add_argument("--quantiles", nargs="*", type=float, default=list(QUANTILES))
    ap.add_argument("--min-mask-px", nargs="*", type=int, default=list(MIN_MASK_PX))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError as e:
            ap.error(f"--set {item!r}: the value of {key!r} must be JSON (a string in double quotes): {e}")
    presets = [str(CONFIGS / p) for p in args.presets]
    t0 = time.perf_counter()
    val_parser = _parser([str(CONFIGS / "train.json"), *presets], overrides)
    test_parser = _parser([str(CONFIGS / "train.json"), *presets, str(CONFIGS / "evaluate.json")], overrides)
    same = _files(val_parser) == _files(test_parser)
    val = _maps(val_parser, args.ckpt)
    test = val if same else _maps(test_parser, args.ckpt)
    t_maps = time.perf_counter() - t0
    defaults = _calibrate(val)  # the bundle's defaults
    pixels = []
    for rule, q, min_px in itertools.product(PIXEL_RULES, args.quantiles, args.min_mask_px):
        setting = {"pixel_quantile": q, "pixel_rule": rule, "min_mask_px": min_px}
        calib = _calibrate(val, **setting)
        row = {"rule": rule, "quantile": q, "min_mask_px": min_px, "pixel_threshold": calib["pixel_threshold"]}
        row.update(val_healthy_mask_rate=calib["val_healthy_mask_rate"], **_rates(test, _masks(calib)))
        if same:
            row["two_fold"] = _two_fold(val, lambda calib, fold: _rates(fold, _masks(calib)), setting)
        pixels.append(row)
    result = {
        "checkpoint": str(args.ckpt),
        "presets": args.presets,
        "overrides": overrides,
        "same_images": same,
        "note": (
            "validation and test are the same images: the thresholds are calibrated and measured on them"
            if same
            else "thresholds calibrated on the validation half, measured on the test half"
        ),
        "n_val": {"healthy": defaults["n_healthy"], "diseased": defaults["n_diseased"]},
        "n_test": {"healthy": sum(o["label"] == 0 for o in test), "diseased": sum(o["label"] == 1 for o in test)},
        "n_test_with_lesion_mask": sum(o["gt"] is not None for o in test),
        "defaults": {
            "pixel_rule": C.DEFAULT_PIXEL_RULE,
            "pixel_quantile": C.DEFAULT_PIXEL_QUANTILE,
            "min_mask_area_fraction": C.MIN_MASK_AREA_FRACTION,
            "min_mask_px": defaults["min_mask_px"],
        },
        "calibration": defaults,
        "labels_on_test": _labels(defaults, test),
        "labels_two_fold": _two_fold(val, _labels, {}) if same else None,
        "pixel_rules_on_test": pixels,
        "relative_masks_on_test": {"tau": 0.2, **_rates(test, lambda o: o["relative"])},
        "seconds": {"maps": round(t_maps, 1), "total": round(time.perf_counter() - t0, 1)},
        "date": time.strftime("%Y-%m-%d"),
    }
    print(
        "rule       q       min_px  threshold  val_hmr  healthy_mr  diseased_mr  dice   2-fold healthy_mr diseased_mr"
    )
    for r in pixels:
        fold = r.get("two_fold") or {}
        print(
            f"{r['rule']:<10} {r['quantile']:<7g} {r['min_mask_px']:>6}  {r['pixel_threshold']:9.4g}  "
            f"{_fmt(r['val_healthy_mask_rate'])}    {_fmt(r['healthy_mask_rate'])}       "
            f"{_fmt(r['diseased_mask_rate'])}      {_fmt(r['micro_dice'])}  "
            f"{_fmt(fold.get('healthy_mask_rate'))}             {_fmt(fold.get('diseased_mask_rate'))}"
        )
    keys = ("same_images", "n_val", "n_test", "labels_on_test", "labels_two_fold")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    if args.out:
        from scripts.utils import atomic_write

        atomic_write(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
