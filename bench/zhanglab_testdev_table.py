#!/usr/bin/env python
"""The probe table on ``zhanglab_test_dev``: every training of ``bench/bench_zhanglab.py`` there, one row each.

Reads the result files that ``bench/bench_zhanglab.py`` wrote (``--out``; one or more runs each,
with their settings and overrides) and lists, per run: the variant, seed, settings that differ
from ``cpu.json`` (the file's ``settings``: overrides, validation interval; first the bundle version
whose ``cpu.json`` it was, where the file records it), the last checkpoint's AUC /
AP on ``zhanglab_test_dev`` and on ``zhanglab_val``, the best epoch's AUC, the iterations it
trained (as logged: ``cpu.json`` itself went from 800 to 1600 with metadata 0.8.0, so "as is"
means the ``cpu.json`` of its day), the training wall time and the load average at its end. Rows
are never re-measured here: this only gathers them.

Usage::

    python bench/zhanglab_testdev_table.py bench/results/zhanglab_testdev*.json \\
        --out bench/results/zhanglab_testdev_probes.json

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


def _setting(settings: dict, version: str | None = None) -> str:
    parts = [f"{k}={json.dumps(v)}" for k, v in (settings.get("overrides") or {}).items()]
    # a run made another way that trains bit-for-bit as these overrides would (its ``note`` says how)
    parts += [f"{k}={json.dumps(v)} (equivalent)" for k, v in (settings.get("equivalent_overrides") or {}).items()]
    if settings.get("iterations_per_epoch"):
        parts.append(f"iterations_per_epoch={settings['iterations_per_epoch']}")
    if version:
        parts.insert(0, f"`cpu.json` {version}")
    return "; ".join(parts) or "cpu.json as is"


def rows_of(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    settings = data.get("settings") or {}
    out = []
    for name, run in (data.get("runs") or {}).items():
        last, best = run.get("metrics_last") or {}, run.get("metrics_best") or {}
        val = run.get("metrics_last_val") or {}
        out.append(
            {
                "file": path.name,
                "run": name,
                "variant": run.get("variant"),
                "seed": run.get("seed"),
                "settings": _setting(settings, data.get("preset_version")),
                "preset_version": data.get("preset_version"),
                "test_dev_auc": last.get("auc"),
                "test_dev_ap": last.get("ap"),
                "test_dev_auc_best_epoch": best.get("auc"),
                "val_auc": val.get("auc"),
                "val_ap": val.get("ap"),
                "iterations": run.get("iterations_logged"),
                "train_wall_s": run.get("train_wall_s"),
                "load_avg_end": run.get("load_avg_end"),
                "curve": run.get("val_curve_auc"),
            }
        )
    return out


def table(rows: list[dict]) -> str:
    def f(v, d=3):
        return "" if v is None else f"{v:.{d}f}"

    lines = [
        "| run | settings (over `cpu.json`) | test_dev AUC / AP (last) | best epoch AUC"
        " | zhanglab_val AUC / AP | iterations | training s | load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        load = r["load_avg_end"][0] if r.get("load_avg_end") else None
        lines.append(
            f"| {r['run']} | {r['settings']} | {f(r['test_dev_auc'])} / {f(r['test_dev_ap'])} | "
            f"{f(r['test_dev_auc_best_epoch'])} | {f(r['val_auc'])} / {f(r['val_ap'])} | "
            f"{r['iterations'] or ''} | {f(r['train_wall_s'], 0)} | {f(load, 1)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="result files of bench_zhanglab.py")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zhanglab_testdev_probes.json")
    args = ap.parse_args(argv)
    rows = [r for p in args.files for r in rows_of(p)]
    result = {"what": __doc__.split("\n")[0], "files": [str(p) for p in args.files], "rows": rows}
    result["table_markdown"] = table(rows)
    atomic_write(args.out, json.dumps(result, indent=1))
    print(result["table_markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
