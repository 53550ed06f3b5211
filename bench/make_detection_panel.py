#!/usr/bin/env python
"""Figure: validation radiographs with their reconstruction, anomaly map and score.

Every image of a datalist section (default ``validation``) is scored by a trained checkpoint
with the bundle's own preprocessing (``validate#preprocessing`` of ``train.json`` + presets),
network (``network_def``, EMA weights ``model``) and map options (``score_map_mode``,
``score_map_sigma``); then ``--per-class`` images of each label are drawn, picked at evenly
spaced ranks of their class's scores (lowest to highest), so the panel shows typical images and
both tails rather than chosen successes. One row per image:

    input | reconstruction | |x - r| after the map's smoothing (one colour scale for the whole
    panel: 0 to the 0.999 quantile of the drawn rows) | that map over the input

with the label, the score, its rank among all images and, when the checkpoint holds decision
thresholds (``thresholds``) calibrated on the same map options, the decision at the
specificity threshold. Written atomically.

Example (a ZhangLab ``cpu.json`` run of ``bench/bench_zhanglab.py``)::

    python bench/make_detection_panel.py --ckpt <work>/final_seed0/models/model_final.pt \\
        --datalist <work>/datalist.json --out bundle/docs/images/zhanglab_val_panel.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(REPO / "bundle"))
sys.path.insert(0, str(REPO / "transforms"))

from artasyn.scoring import SmoothedInputInferer, anomaly_map, image_score  # noqa: E402
from scripts.thresholds import saved_option  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402


def heat(x: np.ndarray) -> np.ndarray:
    """``H x W`` in [0, 1] -> ``H x W x 3`` black-red-yellow-white."""
    x = np.clip(x, 0.0, 1.0)
    return np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], axis=-1)


def pick_ranks(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``0..n-1`` (both ends included).

    >>> pick_ranks(100, 3), pick_ranks(2, 3)
    ([0, 50, 99], [0, 1])
    """
    if n <= k:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / (k - 1))) for i in range(k)}) if k > 1 else [n // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--datalist", type=Path, help="datalist JSON (else --dataset-dir)")
    ap.add_argument("--dataset-dir", type=Path, help="root with val/healthy, val/diseased")
    ap.add_argument("--section", default="validation")
    ap.add_argument("--presets", nargs="*", default=["cpu.json"])
    ap.add_argument("--per-class", type=int, default=3)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/artasyn_panel_cache"))
    ap.add_argument("--out", type=Path, default=REPO / "bundle" / "docs" / "images" / "zhanglab_val_panel.png")
    ap.add_argument("--title", default="")
    ap.add_argument("--zoom", type=int, default=2, help="tile magnification (nearest)")
    args = ap.parse_args(argv)

    from monai.bundle import ConfigParser

    from scripts.checkpoint import load_checkpoint

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json")] + [str(CONFIGS / p) for p in args.presets])
    parser["bundle_root"] = str(REPO / "bundle")
    parser["cache_dir"] = str(args.cache_dir)
    parser["num_workers"] = 0
    if args.datalist:
        parser["datalist_file"] = str(args.datalist)
    elif args.dataset_dir:
        parser["dataset_dir"] = str(args.dataset_dir)
    else:
        ap.error("--datalist or --dataset-dir")
    parser["validate#datalist#section"] = args.section
    net = parser.get_parsed_content("network_def").eval()
    ckpt = load_checkpoint(args.ckpt, keys=("model",))
    net.load_state_dict(ckpt["model"])
    thresholds = ckpt.get("thresholds") or {}
    mode, sigma = parser.get_parsed_content("score_map_mode"), float(parser.get_parsed_content("score_map_sigma"))
    input_sigma = float(parser.get_parsed_content("score_input_sigma"))
    intensity = float(parser.get_parsed_content("score_map_intensity"))
    inferer = SmoothedInputInferer(input_sigma)
    options = ("score_map_mode", "score_map_sigma", "score_map_intensity", "score_input_sigma")
    same_map = tuple(saved_option(thresholds, k) for k in options) == (mode, sigma, intensity, input_sigma)
    t_image = thresholds.get("image_threshold_specificity") if same_map else None  # else: another score scale
    if thresholds and not same_map:
        print(f"thresholds of {args.ckpt} were calibrated on another map: no decision drawn", file=sys.stderr)
    dataset = parser.get_parsed_content("validate#dataset")

    items = []
    with torch.no_grad():
        for i in range(len(dataset)):
            d = dataset[i]
            x = torch.as_tensor(d["image"]).float()[None]
            r = inferer(x, net).clamp(0, 1)
            m = anomaly_map(x[0], r[0], mode, sigma, intensity)
            items.append(
                {
                    "image": x[0, 0].numpy(),
                    "recon": r[0, 0].numpy(),
                    "map": m[0].numpy(),
                    "score": float(image_score(m)[0]),
                    "label": int(np.asarray(d.get("label", -1)).reshape(-1)[0]),
                    "name": Path(str(d.get("image_path", i))).name,
                }
            )
    order = np.argsort([-it["score"] for it in items], kind="stable")
    rank = {int(j): k + 1 for k, j in enumerate(order)}
    rows = []
    for label in (0, 1):
        cls = sorted((j for j, it in enumerate(items) if it["label"] == label), key=lambda j: items[j]["score"])
        rows += [cls[k] for k in pick_ranks(len(cls), args.per_class)]
    if not rows:
        raise SystemExit(f"no labelled images in section {args.section!r}")
    vmax = float(np.quantile(np.concatenate([items[j]["map"].ravel() for j in rows]), 0.999)) or 1.0

    h, w = (args.zoom * n for n in items[rows[0]]["image"].shape)
    text_h, pad = 30, 4
    canvas = Image.new("RGB", (4 * w + 5 * pad, len(rows) * (h + text_h + pad) + pad + 20), "white")
    draw = ImageDraw.Draw(canvas)
    title = f"{args.ckpt.name}: map {mode}, sigma {sigma}; |x - r| colour scale 0..{vmax**0.5:.3f}"
    draw.text((pad, 4), args.title or title, fill="black")
    for r_i, j in enumerate(rows):
        it = items[j]
        gray = np.repeat(np.clip(it["image"], 0, 1)[..., None], 3, axis=-1)
        rec = np.repeat(np.clip(it["recon"], 0, 1)[..., None], 3, axis=-1)
        level = np.sqrt(np.clip(it["map"] / vmax, 0, 1))  # |x - r|, the error's own scale
        hm = heat(level)
        alpha = level[..., None] * 0.8
        over = gray * (1 - alpha) + hm * alpha
        y = 20 + pad + r_i * (h + text_h + pad)
        for c_i, tile in enumerate((gray, rec, hm, over)):
            tile = Image.fromarray((tile * 255).astype(np.uint8)).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (pad + c_i * (w + pad), y))
        verdict = ""
        if t_image is not None:
            verdict = f" -> {'abnormal' if it['score'] > t_image else 'normal'} (t={t_image:.5f})"
        name = {0: "normal", 1: "pneumonia"}.get(it["label"], "?")
        draw.text(
            (pad, y + h + 2),
            f"{name} {it['name'][:28]}  score {it['score']:.5f}  rank {rank[j]}/{len(items)}{verdict}",
            fill="black",
        )
    atomic_write(args.out, lambda f: canvas.save(f, format="PNG"))
    summary = {"out": str(args.out), "rows": [{k: items[j][k] for k in ("name", "label", "score")} for j in rows]}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
