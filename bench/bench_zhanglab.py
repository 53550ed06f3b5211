#!/usr/bin/env python
"""Benchmark: ART-ASyn against no synthesis, its partial variants and the baselines on ZhangLab
(issue 11, item 3), every variant with the same budget.

The paper's comparison (seed Table S1, ZhangLab): AUC 0.6842 without synthesis, 0.8797 A_base,
0.7574 A_base + T_blur + T_cryst, 0.9350 A_final, 0.9103 AnatPaste. Here, one bundle run per
variant and seed, all with the same preset, seed, iteration cap and wall-clock training budget
(``max_train_seconds``), switched only by ``--variant`` (``none``, ``base``,
``base_blur_cryst``, ``final``, ``anatpaste``, ``cutpaste``, ``perlin``).

Data (``../shared/data`` or ``$ARTASYN_SHARED_DATA``, see its README; nothing is copied):

- training: ``zhanglab_train_normal`` (healthy only, one-class);
- evaluation: ``zhanglab_val`` (100 ``normal``, label 0; 100 ``pneumonia``, label 1), AP and
  AUC per image; the same set monitors training (the reported figures are those of the final
  EMA weights, ``model_final.pt``, not of a checkpoint chosen on it). The official ZhangLab
  test split stays apart (data README).
- trivial baselines on the same images, reported beside (``docs/method.md`` section 8):
  AUC / AP of the image mean, the central mean, the image standard deviation and the
  high-frequency energy (``bench/trivial_baselines.py``).

Usage::

    python bench/bench_zhanglab.py --dry-run  # write the datalist, print the commands
    python bench/bench_zhanglab.py --budget-min 20 --variants none final anatpaste cutpaste perlin
    python bench/bench_zhanglab.py --preset paper --budget-min 120 --seeds 0 1 2  # GPU

Writes ``bench/results/zhanglab.json`` atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_real import _images, _overrides, _run  # noqa: E402
from trivial_baselines import trivial_baselines  # noqa: E402

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
    """``training`` (healthy ZhangLab train images), ``validation`` = ``test`` (zhanglab_val)."""
    train = _images(data_root / "zhanglab_train_normal")
    normal = _images(data_root / "zhanglab_val" / "normal")
    pneumonia = _images(data_root / "zhanglab_val" / "pneumonia")
    if not train or not normal or not pneumonia:
        raise FileNotFoundError(f"ZhangLab data not found under {data_root} (zhanglab_train_normal, zhanglab_val)")
    test = [{"image": str(p), "label": 0} for p in normal] + [{"image": str(p), "label": 1} for p in pneumonia]
    return {
        "description": "bench_zhanglab: train on zhanglab_train_normal, evaluate on zhanglab_val (normal vs pneumonia)",
        "training": [{"image": str(p)} for p in train],
        "validation": test,
        "test": test,
        "counts": {"training": len(train), "val_normal": len(normal), "val_pneumonia": len(pneumonia)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--budget-min", type=float, default=15.0, help="training wall-clock budget per run, minutes")
    ap.add_argument("--preset", choices=["small", "paper"], default="small", help="small: bundle/configs/small.json")
    ap.add_argument("--max-iterations", type=int, default=100000, help="upper bound; the budget usually ends training")
    ap.add_argument("--iterations-per-epoch", type=int, default=100, help="validation interval, iterations")
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "results" / "zhanglab_work")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zhanglab.json")
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "JSON"), help="extra bundle override")
    ap.add_argument("--dry-run", action="store_true", help="write the datalist and print the commands only")
    args = ap.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    datalist = build_zhanglab_datalist(args.data_root)
    dl_path = args.workdir / "datalist.json"
    dl_path.write_text(json.dumps(datalist, indent=1))
    print(f"datalist {dl_path}: {datalist['counts']}", flush=True)

    configs = [str(CONFIGS / "train.json")] + ([str(CONFIGS / "small.json")] if args.preset == "small" else [])
    cfg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cfg_e = "[" + ",".join(f"'{c}'" for c in [*configs, str(CONFIGS / "evaluate.json")]) + "]"
    results = {
        "datalist": str(dl_path),
        "counts": datalist["counts"],
        "preset": args.preset,
        "budget_min_per_run": args.budget_min,
        "max_iterations": args.max_iterations,
        "evaluated_weights": "model_final.pt (EMA, end of budget)",
        "paper_table_s1_zhanglab_ap_auc": PAPER,
        "trivial_baselines": None if args.dry_run else trivial_baselines(datalist["test"]),
        "runs": {},
    }
    for variant in args.variants:
        for seed in args.seeds:
            name = f"{variant}_seed{seed}"
            root = args.workdir / name
            common = {
                "bundle_root": str(root),
                "cache_dir": str(args.workdir / "cache"),  # lung maps shared by every run
                "datalist_file": str(dl_path),
                "variant": variant,
                "seed": seed,
                **({"num_workers": args.num_workers} if args.num_workers is not None else {}),
                **{k: json.loads(v) for k, v in args.set},
            }
            train_over = {
                **common,
                "max_iterations": args.max_iterations,
                "iterations_per_epoch": args.iterations_per_epoch,
                "max_train_seconds": int(args.budget_min * 60),
            }
            train_cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", cfg]
            train_cmd += _overrides(train_over)
            eval_cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", cfg_e]
            eval_cmd += _overrides({**common, "ckpt_path": str(root / "models" / "model_final.pt")})
            if args.dry_run:
                print(" ".join(train_cmd), "\n", " ".join(eval_cmd), flush=True)
                continue
            rc, t_train = _run(train_cmd, args.workdir / f"{name}.train.log", timeout=args.budget_min * 60 + 1800)
            entry = {"variant": variant, "seed": seed, "train_rc": rc, "train_wall_s": round(t_train, 1)}
            if rc == 0:
                rc_e, t_eval = _run(eval_cmd, args.workdir / f"{name}.eval.log", timeout=3600)
                entry.update({"eval_rc": rc_e, "eval_wall_s": round(t_eval, 1)})
                mfile = root / "eval" / "metrics.json"
                if rc_e == 0 and mfile.is_file():
                    m = json.loads(mfile.read_text())
                    entry["metrics"] = m["metrics"]
                    entry["n_test_images"] = m["n_images"]
            results["runs"][name] = entry
            print(f"{name}: {json.dumps(entry.get('metrics', entry))}", flush=True)
    if args.dry_run:
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out)
    print(f"results: {args.out}")
    return 0 if all(r.get("eval_rc") == 0 for r in results["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
