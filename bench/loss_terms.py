#!/usr/bin/env python
"""How much each term of eq. 1 weighs in a training: read back from its TensorBoard events.

The training log printed the loss terms to four decimals, where ``L_feat`` (about 1e-5) read
0.0000 (since bundle 0.10.4: four significant digits). The TensorBoard events that
``train.json``'s ``TensorBoardStatsHandler`` writes hold the same unweighted terms
(``loss_global``, ``loss_local``, ``loss_feat``, ``loss_dice``) and the weighted total (``loss``)
at full precision. This reads them from every events file under a run folder and reports, per
term, its mean over the logged iterations (all, and the second half) and its weighted share of the
total loss ``w * mean(term) / mean(loss)``.

The weights are those of the bundle configs as ``monai.bundle.ConfigParser`` merges them
(``train.json`` then the overrides files, then ``--set``), the same arguments the training got. As
a check that they are the training's, every logged total is compared with the weighted sum of its
terms; the largest relative gap is reported, and a gap above 1 % is an error (the weights given are
not the run's).

Usage::

    python bench/loss_terms.py <work folder> --config bundle/configs/train.json \\
        bundle/configs/cpu.json bundle/configs/lesions.json --set w_feat 6.0 \\
        --out bench/results/loss_terms_lesions_wfeat6_s0.json

Written atomically as JSON, with a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))

from scripts.utils import atomic_write  # noqa: E402

TERMS = ("global", "local", "feat", "dice")
MAX_REL_GAP = 0.01


def weights_of(config_files: list[Path], overrides: list[tuple[str, str]]) -> dict[str, float]:
    """Eq. 1's weights as MONAI merges the configs in order, then ``--set`` (JSON values)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(ConfigParser.load_config_files([str(p) for p in config_files]))
    for key, value in overrides:
        parser[key] = json.loads(value)
    missing = [f"w_{t}" for t in TERMS if f"w_{t}" not in parser]
    if missing:
        raise KeyError(f"loss weights {missing} in none of {[str(p) for p in config_files]}")
    return {t: float(parser.get_parsed_content(f"w_{t}")) for t in TERMS}


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every ``loss*`` scalar under ``run_dir``: {tag: {iteration: value}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard events files under {run_dir}")
    out: dict[str, dict[int, float]] = {}
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag == "loss" or tag.startswith("loss_"):
                out.setdefault(tag, {}).update({e.step: float(e.value) for e in acc.Scalars(tag)})
    if "loss" not in out:
        raise ValueError(f"no 'loss' scalar in the events files under {run_dir} ({[p.name for p in files]})")
    return out


def summarise(scalars: dict[str, dict[int, float]], weights: dict[str, float]) -> dict:
    """Means, weighted shares and the consistency gap of the logged terms."""
    steps = sorted(scalars["loss"])
    total = np.array([scalars["loss"][s] for s in steps])
    terms = {t: np.array([scalars.get(f"loss_{t}", {}).get(s, 0.0) for s in steps]) for t in TERMS}
    recomposed = sum(weights[t] * terms[t] for t in TERMS)
    rel_gap = float(np.max(np.abs(recomposed - total) / np.maximum(np.abs(total), 1e-12)))
    if rel_gap > MAX_REL_GAP:
        raise ValueError(
            f"the logged loss differs from the weighted sum of its terms by up to {rel_gap:.1%}: "
            f"the weights {weights} are not this training's"
        )
    half = len(steps) // 2
    rows = {}
    for t in TERMS:
        mean_all, mean_late = float(terms[t].mean()), float(terms[t][half:].mean())
        rows[t] = {
            "weight": weights[t],
            "mean": mean_all,
            "mean_second_half": mean_late,
            "share": weights[t] * mean_all / float(total.mean()),
            "share_second_half": weights[t] * mean_late / float(total[half:].mean()),
        }
    return {
        "n_logged": len(steps),
        "iterations": [steps[0], steps[-1]],
        "loss_mean": float(total.mean()),
        "max_rel_gap_total_vs_weighted_terms": rel_gap,
        "terms": rows,
    }


def markdown(summary: dict) -> str:
    lines = [
        "| term | weight | mean (unweighted) | second half | share of the loss | second half |",
        "|---|---|---|---|---|---|",
    ]
    for t, r in summary["terms"].items():
        lines.append(
            f"| L_{t} | {r['weight']:g} | {r['mean']:.3g} | {r['mean_second_half']:.3g} "
            f"| {r['share']:.1%} | {r['share_second_half']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path, help="a training's work folder (events files anywhere under it)")
    ap.add_argument(
        "--config",
        type=Path,
        nargs="+",
        default=[REPO / "bundle/configs/train.json", REPO / "bundle/configs/cpu.json"],
        help="the training's config files, in the order it merged them",
    )
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "JSON"), help="an override")
    ap.add_argument("--out", type=Path, help="JSON to write (atomically)")
    args = ap.parse_args(argv)

    weights = weights_of(args.config, [tuple(kv) for kv in args.set])
    summary = summarise(read_scalars(args.run_dir), weights)
    summary.update(
        run_dir=str(args.run_dir),
        config_files=[str(p) for p in args.config],
        overrides={k: json.loads(v) for k, v in args.set},
        table_markdown=markdown(summary),
    )
    print(summary["table_markdown"])
    print(
        f"{summary['n_logged']} logged iterations {summary['iterations']}; largest gap between the loss and its "
        f"weighted terms {summary['max_rel_gap_total_vs_weighted_terms']:.2e}"
    )
    if args.out:
        atomic_write(args.out, json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
