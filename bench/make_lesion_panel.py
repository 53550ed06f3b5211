#!/usr/bin/env python
"""Figure: test COVID radiographs with their lesion mask, heat map and saved mask; held-apart healthy ones.

The data, configs and evaluation are those of ``bench/bench_zeroshot.py`` (its datalist, its
``--preset`` and ``--config`` files, the bundle's preprocessing, network and map options). The
masks are drawn as the bundle saves them (:class:`artasyn.scoring.thresholds.AnomalyDecisiond`):
with ``--thresholds monitor`` (default) under the thresholds the preset's ``threshold_*``
settings give on the monitor set (:func:`bench_zeroshot.monitor_thresholds`, what a training with
those settings saves), with ``--thresholds checkpoint`` under the checkpoint's saved ones.
``--n-covid`` test COVID images and ``--n-healthy`` held-apart healthy ones are picked at evenly
spaced ranks of the image score (lowest to highest), not chosen. One row per image:

    input | ground-truth lesion (red) | anomaly map over the input (one colour scale for the
    panel) | saved mask (green; the lesion outline in red)

with the image's name, its score, whether it passes the mask gate, and its Dice. Written
atomically.

Example (the ``cpu.json`` zero-shot checkpoint, the lesion settings)::

    python bench/make_lesion_panel.py --ckpt <work>/models/model_final.pt \\
        --config bundle/configs/lesions.json --out bundle/docs/images/lesions_panel.png
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_zeroshot as bz  # noqa: E402
from make_detection_panel import heat, pick_ranks  # noqa: E402

from scripts.figures import titled_grid  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(img, 0, 1)[..., None], 3, axis=2)


def _overlay(img: np.ndarray, mask: np.ndarray, colour, alpha: float = 0.45) -> np.ndarray:
    out = _rgb(img)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return out


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def display_level(anomaly_map: np.ndarray, mode: str) -> np.ndarray:
    """What the panel colours: a squared map (``squared``, ``positive``) as its square root, the
    error's own scale; a ``signed`` map as it is, its negative values (darker than the
    reconstruction and not bright enough to make up for it) at 0."""
    if mode == "signed":
        return np.clip(anomaly_map, 0.0, None)
    return np.sqrt(np.clip(anomaly_map, 0.0, None))


def _tile(rgb: np.ndarray, zoom: int) -> Image.Image:
    im = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    return im.resize((im.width * zoom, im.height * zoom), Image.NEAREST) if zoom > 1 else im


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument(
        "--data-root",
        type=Path,
        default=Path(os.environ.get("ARTASYN_SHARED_DATA", bz.REPO.parent / "shared" / "data")),
    )
    ap.add_argument("--preset", choices=["cpu", "small", "paper"], default="cpu")
    ap.add_argument("--config", action="append", default=[], type=Path, help="further config files (lesions.json)")
    ap.add_argument("--n-monitor", type=int, default=24)
    ap.add_argument("--n-healthy-test", type=int, default=60)
    ap.add_argument("--n-monitor-healthy", type=int, default=None, help="as bench_zeroshot.py's")
    ap.add_argument("--thresholds", choices=["monitor", "checkpoint"], default="monitor")
    ap.add_argument("--n-covid", type=int, default=4)
    ap.add_argument("--n-healthy", type=int, default=3)
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--out", type=Path, default=bz.REPO / "bundle" / "docs" / "images" / "lesions_panel.png")
    args = ap.parse_args(argv)

    configs = [bz.CONFIGS / "train.json"] + ([] if args.preset == "paper" else [bz.CONFIGS / f"{args.preset}.json"])
    configs += [c if c.is_absolute() else bz.REPO / c for c in args.config]
    parser = bz.bundle_parser(configs)
    settings = bz.preset_settings(parser)
    datalist = bz.build_zeroshot_datalist(
        args.data_root, args.n_monitor, False, args.n_healthy_test, args.n_monitor_healthy
    )
    net = bz.load_network(parser, args.ckpt, "cpu")

    if args.thresholds == "checkpoint":
        decision = bz._decision_of_checkpoint(args.ckpt, settings)
        if decision["pixel_threshold"] is None:
            raise SystemExit(f"{args.ckpt}: its pixel threshold is not applied to these settings: {decision['notes']}")
        gate, source = decision["mask_gate_threshold"], "the checkpoint's thresholds"
    else:
        mon_items = [
            {**it, "mask": it.get("mask", ""), "lung_mask": it.get("mask", "").replace("/masks/", "/masks_lung/")}
            for it in datalist["validation"]
        ]
        mon = bz.load_test_arrays(mon_items, parser)
        labels = np.array([float(it["label"]) for it in datalist["validation"]])
        mon_recon = bz.reconstruct(net, mon["image"], input_sigma=settings["score_input_sigma"])
        t = bz.monitor_thresholds(mon, mon_recon, labels, settings)
        gate = t["image_threshold_specificity"] if t["mask_gate"] == "image" else None
        decision = {**t, "mask_gate_threshold": gate}
        source = f"rule {t['pixel_rule']}, gate {t['mask_gate']}, calibrated on the monitor set"

    rows, titles = [], []
    groups = [("COVID", datalist["test"], args.n_covid)]
    healthy_items = [{"image": it["image"], "mask": "", "lung_mask": ""} for it in datalist["healthy_test"]]
    groups.append(("healthy (held apart)", healthy_items, args.n_healthy))
    drawn = []
    for kind, items, k in groups:
        arrays = bz.load_test_arrays(items, parser)
        recon = bz.reconstruct(net, arrays["image"], input_sigma=settings["score_input_sigma"])
        maps, scores = bz.bundle_maps(arrays, recon, settings)
        masks = bz.saved_masks(arrays, recon, settings, decision)
        order = np.argsort(scores)
        for i in (order[r] for r in pick_ranks(len(order), k)):
            drawn.append((kind, arrays, maps, scores, masks, i))
    level = partial(display_level, mode=settings["score_map_mode"])
    scale = float(np.quantile(np.concatenate([level(d[2][d[5]]).ravel() for d in drawn]), 0.999)) or 1.0
    for kind, arrays, maps, scores, masks, i in drawn:
        img, gt, m = arrays["image"][i], arrays["infection"][i], masks[i]
        hm = 0.5 * _rgb(img) + 0.5 * heat(level(maps[i]) / scale)
        saved = _overlay(img, m, (0.2, 1.0, 0.2))
        saved[_outline(gt)] = (1.0, 0.2, 0.2)
        passes = "n/a" if gate is None else ("passes" if scores[i] > gate else "below")
        dice = bz.dice_from_counts(bz.dice_counts(m, gt))
        name = Path(arrays["paths"][i]).name
        titles.append(
            f"{kind}: {name}, score {scores[i]:.3g} (gate {passes}), mask {int(m.sum())} px"
            + ("" if np.isnan(dice) else f", Dice {dice:.2f}")
        )
        rows.append([_tile(t, args.zoom) for t in (_rgb(img), _overlay(img, gt, (1.0, 0.2, 0.2)), hm, saved)])
    columns = [
        "input",
        "ground-truth lesion",
        f"anomaly map ({settings['score_map_mode']}, sigma {settings['score_map_sigma']:g})",
        f"saved mask ({source})",
    ]
    panel = titled_grid(rows, titles, columns)
    atomic_write(args.out, lambda f: panel.save(f, format="PNG"))
    print(f"panel: {args.out} ({len(rows)} rows; masks: {source})")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
