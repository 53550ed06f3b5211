#!/usr/bin/env python
"""Benchmark: ART-ASyn against no synthesis, its partial variants and the baselines on ZhangLab,
every variant with the same budget.

The paper's comparison (seed Table S1, ZhangLab): AUC 0.6842 without synthesis, 0.8797 A_base,
0.7574 A_base + T_blur + T_cryst, 0.9350 A_final, 0.9103 AnatPaste. Here, one bundle run per
variant and seed, all with the same preset (default ``cpu.json``: its iteration count is the
budget), seed and optional wall-clock cap (``max_train_seconds``), switched only by
``--variant`` (``none``, ``base``, ``base_blur_cryst``, ``final``, ``anatpaste``, ``cutpaste``,
``perlin``); a loss ablation in the spirit of seed Table S3 (``--ablations w_local w_feat
w_dice``: final with that weight 0) and extra seeds of final (``--final-seeds``, the spread).

Data (``../shared/data`` or ``$ARTASYN_SHARED_DATA``, see its README; nothing is copied):

- training: ``zhanglab_train_normal`` (healthy only, one-class);
- validation and selection: ``zhanglab_test_dev`` (110 ``normal``, label 0; 204 ``pneumonia``,
  label 1; half of the official test split, the distribution the paper reports on), AP and AUC
  per image, by ``run evaluating`` of the last EMA weights (``model_final.pt``) and of the
  best-on-val checkpoint (``model.pt``; chosen on the same set, so optimistic); the same set
  monitors training. ``zhanglab_val`` (from the training split, easier) is evaluated beside
  (``metrics_last_val``). The other half of the official test split stays apart (data README)
  for an independent evaluation.
- trivial baselines on the same images, reported beside (``docs/method.md`` section 8):
  AUC / AP of the image mean, the central mean, the image standard deviation, the
  high-frequency energy and the brightest values (``bench/trivial_baselines.py``).

Usage::

    python bench/bench_zhanglab.py --dry-run  # write the datalist, print the commands
    # Table S1 variants, loss ablation, 3 seeds of final, cpu.json budget each
    nohup python bench/bench_zhanglab.py --variants none base base_blur_cryst final \\
        --ablations w_local w_feat w_dice --final-seeds 1 2 > zhanglab.log 2>&1 &
    python bench/bench_zhanglab.py --preset paper --budget-min 120 --seeds 0 1 2  # GPU

Writes ``bench/results/zhanglab.json`` atomically after every run (a temporary file, then
``os.replace``), with a Markdown table (the paper's AP / AUC beside ours, the trivial
baselines in the same table).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_real import _images, _overrides, _run, machine_info, refuse_unknown_ids  # noqa: E402
from trivial_baselines import STATISTICS, trivial_baselines  # noqa: E402

from scripts.utils import atomic_write  # noqa: E402

VARIANTS = ("none", "base", "base_blur_cryst", "final", "anatpaste", "cutpaste", "perlin")
#: seed Table S1, ZhangLab (AP, AUC); AnatPaste: AUC only
PAPER = {
    "none": (0.7938, 0.6842),
    "base": (0.9112, 0.8797),
    "base_blur_cryst": (0.8536, 0.7574),
    "final": (0.9621, 0.9350),
    "anatpaste": (None, 0.9103),
}


def build_zhanglab_datalist(data_root: Path) -> dict:
    """``training``: healthy ZhangLab train images; ``validation`` = ``test``: ``zhanglab_test_dev``
    (half of the official test split, where every choice is made); ``test_val``: ``zhanglab_val``
    (from the training split, easier; reported beside)."""
    train = _images(data_root / "zhanglab_train_normal")
    sets = {}
    for section, folder in (("test", "zhanglab_test_dev"), ("test_val", "zhanglab_val")):
        normal = _images(data_root / folder / "normal")
        pneumonia = _images(data_root / folder / "pneumonia")
        if not normal or not pneumonia:
            raise FileNotFoundError(f"ZhangLab data not found under {data_root / folder} (normal/, pneumonia/)")
        sets[section] = [{"image": str(p), "label": 0} for p in normal] + [
            {"image": str(p), "label": 1} for p in pneumonia
        ]
    if not train:
        raise FileNotFoundError(f"ZhangLab data not found under {data_root} (zhanglab_train_normal)")
    return {
        "description": "bench_zhanglab: train on zhanglab_train_normal, validate and select on zhanglab_test_dev "
        "(normal vs pneumonia); zhanglab_val reported beside as test_val",
        "training": [{"image": str(p)} for p in train],
        "validation": sets["test"],
        "test": sets["test"],
        "test_val": sets["test_val"],
        "counts": {
            "training": len(train),
            "test_dev": len(sets["test"]),
            "val": len(sets["test_val"]),
        },
    }


#: seed Table S3 in spirit: each weighted term of eq. 1 switched off in turn (A_final)
ABLATIONS = ("w_local", "w_feat", "w_dice")


def _write_atomic(path: Path, content) -> None:
    atomic_write(path, json.dumps(content, indent=2))


def table(results: dict) -> str:
    """Markdown: every run (AP / AUC of the last and the best checkpoint, and of any re-scoring) and
    the trivial baselines."""

    def f(v):
        return "" if v is None else f"{v:.3f}"

    tags = list(results.get("rescored", {}))
    runs = results["runs"].values()
    cols = [(t, w) for t in tags for w in ("last", "best") if any(r.get(f"metrics_{w}_{t}") for r in runs)]
    extra_head = "".join(f" AP {w} ({t}) | AUC {w} ({t}) |" for t, w in cols)
    lines = [
        "| run | paper AP | paper AUC | AP last | AUC last | AP best | AUC best |" + extra_head + " its | wall |",
        "|---|---|---|---|---|---|---|" + "---|---|" * len(cols) + "---|---|",
    ]
    for name, r in results["runs"].items():
        pap, pauc = PAPER.get(r["variant"], (None, None)) if r.get("ablation") is None else (None, None)
        last, best = r.get("metrics_last") or {}, r.get("metrics_best") or {}
        extra = ""
        for t, w in cols:
            m = r.get(f"metrics_{w}_{t}") or {}
            extra += f" {f(m.get('ap'))} | {f(m.get('auc'))} |"
        lines.append(
            f"| {name} | {f(pap)} | {f(pauc)} | {f(last.get('ap'))} | {f(last.get('auc'))} | {f(best.get('ap'))} "
            f"| {f(best.get('auc'))} |{extra} {r.get('iterations_logged', '')} | {r.get('train_wall_s', '')} s |"
        )
    tb = results.get("trivial_baselines") or {}
    for stat in STATISTICS:
        if stat in tb:
            b = tb[stat]
            blank = " |" * (2 * len(cols))
            lines.append(
                f"| trivial: {stat} ({b['orientation']}) | | | {f(b['ap_best'])} | {f(b['auc_best'])} "
                f"| | |{blank} 0 | |"
            )
    return "\n".join(lines)


def run_overrides(args, root: Path, dl_path: Path, variant: str, seed: int, term: str | None) -> dict:
    """The bundle overrides of one run, shared by its training and its evaluations."""
    return {
        "ckpt_dir": str(root / "models"),
        "output_dir": str(root / "eval"),
        "runs_dir": str(root / "runs"),
        "cache_dir": str(args.workdir / "cache"),  # lung maps shared by every run
        "datalist_file": str(dl_path),
        "variant": variant,
        "seed": seed,
        **({f"loss#{term}": 0.0} if term else {}),
        **({"num_workers": args.num_workers} if args.num_workers is not None else {}),
        **{k: json.loads(v) for k, v in args.set},
    }


def evaluate(cfg_e: str, common: dict, ckpt: Path, out_dir: Path, log: Path, extra: dict | None = None) -> dict:
    """``run evaluating`` (``evaluate.json``) of one checkpoint on the test section: its metrics."""
    over = {**common, "output_dir": str(out_dir), "ckpt_path": str(ckpt), **(extra or {})}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", cfg_e] + _overrides(over)
    rc, _ = _run(cmd, log, timeout=3600)
    mfile = out_dir / "metrics.json"
    if rc == 0 and mfile.is_file():
        m = json.loads(mfile.read_text())
        return {"rc": rc, "metrics": m["metrics"], "n_images": m["n_images"]}
    return {"rc": rc, "metrics": None, "n_images": None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--variants", nargs="+", default=["none", "base", "base_blur_cryst", "final"], choices=VARIANTS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every variant")
    ap.add_argument("--final-seeds", nargs="*", type=int, default=[], help="extra seeds of final only (the spread)")
    ap.add_argument("--ablations", nargs="*", default=[], choices=ABLATIONS, help="final with this loss weight 0")
    ap.add_argument("--preset", choices=["cpu", "small", "paper"], default="cpu", help="bundle/configs/<preset>.json")
    ap.add_argument("--budget-min", type=float, default=0, help="wall-clock cap per training, minutes (0: none)")
    ap.add_argument("--max-iterations", type=int, default=None, help="default: the preset's")
    ap.add_argument("--iterations-per-epoch", type=int, default=None, help="validation interval; default: preset's")
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "results" / "zhanglab_work")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zhanglab.json")
    ap.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("ID", "JSON"),
        help="extra bundle override (an id that no config defines is refused)",
    )
    ap.add_argument("--dry-run", action="store_true", help="write the datalist and print the commands only")
    ap.add_argument(
        "--rescore",
        metavar="TAG",
        help="no training: evaluate the last checkpoint (and the best with --rescore-best) of every finished run "
        "in --out again with --eval-set overrides (e.g. another score_map_mode), stored as metrics_{last,best}_TAG",
    )
    ap.add_argument("--eval-set", nargs=2, action="append", default=[], metavar=("ID", "JSON"))
    ap.add_argument("--rescore-best", action="store_true", help="rescore model.pt too (chosen by the original scoring)")
    ap.add_argument(
        "--fresh", action="store_true", help="run every job again (default: keep the finished runs found in --out)"
    )
    args = ap.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    datalist = build_zhanglab_datalist(args.data_root)
    dl_path = args.workdir / "datalist.json"
    atomic_write(dl_path, json.dumps(datalist, indent=1))
    val_only = {"description": "zhanglab_val as the test section", "test": datalist["test_val"]}
    atomic_write(dl_path.with_name("datalist_val.json"), json.dumps({**datalist, **val_only}, indent=1))
    print(f"datalist {dl_path}: {datalist['counts']}", flush=True)

    configs = [str(CONFIGS / "train.json")] + ([] if args.preset == "paper" else [str(CONFIGS / f"{args.preset}.json")])
    refuse_unknown_ids(configs, {k: json.loads(v) for k, v in args.set})
    cfg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cfg_e = "[" + ",".join(f"'{c}'" for c in [*configs, str(CONFIGS / "evaluate.json")]) + "]"
    results = {
        "datalist": str(dl_path),
        "counts": datalist["counts"],
        "preset": args.preset,
        # the bundle version whose preset trained: a run "as is" means that version's preset
        "preset_version": json.loads((CONFIGS / "metadata.json").read_text())["version"],
        "budget_min_per_run": args.budget_min,
        "max_iterations": args.max_iterations,
        "evaluated_weights": "last: model_final.pt (EMA at the end); best: model.pt (EMA, best val AUC)",
        "paper_table_s1_zhanglab_ap_auc": PAPER,
        "trivial_baselines": trivial_baselines(datalist["test"]),
        "trivial_baselines_val": trivial_baselines(datalist["test_val"]),
        "load_avg_start": list(os.getloadavg()),
        "machine": machine_info(),
        "runs": {},
    }
    results["settings"] = {
        "preset": args.preset,
        "budget_min": args.budget_min,
        "max_iterations": args.max_iterations,
        "iterations_per_epoch": args.iterations_per_epoch,
        "overrides": {k: json.loads(v) for k, v in args.set},
    }
    old = json.loads(args.out.read_text()) if args.out.is_file() and not args.fresh else {}
    if old.get("settings") == results["settings"]:  # resume: a finished (evaluated) run is not trained again
        results["runs"] = {k: r for k, r in old.get("runs", {}).items() if r.get("eval_last_rc") == 0}
    if args.rescore:
        extra = {k: json.loads(v) for k, v in args.eval_set}
        results["rescored"] = {**old.get("rescored", {}), args.rescore: extra}
        for name, entry in results["runs"].items():
            root = args.workdir / name
            common = run_overrides(args, root, dl_path, entry["variant"], entry["seed"], entry.get("ablation"))
            for which, ckpt in (("last", "model_final.pt"), ("best", "model.pt"))[: 2 if args.rescore_best else 1]:
                if entry.get(f"metrics_{which}_{args.rescore}"):
                    continue  # rescored before (resumable)
                out_dir = root / f"eval_{which}_{args.rescore}"
                ev = evaluate(cfg_e, common, root / "models" / ckpt, out_dir, out_dir.with_suffix(".log"), extra)
                entry[f"metrics_{which}_{args.rescore}"] = ev["metrics"]
            _write_atomic(args.out, results)
            auc = (entry.get(f"metrics_last_{args.rescore}") or {}).get("auc")
            print(f"{name}: rescored {args.rescore}: last AUC {auc}", flush=True)
        results["table_markdown"] = table(results)
        _write_atomic(args.out, results)
        print(results["table_markdown"])
        return 0
    jobs = [(v, seed, None) for v in args.variants for seed in args.seeds]
    jobs += [("final", seed, None) for seed in args.final_seeds if ("final", seed, None) not in jobs]
    jobs += [("final", args.seeds[0], term) for term in args.ablations]
    for variant, seed, term in jobs:
        name = f"{variant}_seed{seed}" + (f"_no_{term[2:]}" if term else "")
        root = args.workdir / name
        if name in results["runs"]:
            print(f"{name}: done before, kept ({args.out})", flush=True)
            continue
        common = run_overrides(args, root, dl_path, variant, seed, term)
        train_over = {
            **common,
            **({"max_iterations": args.max_iterations} if args.max_iterations else {}),
            **({"iterations_per_epoch": args.iterations_per_epoch} if args.iterations_per_epoch else {}),
            "max_train_seconds": int(args.budget_min * 60),
        }
        train_cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", cfg]
        train_cmd += _overrides(train_over)
        if args.dry_run:
            print(" ".join(train_cmd), flush=True)
            continue
        log = args.workdir / f"{name}.train.log"
        rc, t_train = _run(train_cmd, log, timeout=(args.budget_min or 600) * 60 + 1800)
        entry = {"variant": variant, "seed": seed, "ablation": term, "train_rc": rc, "train_wall_s": round(t_train, 1)}
        text = log.read_text(errors="replace")
        its = re.findall(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+)", text)  # StatsHandler, every log_every
        if its:
            e, i, n = (int(x) for x in its[-1])
            entry["iterations_logged"] = (e - 1) * n + i
        entry["val_curve_auc"] = [float(a) for a in re.findall(r"\[epoch \d+\] AP=\S+ AUC=(\S+)", text) if a != "n/a"]
        for which, ckpt in (("last", "model_final.pt"), ("best", "model.pt")):
            if rc != 0:
                break
            log_e = args.workdir / f"{name}.eval_{which}.log"
            ev = evaluate(cfg_e, common, root / "models" / ckpt, root / f"eval_{which}", log_e)
            if ev["metrics"] is not None:
                entry[f"metrics_{which}"] = ev["metrics"]
                entry["n_test_images"] = ev["n_images"]
            entry[f"eval_{which}_rc"] = ev["rc"]
        if rc == 0:  # the last weights on zhanglab_val too, reported beside
            over = {"datalist_file": str(dl_path.with_name("datalist_val.json"))}
            ev = evaluate(cfg_e, common, root / "models" / "model_final.pt", root / "eval_last_val", log_e, over)
            entry["metrics_last_val"] = ev["metrics"]
        entry["load_avg_end"] = list(os.getloadavg())
        results["runs"][name] = entry
        _write_atomic(args.out, results)  # after every run: a killed bench keeps what it measured
        print(f"{name}: {json.dumps({k: entry.get(k) for k in ('metrics_last', 'metrics_best')})[:300]}", flush=True)
    if args.dry_run:
        return 0
    results["table_markdown"] = table(results)
    _write_atomic(args.out, results)
    print(results["table_markdown"])
    print(f"results: {args.out}")
    return 0 if all(r.get("eval_last_rc") == 0 for r in results["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
