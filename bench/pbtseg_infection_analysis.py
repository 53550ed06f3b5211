"""Where do the COVID infection pixels outside the robust PBTSeg lung map lie?

Error analysis of ``PBTSeg(mode="robust")`` on ``covidquex_covid_infection`` (the target: at
least 90% of the infection-mask pixels inside the lung map). Each infection pixel outside
the map is put in buckets, pooled over the images of one half of the set (``--half dev``, the
default: ``crc32(stem) % 2 == 0``, see ``bench_pbtseg.is_dev``):

- ``gt_lung``: inside the ground-truth lung mask or not. The share of the infection pixels inside
  the ground-truth lungs themselves is the ceiling of any lung map that matches those lungs;
- ``lung_state``: the image's map lung on the pixel's side (image-left or image-right half, cut at
  the midline of the ground-truth lungs) is ``missing_or_tiny`` (under ``--tiny`` of that
  ground-truth lung's area) or ``present``;
- ``distance``: distance (pixels, at 256 x 256) to the nearest map pixel: ``1-3``, ``4-8``, ``>8``;
- ``direction``: where the pixel lies from its nearest map pixel: ``apical`` (above), ``basal``
  (below), ``lateral`` or ``medial`` (away from / toward the midline), by the larger component of
  the offset;
- the concentration: the share of the missed pixels that the worst 10% / 25% of the images hold;
- the map's pooled recall and precision against the ground-truth lungs, and the share of the
  infection pixels in images whose infection mask is (at least 95% of) the whole ground-truth lung
  (there, the share inside the map is the map's recall of that lung).

Results: ``bench/results/pbtseg_infection_analysis.json``.

    OMP_NUM_THREADS=1 PYTHONPATH=transforms python bench/pbtseg_infection_analysis.py
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from bench_pbtseg import SETS, image_paths, is_dev, read_gray, read_mask, write_json  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from artasyn.lungs.pbtseg import PBTSeg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SET = "covidquex_covid_infection"
DISTANCE_BANDS = ((1, 3), (4, 8), (9, None))


def band_name(lo: int, hi: int | None) -> str:
    return f">{lo - 1}" if hi is None else f"{lo}-{hi}"


def analyse(lung_map: np.ndarray, gt_lung: np.ndarray, infection: np.ndarray, tiny: float) -> dict:
    """Bucket counts of one image (``lung_map``, ``gt_lung``, ``infection``: 2-D bool, same shape)."""
    height, width = lung_map.shape
    cols = np.arange(width)
    gt_cols = gt_lung.sum(axis=0)
    # midline of the ground-truth lungs (measurement only): mean of the two halves' centroids
    half = width // 2
    cents = []
    for part in (slice(0, half), slice(half, width)):
        w = gt_cols[part]
        cents.append(float(w @ cols[part]) / w.sum() if w.sum() else float(cols[part].mean()))
    midline = 0.5 * (cents[0] + cents[1])
    side = cols[None, :] >= midline  # False: image-left lung (the right lung)
    out = {"infection": int(infection.sum()), "inside_map": int((infection & lung_map).sum())}
    out["inside_gt"] = int((infection & gt_lung).sum())
    out["gt_lung"] = int(gt_lung.sum())
    out["map"] = int(lung_map.sum())
    out["map_and_gt"] = int((lung_map & gt_lung).sum())
    # an infection mask that is (almost) the whole ground-truth lung: then "inside" is the map's recall
    out["infection_in_whole_lung_images"] = out["infection"] if out["inside_gt"] >= 0.95 * out["gt_lung"] else 0
    out["whole_lung_images"] = int(out["infection_in_whole_lung_images"] > 0)
    miss = infection & ~lung_map
    out["outside_map"] = int(miss.sum())
    out["outside_map_inside_gt"] = int((miss & gt_lung).sum())
    out["outside_map_outside_gt"] = int((miss & ~gt_lung).sum())
    # lung state per side
    state = np.zeros((height, width), dtype=bool)  # True: missing or tiny on that side
    for s in (False, True):
        on = side == s
        gt_area = int((gt_lung & on).sum())
        map_area = int((lung_map & on).sum())
        if gt_area and map_area < tiny * gt_area:
            state |= np.broadcast_to(on, state.shape)
    out["missing_or_tiny"] = int((miss & state).sum())
    out["present"] = int((miss & ~state).sum())
    if not lung_map.any():
        out["distance"] = {band_name(*b): 0 for b in DISTANCE_BANDS}
        out["direction"] = {k: 0 for k in ("apical", "basal", "lateral", "medial")}
        out["direction"]["no_map"] = int(miss.sum())
        return out
    dist, (near_r, near_c) = ndi.distance_transform_edt(~lung_map, return_indices=True)
    d = dist[miss]
    bands = {
        band_name(lo, hi): (d >= lo - 0.5) if hi is None else (d >= lo - 0.5) & (d < hi + 0.5)
        for lo, hi in DISTANCE_BANDS
    }
    out["distance"] = {name: int(sel.sum()) for name, sel in bands.items()}
    rr, cc = np.nonzero(miss)
    dr = rr - near_r[miss]
    dc = cc - near_c[miss]
    # lateral: away from the midline
    away = np.where(cc >= midline, dc, -dc)
    vertical = np.abs(dr) > np.abs(dc)
    directions = {
        "apical": vertical & (dr < 0),
        "basal": vertical & (dr > 0),
        "lateral": ~vertical & (away > 0),
        "medial": ~vertical & (away <= 0),
    }
    out["direction"] = {k: int(m.sum()) for k, m in directions.items()}
    # distance x direction, inside the GT lung only (the part a lung map can take back)
    in_gt = gt_lung[miss]
    out["inside_gt_by_band_direction"] = {
        name: {k: int((sel & in_gt & m).sum()) for k, m in directions.items()} for name, sel in bands.items()
    }
    return out


def merge(rows: list[dict]) -> dict:
    """Sum of nested count dictionaries."""
    total: dict = {}
    for r in rows:
        for k, v in r.items():
            if isinstance(v, dict):
                total[k] = merge([total.get(k, {}), v])
            else:
                total[k] = total.get(k, 0) + v
    return total


def shares(counts: dict, base: int) -> dict:
    return {k: shares(v, base) if isinstance(v, dict) else round(v / max(base, 1), 4) for k, v in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("ARTASYN_SHARED_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--half", choices=("dev", "heldout", "all"), default="dev")
    parser.add_argument("--tiny", type=float, default=0.3, help="a map lung under this share of its GT lung")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pbtseg_infection_analysis.json")
    args = parser.parse_args()
    images_dir, lung_dir, inf_dir = SETS[SET]
    seg = PBTSeg(mode="robust")
    rows, names = [], []
    for path in image_paths(args.data / images_dir):
        dev = is_dev(path.stem)
        if (args.half == "dev" and not dev) or (args.half == "heldout" and dev):
            continue
        lung_map = seg(read_gray(path))[0] > 0
        gt = read_mask(args.data / lung_dir / f"{path.stem}.png")
        inf = read_mask(args.data / inf_dir / f"{path.stem}.png")
        rows.append(analyse(lung_map, gt, inf, args.tiny))
        names.append(path.stem)
    total = merge(rows)
    missed = np.sort(np.array([r["outside_map"] for r in rows]))[::-1]
    n = len(rows)
    concentration = {
        f"worst_{p}pct_images": round(
            float(missed[: max(1, int(round(n * p / 100)))].sum()) / max(float(missed.sum()), 1.0), 4
        )
        for p in (10, 25)
    }
    worst = sorted(zip([r["outside_map"] for r in rows], names), reverse=True)[:15]
    summary = {
        "inside_map": round(total["inside_map"] / total["infection"], 4),
        "inside_gt_lung_ceiling": round(total["inside_gt"] / total["infection"], 4),
        "outside_map_inside_gt": round(total["outside_map_inside_gt"] / total["infection"], 4),
        "outside_map_outside_gt": round(total["outside_map_outside_gt"] / total["infection"], 4),
        "map_recall_of_gt_lung": round(total["map_and_gt"] / total["gt_lung"], 4),
        "map_precision_vs_gt_lung": round(total["map_and_gt"] / total["map"], 4),
        "infection_share_in_whole_lung_images": round(total["infection_in_whole_lung_images"] / total["infection"], 4),
        "whole_lung_images": total["whole_lung_images"],
    }
    result = {
        "what": "COVID infection-mask pixels outside the PBTSeg(mode='robust') lung map, bucketed; shares are of all "
        "infection pixels of the half (shares_of_infection) and of the pixels outside the map (shares_of_missed)",
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=transforms python bench/pbtseg_infection_analysis.py"
        + ("" if args.half == "dev" else f" --half {args.half}"),
        "set": SET,
        "half": args.half,
        "n_images": n,
        "tiny": args.tiny,
        "summary": summary,
        "counts": total,
        "shares_of_infection": shares(total, total["infection"]),
        "shares_of_missed": shares(
            {
                k: total[k]
                for k in (
                    "outside_map",
                    "outside_map_inside_gt",
                    "outside_map_outside_gt",
                    "missing_or_tiny",
                    "present",
                    "distance",
                    "direction",
                    "inside_gt_by_band_direction",
                )
            },
            total["outside_map"],
        ),
        "concentration": concentration,
        "worst_images": [{"stem": s, "missed_pixels": int(m)} for m, s in worst],
    }
    write_json(args.out, result)
    print(summary)
    print("shares of missed:", result["shares_of_missed"])
    print("concentration:", concentration)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
