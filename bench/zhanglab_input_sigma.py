#!/usr/bin/env python
"""The image score of trained ZhangLab checkpoints as the network's input is smoothed (``score_input_sigma``).

For each checkpoint and each ``sigma``: the bundle's image score (the mean of the preset's map,
``score_map_mode`` / ``score_map_sigma``, the image as given against the reconstruction of the
image smoothed by a Gaussian of ``sigma`` pixels, :class:`artasyn.scoring.SmoothedInputInferer`)
on ``zhanglab_test_dev`` (where the choice is made) and ``zhanglab_val`` (reported beside); AUC
and AP (``trivial_baselines``' rank statistics, as ``run evaluating`` reports them). The images
are read once per working size with the bundle's own preprocessing
(``zhanglab_rescore._arrays``), so a checkpoint costs one reconstruction per image and sigma.

A checkpoint is given as ``PATH`` or ``PATH:SIZE`` (its working size when it is not the
preset's, e.g. ``.../px96/final_seed0/models/model_final.pt:96``); ``--scale-sigma`` then
gives it ``sigma * SIZE / 128`` (the same smoothing relative to the image).

Usage::

    python bench/zhanglab_input_sigma.py --sigmas 0 1 1.5 2 \\
        --ckpt /work/zl/it1600/final_seed0/models/model_final.pt \\
        --out bench/results/zhanglab_input_sigma.json

Written atomically as JSON (after every checkpoint), with a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO / "bundle") not in sys.path:
    sys.path.insert(0, str(REPO / "bundle"))

from bench_zeroshot import bundle_parser, load_network  # noqa: E402
from trivial_baselines import auc, average_precision  # noqa: E402
from zhanglab_rescore import _arrays, _items, _maps, _recon  # noqa: E402

from scripts.utils import atomic_write  # noqa: E402


def _ckpt_and_size(spec: str) -> tuple[Path, int | None]:
    path, _, size = spec.rpartition(":")
    if path and size.isdigit():
        return Path(path), int(size)
    return Path(spec), None


def table(result: dict) -> str:
    sigmas = result["sigmas"]
    head = "| checkpoint | " + " | ".join(f"sigma {s:g}: test_dev AUC / AP (val AUC)" for s in sigmas) + " |"
    lines = [head, "|---" * (len(sigmas) + 1) + "|"]
    for name, row in result["checkpoints"].items():
        cells = []
        for s in sigmas:
            r = row["by_sigma"][f"{s:g}"]
            cells.append(f"{r['test_dev']['auc']:.3f} / {r['test_dev']['ap']:.3f} ({r['val']['auc']:.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", nargs="+", required=True, help="PATH or PATH:SIZE (working size, if not the preset's)")
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.0, 1.0, 1.5, 2.0])
    ap.add_argument("--scale-sigma", action="store_true", help="sigma * SIZE / 128 for a checkpoint of another size")
    ap.add_argument("--presets", nargs="*", default=["cpu.json"], help="bundle/configs files after train.json")
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    items = {k: v for k, v in _items(args.data_root, 1).items() if k != "ref"}
    result = {
        "what": "image score (mean of the preset's map) with the network's input smoothed by sigma pixels",
        "command": " ".join(["python", "bench/zhanglab_input_sigma.py", *(sys.argv[1:] if argv is None else argv)]),
        "presets": args.presets,
        "sigmas": args.sigmas,
        "n": {k: len(v) for k, v in items.items()},
        "checkpoints": {},
    }
    arrays: dict[int, dict] = {}
    for spec in args.ckpt:
        ckpt, size = _ckpt_and_size(spec)
        overrides = {} if size is None else {"spatial_size": [size, size]}
        parser = bundle_parser([CONFIGS / "train.json", *(CONFIGS / p for p in args.presets)], overrides)
        working = int(parser.get_parsed_content("spatial_size")[0])
        mode, sigma = parser.get_parsed_content("score_map_mode"), float(parser.get_parsed_content("score_map_sigma"))
        if working not in arrays:
            arrays[working] = {k: _arrays(v, parser) for k, v in items.items()}
        net = load_network(parser, ckpt)
        t0 = time.perf_counter()
        row = {"working_size": working, "by_sigma": {}}
        for s in args.sigmas:
            used = s * working / 128 if args.scale_sigma else s
            row["by_sigma"][f"{s:g}"] = {"input_sigma_px": used}
            for k, a in arrays[working].items():
                score = _maps(a["image"], _recon(net, a["image"], input_sigma=used), mode, sigma).mean(axis=(1, 2))
                row["by_sigma"][f"{s:g}"][k] = {
                    "auc": round(auc(score, a["label"]), 4),
                    "ap": round(average_precision(score, a["label"]), 4),
                }
        row["seconds"] = round(time.perf_counter() - t0, 1)
        name = "/".join(ckpt.parts[-4:-2]) if len(ckpt.parts) >= 4 else str(ckpt)
        result["checkpoints"][name] = {"ckpt": str(ckpt), **row}
        result["table_markdown"] = table(result)
        atomic_write(args.out, json.dumps(result, indent=2))
        print(table({"sigmas": args.sigmas, "checkpoints": {name: row}}).splitlines()[-1], flush=True)
    print(result["table_markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
