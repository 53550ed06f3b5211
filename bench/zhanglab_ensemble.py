#!/usr/bin/env python
"""Ensembles of finished ZhangLab runs (seeds, or test-time settings), from saved per-image scores.

``bench/bench_zhanglab.py`` evaluates each run's last weights with ``run evaluating``, which
writes ``<workdir>/<run>/eval_last/scores.csv`` (one row per image: ``filename``, ``label``,
``score``). An ensemble of runs scores an image by the mean of the runs' log scores (the
geometric mean: the runs' scores are on different scales, and a log mean lets none dominate);
the rank mean is reported beside. Every subset of the given runs is scored, so the gain of a
second and a third training is read off directly: it tells whether an ensemble pays for its
training time.

The members can also be evaluations of one run: with several ``--which`` folders (each written
by ``bench_zhanglab.py --rescore TAG`` as ``eval_last_TAG``), every evaluation of every run is a
member, so scores of the same weights under other test-time settings (another crop margin, say)
are combined the same way.

Usage::

    python bench/zhanglab_ensemble.py --runs /work/zl/base/final_seed0 /work/zl/base/final_seed1 \\
        /work/zl/base/final_seed2 --out bench/results/zhanglab_ensemble.json
    python bench/zhanglab_ensemble.py --runs /work/zl/base/final_seed0 \\
        --which eval_last_m04 eval_last_m08 eval_last_m12 --out bench/results/margins_s0.json

Written atomically as JSON, with a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bundle"))

from trivial_baselines import auc, average_precision, ranks  # noqa: E402

from scripts.utils import atomic_write  # noqa: E402


def read_scores(run: Path, which: str = "eval_last") -> dict[str, tuple[int, float]]:
    """``{filename: (label, score)}`` of ``<run>/<which>/scores.csv``."""
    path = run / which / "scores.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no scores.csv (did the run's evaluation finish?)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"filename", "label", "score"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} missing")
    return {r["filename"]: (int(float(r["label"])), float(r["score"])) for r in rows}


def ensembles(runs: dict[str, dict[str, tuple[int, float]]]) -> list[dict]:
    """AUC / AP of every non-empty subset of ``runs`` (log mean and rank mean of the scores)."""
    names = sorted(set.intersection(*(set(r) for r in runs.values())))
    if not names:
        raise ValueError("the runs share no scored image")
    first = next(iter(runs.values()))
    y = np.array([first[n][0] for n in names])
    for key, r in runs.items():
        if any(r[n][0] != first[n][0] for n in names):
            raise ValueError(f"{key}: labels differ from the first run's on the same files")
    s = {k: np.array([r[n][1] for n in names], dtype=np.float64) for k, r in runs.items()}
    eps = 1e-12
    out = []
    for size in range(1, len(runs) + 1):
        for combo in itertools.combinations(sorted(runs), size):
            log_mean = np.mean([np.log(np.maximum(s[k], eps)) for k in combo], axis=0)
            rank_mean = np.mean([ranks(s[k]) for k in combo], axis=0)
            out.append(
                {
                    "runs": list(combo),
                    "auc": float(auc(log_mean, y)),
                    "ap": float(average_precision(log_mean, y)),
                    "auc_rank_mean": float(auc(rank_mean, y)),
                    "n_images": len(names),
                    "n_positive": int(y.sum()),
                }
            )
    return out


def member_name(run: Path, which: str, runs: list[Path], whiches: list[str]) -> str:
    """A member's name: the run's folder name, the evaluation folder's when there is one run, both
    (``run/which``) when there are several of each."""
    if len(whiches) == 1:
        return run.name
    return which if len(runs) == 1 else f"{run.name}/{which}"


def table(rows: list[dict]) -> str:
    lines = ["| runs | AUC / AP (log mean) | AUC (rank mean) |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {' + '.join(r['runs'])} | {r['auc']:.3f} / {r['ap']:.3f} | {r['auc_rank_mean']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders of bench_zhanglab.py")
    ap.add_argument(
        "--which",
        nargs="+",
        default=["eval_last"],
        help="evaluation folder(s) of each run (eval_last: last weights); several: each is a member",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zhanglab_ensemble.json")
    args = ap.parse_args(argv)
    members = {member_name(p, w, args.runs, args.which): (p, w) for p in args.runs for w in args.which}
    if len(members) < len(args.runs) * len(args.which):
        raise SystemExit(
            "zhanglab_ensemble: two members share a name (a run or --which folder given twice, or runs with the "
            "same folder name)"
        )
    runs = {k: read_scores(p, w) for k, (p, w) in members.items()}
    rows = ensembles(runs)
    result = {
        "what": "ensembles from saved per-image scores (log mean of the members' scores; rank mean beside)",
        "runs": {k: str(p / w / "scores.csv") for k, (p, w) in members.items()},
        "ensembles": rows,
        "table_markdown": table(rows),
    }
    atomic_write(args.out, json.dumps(result, indent=1))
    print(result["table_markdown"])
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
