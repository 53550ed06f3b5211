#!/usr/bin/env python
"""Candidate lesion maps against the preset's, one row per evaluated checkpoint.

Reads result files of ``bench/bench_zeroshot.py`` that hold candidate maps
(``map_variants_pixel_auroc_in_gt_lung``) and lists, per file: its overrides, the preset's map
(pixel AUROC inside the ground-truth lungs, pooled / per image) and each chosen candidate with
its gain over the preset, the intensity weight that the healthy reference images imply (where
recorded) and, over all rows, the smallest and largest gain of each candidate. Rows are never
re-measured here: this only gathers them.

Usage::

    python bench/lesion_map_table.py bench/results/zeroshot_lesions1600_base*_maps_location.json \\
        --maps signed_sigma6 signed_sigma6+raw --out bench/results/zeroshot_map_candidates.json

Written atomically as JSON, with a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))

from scripts.utils import atomic_write  # noqa: E402

DEFAULT_MAPS = ("signed_sigma6", "signed_sigma6+raw", "signed_sigma12+raw")


def _pair(metric: dict) -> dict:
    return {"pooled": metric["micro"], "per_image": metric["mean_per_image"]}


def row_of(path: Path, maps) -> dict:
    """One file's row; a ``ValueError`` naming the file and the key when a map is missing."""
    data = json.loads(path.read_text())
    variants = data.get("map_variants_pixel_auroc_in_gt_lung") or {}
    try:
        preset = _pair(data["metrics"]["pixel_auroc_in_gt_lung"]["anomaly_map"])
    except KeyError as e:
        raise ValueError(f"{path}: no preset map (metrics.pixel_auroc_in_gt_lung.anomaly_map)") from e
    row = {
        "file": path.name,
        # the bundle overrides of the run, without its folders
        "overrides": {k: v for k, v in (data.get("overrides") or {}).items() if not k.endswith("_dir")},
        "seed": (data.get("settings") or {}).get("seed"),
        "preset_map": preset,
        "intensity_weight_sigma6": data.get("map_variants_intensity_weight_sigma6"),
        "maps": {},
    }
    for name in maps:
        if name not in variants:
            raise ValueError(f"{path}: no candidate map {name!r} in map_variants_pixel_auroc_in_gt_lung")
        value = _pair(variants[name])
        gain = {k: value[k] - preset[k] for k in value}
        row["maps"][name] = {**value, "gain": gain}
    return row


def summary(rows: list[dict], maps) -> dict:
    """Per candidate: the smallest and largest gain over the preset's map, pooled and per image."""
    out = {}
    for name in maps:
        gains = [r["maps"][name]["gain"] for r in rows]
        out[name] = {
            k: {"min": min(g[k] for g in gains), "max": max(g[k] for g in gains)} for k in ("pooled", "per_image")
        }
        out[name]["rows_above_preset_both"] = sum(g["pooled"] > 0 and g["per_image"] > 0 for g in gains)
    return out


def markdown(rows: list[dict], maps) -> str:
    head = "| file | overrides | preset map | " + " | ".join(maps) + " | implied intensity weight |"
    lines = [head, "|" + "---|" * (len(maps) + 4)]
    for r in rows:
        cells = [f"{r['preset_map']['pooled']:.3f} / {r['preset_map']['per_image']:.3f}"]
        for name in maps:
            m = r["maps"][name]
            cells.append(
                f"{m['pooled']:.3f} / {m['per_image']:.3f} ({m['gain']['pooled']:+.3f} / {m['gain']['per_image']:+.3f})"
            )
        w = r["intensity_weight_sigma6"]
        over = ", ".join(f"{k}={json.dumps(v)}" for k, v in r["overrides"].items()) or "as is"
        lines.append(f"| {r['file']} | {over} | " + " | ".join(cells) + f" | {'' if w is None else f'{w:.4f}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="bench_zeroshot.py result files with candidate maps")
    ap.add_argument("--maps", nargs="+", default=list(DEFAULT_MAPS), help="candidate map names")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = [row_of(p, args.maps) for p in args.files]
    result = {
        "what": "pixel AUROC inside the ground-truth lungs (pooled / per image) of candidate maps against "
        "the preset's map, per evaluated checkpoint (gathered from bench_zeroshot.py result files)",
        "maps": list(args.maps),
        "rows": rows,
        "summary": summary(rows, args.maps),
        "table_markdown": markdown(rows, args.maps),
    }
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    print(result["table_markdown"])
    for name, s in result["summary"].items():
        print(
            f"{name}: gain pooled {s['pooled']['min']:+.3f}..{s['pooled']['max']:+.3f}, per image "
            f"{s['per_image']['min']:+.3f}..{s['per_image']['max']:+.3f}, "
            f"above the preset on both in {s['rows_above_preset_both']} of {len(rows)}"
        )
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
