#!/usr/bin/env python
"""Benchmark: train the bundle on real chest X-rays and measure AP, AUC and zero-shot Dice.

Data (``../shared/data``, see its README; nothing is copied into the project):

- training: ``covidquex_normal_lung/images``, all but the held-apart fifth;
- held apart (deterministic): of the healthy images sorted by file stem, every fifth
  (positions 4, 9, 14, ...), 20 %; they are the healthy half of the test set;
- test, diseased: ``covidquex_noncovid_lung/images`` (no lesion masks: AP / AUC only) and
  ``covidquex_covid_infection/images`` with their infection masks
  ``covidquex_covid_infection/masks`` (AP / AUC, and zero-shot Dice: never trained on);
- validation during training (monitoring only): a fixed subset of the test items; the
  reported numbers come from the *final* EMA weights (``model_final.pt``), not from a
  checkpoint chosen on validation, so the subset does not leak into them.

For each variant (default ``none`` and ``final``) the script writes a MONAI datalist JSON,
runs ``python -m monai.bundle run training`` with the chosen preset and a wall-clock budget
(``max_train_seconds``), then ``run evaluating`` on the test set, and collects
``metrics.json``. Everything goes through the bundle's config overrides.

Example::

    python bench/bench_train_real.py --budget-min 20 --out bench/results/train_real.json
    python bench/bench_train_real.py --preset paper --budget-min 60 --variants final  # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))  # the bundle's own code, imported as ``scripts``

from scripts.overrides import unknown_ids  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402

CONFIGS = REPO / "bundle" / "configs"
SUFFIXES = (".png", ".jpg", ".jpeg")


def machine_info() -> dict:
    """The CPU a benchmark ran on: its model, cores, and whether it runs bfloat16 natively
    (``cpu.json``'s ``cpu_bf16`` trains in float32 where it does not, more slowly)."""
    from scripts.training import cpu_has_native_bf16

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux
        pass
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "cpu_native_bf16": cpu_has_native_bf16()}


def _images(folder: Path) -> list[Path]:
    return (
        sorted((p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES), key=lambda p: p.stem)
        if folder.is_dir()
        else []
    )


def build_real_datalist(data_root: Path, holdout_every: int = 5, n_val: int = 48) -> dict:
    """The datalist (``training``, ``validation``, ``test``) described in the module docstring."""
    normal = _images(data_root / "covidquex_normal_lung" / "images")
    noncovid = _images(data_root / "covidquex_noncovid_lung" / "images")
    covid = _images(data_root / "covidquex_covid_infection" / "images")
    if not normal or not (noncovid or covid):
        raise FileNotFoundError(f"real data not found under {data_root} (covidquex_* sets)")
    train = [p for i, p in enumerate(normal) if i % holdout_every != holdout_every - 1]
    held = [p for i, p in enumerate(normal) if i % holdout_every == holdout_every - 1]
    masks = data_root / "covidquex_covid_infection" / "masks"
    test = [{"image": str(p), "label": 0} for p in held]
    test += [{"image": str(p), "label": 1} for p in noncovid]
    for p in covid:
        m = masks / f"{p.stem}.png"
        test.append({"image": str(p), "label": 1, **({"mask": str(m)} if m.is_file() else {})})
    # monitoring subset: evenly spread over the three groups
    groups = [
        [t for t in test if t["label"] == 0],
        [t for t in test if t["label"] == 1 and "mask" not in t],
        [t for t in test if "mask" in t],
    ]
    val = []
    for g in groups:
        k = max(1, n_val // 3) if g else 0
        step = max(1, len(g) // k) if k else 1
        val += g[::step][:k]
    return {
        "description": (
            "bench_train_real: covidquex normal (80 % train, every 5th held apart) vs noncovid + covid infection"
        ),
        "training": [{"image": str(p)} for p in train],
        "validation": val,
        "test": test,
        "counts": {
            "training": len(train),
            "held_apart_healthy": len(held),
            "noncovid": len(noncovid),
            "covid_infection": len(covid),
        },
    }


def _overrides(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        # fire (the bundle's command line) reads "false" as a string, which is truthy: booleans as Python literals
        out += [f"--{k}", str(v) if isinstance(v, bool) else json.dumps(v) if not isinstance(v, str) else v]
    return out


def refuse_unknown_ids(configs, overrides: dict) -> None:
    """A ``--set`` id that no config defines would be ignored by the training: refuse it before it starts."""
    unknown = unknown_ids(configs, overrides)
    if unknown:
        names = "; ".join(f"{k} (nearest: {', '.join(v) or 'none'})" for k, v in unknown.items())
        files = [Path(c).name for c in configs]
        raise SystemExit(f"--set names no setting of {files}, so the training would ignore it: {names}")


def _run(cmd: list[str], log: Path, timeout: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument(
        "--variants", nargs="+", default=["none", "final"], choices=["none", "base", "base_blur_cryst", "final"]
    )
    ap.add_argument("--budget-min", type=float, default=15.0, help="training wall-clock budget per variant, minutes")
    ap.add_argument("--preset", choices=["small", "paper"], default="small", help="small: bundle/configs/small.json")
    ap.add_argument("--max-iterations", type=int, default=100000, help="upper bound; the budget usually ends training")
    ap.add_argument("--iterations-per-epoch", type=int, default=100, help="validation interval, iterations")
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "results" / "train_real_work")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_real.json")
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "JSON"), help="extra bundle override")
    args = ap.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    datalist = build_real_datalist(args.data_root)
    dl_path = args.workdir / "datalist.json"
    atomic_write(dl_path, json.dumps(datalist, indent=1))
    print(f"datalist {dl_path}: {datalist['counts']}", flush=True)

    configs = [str(CONFIGS / "train.json")] + ([str(CONFIGS / "small.json")] if args.preset == "small" else [])
    refuse_unknown_ids(configs, {k: json.loads(v) for k, v in args.set})
    results = {
        "datalist": str(dl_path),
        "counts": datalist["counts"],
        "preset": args.preset,
        "budget_min": args.budget_min,
        "split": "every 5th healthy image by sorted stem held apart",
        "evaluated_weights": "model_final.pt (EMA, end of budget)",
        "variants": {},
    }
    for variant in args.variants:
        root = args.workdir / variant
        common = {
            "bundle_root": str(REPO / "bundle"),  # where configs/ and scripts/ are; outputs go under root
            "ckpt_dir": str(root / "models"),
            "output_dir": str(root / "eval"),
            "runs_dir": str(root / "runs"),
            "cache_dir": str(args.workdir / "cache"),  # lung maps shared by the variants
            "datalist_file": str(dl_path),
            "variant": variant,
            **({"num_workers": args.num_workers} if args.num_workers is not None else {}),
            **{k: json.loads(v) for k, v in args.set},
        }
        train_over = {
            **common,
            "max_iterations": args.max_iterations,
            "iterations_per_epoch": args.iterations_per_epoch,
            "max_train_seconds": int(args.budget_min * 60),
        }
        cfg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
        rc, t_train = _run(
            [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", cfg, *_overrides(train_over)],
            args.workdir / f"{variant}.train.log",
            timeout=args.budget_min * 60 + 1800,
        )
        entry = {"train_rc": rc, "train_wall_s": round(t_train, 1)}
        if rc == 0:
            cfg_e = "[" + ",".join(f"'{c}'" for c in [*configs, str(CONFIGS / "evaluate.json")]) + "]"
            rc_e, t_eval = _run(
                [
                    sys.executable,
                    "-m",
                    "monai.bundle",
                    "run",
                    "evaluating",
                    "--config_file",
                    cfg_e,
                    *_overrides({**common, "ckpt_path": str(root / "models" / "model_final.pt")}),
                ],
                args.workdir / f"{variant}.eval.log",
                timeout=3600,
            )
            entry.update({"eval_rc": rc_e, "eval_wall_s": round(t_eval, 1)})
            mfile = root / "eval" / "metrics.json"
            if rc_e == 0 and mfile.is_file():
                m = json.loads(mfile.read_text())
                entry["metrics"] = m["metrics"]
                entry["n_test_images"] = m["n_images"]
            val = root / "eval" / "training" / "val_metrics.json"
            if val.is_file():
                entry["last_validation"] = json.loads(val.read_text())
        results["variants"][variant] = entry
        print(f"{variant}: {json.dumps(entry.get('metrics', entry))}", flush=True)

    atomic_write(args.out, json.dumps(results, indent=2))
    print(f"results: {args.out}")
    return 0 if all(v.get("eval_rc") == 0 for v in results["variants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
