#!/usr/bin/env python
"""How strong are the synthetic opacities a preset trains on? One synthesis setting against others, same draws.

Runs the training pipeline of a bundle preset up to the synthesis (loading, the lung crop, resize,
PBTSeg, the percentile stretch) on real images, then the preset's synthesis transform
(``train#preprocessing_synthesis#0``) once per value of one setting, each value with the same
random state per image, so the strokes are the same and only the setting differs. Per painted
twin it measures, on the 0-255 scale the network's input is made from:

- the mean absolute change inside the anomaly mask, and inside the lung map;
- the mask's area as a share of the lung map (the mask the loss and Dice are trained on);
- how many painted twins end with an empty mask.

With ``--real-lesions N`` it also measures what real opacities look like on the same input: on
N ``covidquex_covid_infection`` test images of ``bench/bench_zeroshot.py`` (evenly spread), the
mean of the lesion minus the mean of the rest of the ground-truth lung, and the lesion's share of
that lung (images whose lesion or remaining lung has under 20 pixels are left out).

Usage (T_rib's brightness, 1.5 in the paper, against 0.75; the lesion preset's brush colour, the
image's 85th percentile against its 65th, beside real COVID lesions)::

    python bench/synthesis_strength.py --images ../shared/data/zhanglab_train_normal --n 48 \\
        --compare 'train#preprocessing_synthesis#0#brightness' 1.5 0.75 \\
        --out bench/results/synthesis_strength_brightness.json

    python bench/synthesis_strength.py --images ../shared/data/covidquex_normal_lung/images --n 48 \\
        --preset cpu lesions --compare 'train#preprocessing_synthesis#0#colour_percentile' 85 65 \\
        --real-lesions 96 --out bench/results/synthesis_strength_lesions.json

Medians and quartiles over the twins, as JSON (written atomically) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))
sys.path.insert(0, str(REPO / "bench"))
import bench_zeroshot as bz  # noqa: E402
from monai.transforms import Compose  # noqa: E402

from scripts.utils import atomic_write  # noqa: E402

CONFIGS = REPO / "bundle" / "configs"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
MEASURES = ("change_in_mask", "change_in_lung", "mask_share_of_lung")


def parser_for(presets: list[str], overrides: dict):
    """``train.json``, then each of ``presets`` (``paper``: none), then ``overrides``."""
    files = [CONFIGS / "train.json"] + [CONFIGS / f"{p}.json" for p in presets if p != "paper"]
    return bz.bundle_parser(files, overrides)


def twin_measures(twin: dict, lung: torch.Tensor) -> dict | None:
    """The measures of one synthesis output (``None`` for a healthy twin: nothing painted)."""
    if float(torch.as_tensor(twin["anomaly_label"]).max()) == 0:
        return None
    x, y, m = (torch.as_tensor(twin[k]).float().squeeze() for k in ("image", "target", "anomaly_mask"))
    change, mask = (x - y).abs(), m > 0
    return {
        "change_in_mask": float(change[mask].mean()) if mask.any() else None,
        "change_in_lung": float(change[lung].mean()) if lung.any() else None,
        "mask_share_of_lung": float(mask.sum() / max(int(lung.sum()), 1)),
        "empty_mask": not bool(mask.any()),
    }


def quartiles(values) -> dict | None:
    """Median and quartiles (``None`` for no values)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return None
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75)}


def summary(rows: list[dict]) -> dict:
    out = {"n_painted_twins": len(rows), "empty_masks": sum(r["empty_mask"] for r in rows)}
    for k in MEASURES:
        out[k] = quartiles([r[k] for r in rows if r[k] is not None])
    return out


def measure(items: list[dict], presets: list[str], overrides: dict, key: str, values: list, seed: int) -> dict:
    """Synthesis of ``items`` (preprocessed up to the lungs) at each value of ``key``, same draws per image."""
    out = {}
    for value in values:
        synth = parser_for(presets, {**overrides, key: value}).get_parsed_content("train#preprocessing_synthesis#0")
        rows = []
        for i, item in enumerate(items):
            synth.set_random_state(seed + i)
            twins = synth({k: (v.clone() if torch.is_tensor(v) else v) for k, v in item.items()})
            lung = torch.as_tensor(item["lung"]).squeeze() > 0
            rows += [r for t in (twins if isinstance(twins, list) else [twins]) if (r := twin_measures(t, lung))]
        out[json.dumps(value)] = summary(rows)
    return out


def lesion_contrast(arrays: dict, min_px: int = 20) -> dict:
    """Real lesions on the network's input: lesion mean minus the rest of the GT lung (0-255), and share of the lung.

    ``arrays``: :func:`bench_zeroshot.load_test_arrays` (``image`` in [0, 1], ``infection``, ``lung_gt``)."""
    contrast, share = [], []
    for img, lesion, lung in zip(arrays["image"], arrays["infection"], arrays["lung_gt"]):
        lesion = lesion & lung
        rest = lung & ~lesion
        if lesion.sum() >= min_px and rest.sum() >= min_px:
            contrast.append(255.0 * (float(img[lesion].mean()) - float(img[rest].mean())))
            share.append(float(lesion.sum() / lung.sum()))
    if not contrast:
        return {"n_images": 0}
    return {
        "n_images": len(contrast),
        "lesion_minus_rest_of_lung": quartiles(contrast),
        "lesion_share_of_lung": quartiles(share),
    }


def _cell(q: dict | None) -> str:
    return "n/a" if q is None else f"{q['median']:.3g} ({q['q25']:.3g}-{q['q75']:.3g})"


def table(result: dict) -> str:
    lines = [
        f"| {result['compare']} | painted twins | empty masks | change in mask | change in lung | mask / lung |",
        "|---|---|---|---|---|---|",
    ]
    for value, s in result["values"].items():
        cells = [_cell(s[k]) for k in MEASURES]
        lines.append(f"| {value} | {s['n_painted_twins']} | {s['empty_masks']} | " + " | ".join(cells) + " |")
    real = result.get("real_lesions")
    if real and real.get("n_images"):
        c, s = _cell(real["lesion_minus_rest_of_lung"]), _cell(real["lesion_share_of_lung"])
        lines.append(
            f"| real COVID lesions (lesion minus the rest of the lung) | {real['n_images']} images | | {c} | | {s} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="a folder of healthy radiographs")
    ap.add_argument("--n", type=int, default=24, help="images, spread evenly over the sorted folder")
    ap.add_argument(
        "--preset",
        nargs="+",
        default=["cpu"],
        help="bundle/configs/<preset>.json after train.json, in order ('paper': none)",
    )
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "JSON"), help="extra override")
    ap.add_argument("--compare", nargs="+", required=True, metavar="ID_THEN_JSON_VALUES")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--real-lesions", type=int, default=0, metavar="N", help="also measure N real COVID lesions")
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if len(args.compare) < 2:
        ap.error("--compare needs a config id and at least one value")
    key, values = args.compare[0], [json.loads(v) for v in args.compare[1:]]
    overrides = {k: json.loads(v) for k, v in args.set}

    files = sorted(f for f in args.images.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {args.images}")
    files = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(args.n, len(files)))]
    p = parser_for(args.preset, overrides)
    pre = Compose(p.get_parsed_content("load_transforms") + p.get_parsed_content("train#preprocessing_lungs"))
    items = [pre({"image": str(f)}) for f in files]

    result = {
        "preset": args.preset,
        "overrides": overrides,
        "compare": key,
        "images": [str(f) for f in files],
        "seed": args.seed,
        "scale": "0-255, the network input before ScaleIntensityRanged",
        "values": measure(items, args.preset, overrides, key, values, args.seed),
    }
    if args.real_lesions:
        test = bz.build_zeroshot_datalist(args.data_root)["test"]
        test = [test[int(i)] for i in np.linspace(0, len(test) - 1, min(args.real_lesions, len(test)))]
        result["real_lesions"] = lesion_contrast(bz.load_test_arrays(test, p))
    result["table_markdown"] = table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, json.dumps(result, indent=1))
    print(result["table_markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
