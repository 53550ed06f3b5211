#!/usr/bin/env python
"""Trivial baselines of the lesion maps: where in the lungs a pixel lies, no network, no intensity.

COVID opacities favour the lower and outer lung. A map that knows only that ranks the pixels of
each image by their place in its lungs; its pixel AUROC inside the ground-truth lungs is what a
lesion map must beat before it can be said to look at the image (as the image statistics are for
the detector). The maps, from the preset's own PBTSeg lungs (what the bundle has at inference),
nothing fitted (:func:`bench_zeroshot.location_maps`: ``lower``, ``outer``, their sum,
``peripheral``), with the intensity itself (``raw``, the bench's existing reference) beside them.
Scored exactly as ``bench/bench_zeroshot.py`` scores its maps (:func:`bench_zeroshot.auroc_inside`)
on the test section of one of its datalists, with the same preprocessing; written atomically::

    python bench/lesion_location_baseline.py --datalist <zeroshot work>/datalist.json \\
        --cache-dir <zeroshot work>/cache --out bench/results/zeroshot_location_baseline.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO / "bundle") not in sys.path:
    sys.path.insert(0, str(REPO / "bundle"))

from bench_zeroshot import auroc_inside, bundle_parser, load_test_arrays, location_maps  # noqa: E402

from scripts.utils import atomic_write  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datalist", type=Path, required=True, help="a bench_zeroshot.py datalist (its test section)")
    ap.add_argument("--config", type=Path, nargs="*", default=[CONFIGS / "lesions.json"], help="after cpu.json")
    ap.add_argument("--cache-dir", type=Path, default=None, help="lung cache (e.g. the bench run's)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zeroshot_location_baseline.json")
    args = ap.parse_args(argv)

    datalist = json.loads(args.datalist.read_text())
    configs = [CONFIGS / "train.json", CONFIGS / "cpu.json", *args.config]
    overrides = {"cache_dir": str(args.cache_dir.resolve())} if args.cache_dir else {}
    parser = bundle_parser(configs, overrides)
    t0 = time.perf_counter()
    arrays = load_test_arrays(datalist["test"], parser)
    maps = {**location_maps(arrays["lung"]), "raw": arrays["image"]}
    scores = {name: auroc_inside(m, arrays["infection"], arrays["lung_gt"]) for name, m in maps.items()}
    result = {
        "what": "pixel AUROC inside the ground-truth lungs of maps that know only a pixel's place in the lungs",
        "command": " ".join(["python", "bench/lesion_location_baseline.py", *(sys.argv[1:] if argv is None else argv)]),
        "datalist": str(args.datalist),
        "n_test": len(datalist["test"]),
        "config_files": [str(c.relative_to(REPO)) if c.is_relative_to(REPO) else str(c) for c in configs],
        "pbtseg_mode": parser.get_parsed_content("pbtseg_mode"),
        "images_without_pbtseg_lungs": int((~arrays["lung"].any(axis=(1, 2))).sum()),
        "pixel_auroc_in_gt_lung": scores,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write(args.out, json.dumps(result, indent=2))
    print("| map | pooled | per image |\n|---|---|---|")
    for name, s in scores.items():
        print(f"| {name} | {s['micro']:.3f} | {s['mean_per_image']:.3f} |")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
