#!/usr/bin/env python
"""Is a ZhangLab detector only reading how bright the image is? Scores split by brightness.

On ZhangLab the pneumonia images are darker at the top of their histogram than the normals
(``bright_p995`` of ``bench/trivial_baselines.py``: the 99.5th intensity percentile, lower =
diseased). A reconstruction detector could score that global property instead of the
lungs. This reads the per-image scores that ``run evaluating`` wrote (``<run>/eval_last/scores.csv``
of ``bench/bench_zhanglab.py``'s run folders) for one or more trainings and reports, per run:

- the AUC of the score and of the brightness statistic on the same images;
- the AUC inside each quartile of brightness (quartiles of all the images): a detector that
  only read brightness would fall to about 0.5 inside them;
- the Spearman correlation of score and brightness among the healthy images;
- the AUC of bacterial and of viral pneumonia against the normals apart (ZhangLab names each
  pneumonia file ``person<N>_bacteria_<M>`` or ``person<N>_virus_<M>``);
- for analysis only, the AUC of the rank sum of score and darkness. It shows how much the two
  carry apart from each other; it is not a score we ship (a global brightness cue is a
  property of this collection's acquisition, not of the lungs).

Usage::

    python bench/zhanglab_brightness.py --runs WORKDIR/final_seed0 WORKDIR/none_seed0 \\
        --out bench/results/zhanglab_brightness.json

Written atomically as JSON, with a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bundle"))

from trivial_baselines import auc, image_statistics, ranks  # noqa: E402
from zhanglab_ensemble import read_scores  # noqa: E402

from scripts.utils import atomic_write  # noqa: E402

STATISTIC = "bright_p995"


SUBTYPES = ("bacteria", "virus")


def subtype(path: str | Path) -> str:
    """``bacteria`` or ``virus`` from a ZhangLab pneumonia file name; ``""`` for any other file."""
    name = Path(path).name.lower()
    return next((s for s in SUBTYPES if f"_{s}" in name), "")


def by_subtype(score: np.ndarray, y: np.ndarray, kinds: np.ndarray) -> dict:
    """AUC of each pneumonia subtype against all the healthy images (``None`` where it has no image)."""
    out = {}
    for kind in SUBTYPES:
        sel = (y == 0) | ((y == 1) & (kinds == kind))
        out[kind] = auc(score[sel], y[sel]) if (y[sel] == 1).any() else None
    return out


def stratified(score: np.ndarray, bright: np.ndarray, y: np.ndarray, edges: np.ndarray, kinds: np.ndarray) -> dict:
    """The numbers of one run (see the module docstring); ``edges``: the brightness quartile edges;
    ``kinds``: the pneumonia subtype of each image (:func:`subtype`)."""
    bins = np.digitize(bright, edges)
    healthy = y == 0
    rho = np.corrcoef(ranks(score[healthy]), ranks(bright[healthy]))[0, 1]
    return {
        "auc": auc(score, y),
        "auc_by_subtype": by_subtype(score, y, kinds),
        "auc_within_brightness_quartiles": [auc(score[bins == b], y[bins == b]) for b in range(len(edges) + 1)],
        "spearman_score_brightness_healthy": float(rho),
        "auc_rank_sum_with_darkness": auc(ranks(score) + ranks(-bright), y),
    }


def run_labels(folders: list[Path]) -> list[str]:
    """A label per run folder: its name, or ``parent/name`` where two folders share a name
    (every bench run of a variant and seed is called ``<variant>_seed<seed>``)."""
    names = [f.name for f in folders]
    labels = [f"{f.parent.name}/{f.name}" if names.count(f.name) > 1 else f.name for f in folders]
    if len(set(labels)) < len(labels):
        raise ValueError(f"run folders that cannot be told apart by name: {[str(f) for f in folders]}")
    return labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders (their eval_last/scores.csv)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zhanglab_brightness.json")
    args = ap.parse_args(argv)
    runs = {label: read_scores(run) for label, run in zip(run_labels(args.runs), args.runs)}
    first = next(iter(runs.values()))
    files = sorted(first)
    for name, scores in runs.items():
        if sorted(scores) != files or any(scores[f][0] != first[f][0] for f in files):
            raise ValueError(f"{name}: not the first run's images and labels ({len(scores)} vs {len(files)} images)")
    y = np.asarray([first[f][0] for f in files])
    bright = np.asarray([image_statistics(np.asarray(Image.open(f).convert("L")))[STATISTIC] for f in files])
    edges = np.quantile(bright, [0.25, 0.5, 0.75])
    bins = np.digitize(bright, edges)
    kinds = np.asarray([subtype(f) for f in files])
    result = {
        "what": __doc__.split("\n")[0],
        "statistic": STATISTIC,
        "n_images": len(files),
        "n_diseased": int(y.sum()),
        "brightness_auc_lower_is_diseased": auc(-bright, y),
        "n_by_subtype": {k: int(((y == 1) & (kinds == k)).sum()) for k in SUBTYPES},
        "brightness_auc_by_subtype": by_subtype(-bright, y, kinds),
        "quartile_edges": edges.tolist(),
        "quartiles": [{"n": int((bins == b).sum()), "diseased_fraction": float(y[bins == b].mean())} for b in range(4)],
        "runs": {
            name: stratified(np.asarray([scores[f][1] for f in files]), bright, y, edges, kinds)
            for name, scores in runs.items()
        },
    }

    def kinds_of(values: dict) -> str:
        return " / ".join("" if values[k] is None else f"{values[k]:.3f}" for k in SUBTYPES)

    head = (
        "| run | AUC | bacterial / viral | AUC inside brightness quartiles (darkest first) "
        "| Spearman with brightness, healthy | rank sum with darkness (analysis only) |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        q = " / ".join(f"{a:.2f}" for a in r["auc_within_brightness_quartiles"])
        lines.append(
            f"| {name} | {r['auc']:.3f} | {kinds_of(r['auc_by_subtype'])} | {q} "
            f"| {r['spearman_score_brightness_healthy']:+.2f} | {r['auc_rank_sum_with_darkness']:.3f} |"
        )
    q = " / ".join(f"{x['diseased_fraction']:.2f}" for x in result["quartiles"])
    alone = result["brightness_auc_lower_is_diseased"]
    lines.append(
        f"| brightness alone ({STATISTIC}, lower = diseased) | {alone:.3f} "
        f"| {kinds_of(result['brightness_auc_by_subtype'])} | diseased fraction {q} | | |"
    )
    result["table_markdown"] = "\n".join(lines)
    atomic_write(args.out, json.dumps(result, indent=1))
    print(result["table_markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
