#!/usr/bin/env python
"""One probe training of the bundle on ZhangLab, recorded as it ends.

Trains with ``train.json`` + ``cpu.json`` (or other presets) + overrides on a ``--dataset_dir``
root that holds ``train/healthy`` (``zhanglab_train_normal``) and ``val/{healthy,diseased}``
(``zhanglab_val``), as a user would; the validation after every epoch scores
``zhanglab_val`` with the EMA weights. From the training log it reads every epoch's val AUC /
AP; the last epoch's are those of ``model_final.pt`` (the last checkpoint), the best those of
``model.pt``. One entry (settings, seed, iterations, wall time, load average, AUC / AP last
and best, the curve) is added to ``bench/results/zhanglab_probes.json`` (atomic write).

Example::

    python bench/zhanglab_probe.py --name cpu_v1 --root /tmp/zl --set max_iterations 800
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))  # the bundle's own code, imported as ``scripts``

from scripts.utils import atomic_write  # noqa: E402

CONFIGS = REPO / "bundle" / "configs"
EPOCH_LINE = re.compile(r"\[epoch (\d+)\] AP=(\S+) AUC=(\S+)")


def make_root(data_root: Path, root: Path) -> Path:
    """``root/{train/healthy, val/healthy, val/diseased, test/...}`` symlinked to ZhangLab sets."""
    links = {
        "train/healthy": data_root / "zhanglab_train_normal",
        "val/healthy": data_root / "zhanglab_val" / "normal",
        "val/diseased": data_root / "zhanglab_val" / "pneumonia",
        "test/healthy": data_root / "zhanglab_val" / "normal",
        "test/diseased": data_root / "zhanglab_val" / "pneumonia",
    }
    for rel, target in links.items():
        if not target.is_dir():
            raise FileNotFoundError(f"{target} not found (see ../shared/data/README.md)")
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return root


def _cli(v) -> str:
    """A command-line value for ``python -m monai.bundle`` (fire): Python literals for booleans."""
    if isinstance(v, bool):
        return str(v)  # fire reads "false" as a string, which is truthy
    return v if isinstance(v, str) else json.dumps(v)


def parse_curve(log_text: str) -> list[dict]:
    """``[{"epoch", "ap", "auc"}]`` from the ``[epoch N] AP=... AUC=...`` lines of a training log."""

    def num(s):
        try:
            return float(s)
        except ValueError:
            return None

    return [{"epoch": int(e), "ap": num(a), "auc": num(u)} for e, a, u in EPOCH_LINE.findall(log_text)]


def write_json_atomic(path: Path, content) -> None:
    atomic_write(path, json.dumps(content, indent=2))


def record(out: Path, entry: dict) -> None:
    """Append ``entry`` to ``out``'s ``runs`` (re-read first: other probes may have written)."""
    data = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    data["runs"].append(entry)
    write_json_atomic(out, data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--root", type=Path, required=True, help="dataset root to create (symlinks)")
    ap.add_argument("--workdir", type=Path, required=True, help="models, eval, runs and the log of the run")
    ap.add_argument("--cache-dir", type=Path, required=True, help="shared lung cache")
    ap.add_argument("--presets", nargs="+", default=["cpu.json"])
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "JSON"))
    ap.add_argument("--note", default="")
    ap.add_argument(
        "--evaluate",
        nargs="*",
        default=[
            "model_final.pt",
            'model_final.pt;score_map_mode="positive";score_map_sigma=2',
            "model.pt",
            'model.pt;score_map_mode="positive";score_map_sigma=2',
        ],
        metavar="CKPT[;ID=JSON...]",
        help="after training, `run evaluating` (evaluate.json) on <root>/test = zhanglab_val for each",
    )
    ap.add_argument("--eval-only", action="store_true", help="no training: read the log, evaluate, record")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zhanglab_probes.json")
    args = ap.parse_args(argv)

    root = make_root(args.data_root, args.root)
    configs = [str(CONFIGS / "train.json")] + [str(CONFIGS / p) for p in args.presets]
    cfg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    w = args.workdir
    over = {
        "ckpt_dir": str(w / "models"),
        "output_dir": str(w / "eval"),
        "runs_dir": str(w / "runs"),
        "cache_dir": str(args.cache_dir),
        "dataset_dir": str(root),
    }
    over.update({k: json.loads(v) for k, v in args.set})
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", cfg]
    for k, v in over.items():
        cmd += [f"--{k}", _cli(v)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = args.workdir / "train.log"
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    if args.eval_only:
        rc = 0
    else:
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    curve = parse_curve(text)
    scored = [c for c in curve if c["auc"] is not None]
    best = max(scored, key=lambda c: c["auc"]) if scored else None
    last = curve[-1] if curve else None
    entry = {
        "name": args.name,
        "presets": args.presets,
        "overrides": {k: json.loads(v) for k, v in args.set},
        "note": args.note,
        "rc": rc,
        "wall_s": round(wall, 1),
        "load_avg_start": [round(x, 2) for x in load0],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "epochs_validated": len(curve),
        "last": last,
        "best": best,
        "curve": curve,
        "log": str(log),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    entry["evaluations"] = []
    cfg_e = "[" + ",".join(f"'{c}'" for c in [*configs, str(CONFIGS / "evaluate.json")]) + "]"
    for spec in args.evaluate if rc == 0 else []:
        ckpt, *pairs = spec.split(";")
        extra = {k: json.loads(v) for k, v in (x.split("=", 1) for x in pairs)}
        tag = "_".join(f"{k}-{v}" for k, v in extra.items())
        out_dir = w / f"eval_{Path(ckpt).stem}{'_' + tag if tag else ''}"
        e_over = {**over, "output_dir": str(out_dir), "ckpt_path": str(w / "models" / ckpt), **extra}
        e_cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", cfg_e]
        for k, v in e_over.items():
            e_cmd += [f"--{k}", _cli(v)]
        t1 = time.perf_counter()
        with open(w / f"{out_dir.name}.log", "w") as f:
            rc_e = subprocess.run(e_cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
        mfile = out_dir / "metrics.json"
        m = json.loads(mfile.read_text()) if rc_e == 0 and mfile.is_file() else {}
        met = m.get("metrics", {})
        entry["evaluations"].append(
            {
                "checkpoint": ckpt,
                "overrides": extra,
                "rc": rc_e,
                "wall_s": round(time.perf_counter() - t1, 1),
                "auc": met.get("auc"),
                "ap": met.get("ap"),
                "n_images": m.get("n_images"),
            }
        )
    record(args.out, entry)
    print(json.dumps({k: entry[k] for k in ("name", "rc", "wall_s", "last", "best")}), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
