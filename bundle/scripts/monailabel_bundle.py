"""Make a MONAI Label ready copy of the bundle: one self-contained ``configs/inference.json``.

MONAI Label's bundle app (``monailabel.tasks.infer.bundle.BundleInferTask``) reads only
``<bundle>/configs/inference.json`` (no list of files to merge) and ``configs/metadata.json``,
and loads ``models/model.pt`` (key ``model``: the EMA weights) or ``models/model.ts``. Our
``inference.json`` holds only overrides of ``train.json``; this script merges ``train.json``,
optional presets (e.g. ``small.json``) and ``inference.json`` into one file and copies the
metadata and the weights, into a folder whose name ends in ``_segmentation`` (MONAI Label
takes the task type from the folder name).

Usage (from the repository root)::

    python bundle/scripts/monailabel_bundle.py --ckpt bundle/models/model.pt \\
        --out ~/monailabel_apps/bundles/artasyn_cxr_anomaly_segmentation [--preset bundle/configs/small.json]

then see ``bundle/docs/deployment.md`` ("MONAI Label").
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def merged_inference_config(presets: list[str] | tuple[str, ...] = (), overrides: dict | None = None) -> dict:
    """``train.json`` + ``presets`` + ``inference.json`` (+ ``overrides``, ids as on the command line) as one dict."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), *[str(p) for p in presets], str(CONFIGS / "inference.json")])
    for key, value in (overrides or {}).items():
        parser[key] = value
    config = parser.get()
    config.pop("training", None)  # a training alias has no place in an inference-only bundle
    # MONAI Label writes the label with ITK, which expects MONAI's default (column-first) layout
    # of a 2-D image and unsigned integers for a PNG: our rows-first H x W mask is transposed
    config["postprocessing"]["transforms"] += [
        {"_target_": "SqueezeDimd", "keys": "pred", "dim": 0},
        {"_target_": "Transposed", "keys": "pred", "indices": [1, 0]},
        {"_target_": "CastToTyped", "keys": "pred", "dtype": "$numpy.uint8"},
    ]
    config.setdefault("imports", []).append("$import numpy")
    return config


def make_monailabel_bundle(
    out: str | Path,
    ckpt: str | Path | None = None,
    presets: list[str] | tuple[str, ...] = (),
    overrides: dict | None = None,
) -> Path:
    """Write ``out/configs/{inference,metadata}.json`` and ``out/models/model.pt`` (a copy of ``ckpt``)."""
    out = Path(out).expanduser()
    if not out.name.endswith("_segmentation"):
        raise ValueError(
            f"MONAI Label reads the task type from the folder name; it must end in '_segmentation', got {out.name!r}"
        )
    (out / "configs").mkdir(parents=True, exist_ok=True)
    config = merged_inference_config(presets, overrides)
    (out / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    shutil.copy2(CONFIGS / "metadata.json", out / "configs" / "metadata.json")
    shutil.copy2(CONFIGS / "logging.conf", out / "configs" / "logging.conf")
    if ckpt is not None:
        (out / "models").mkdir(exist_ok=True)
        shutil.copy2(ckpt, out / "models" / "model.pt")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="bundle folder to write; its name must end in _segmentation")
    ap.add_argument("--ckpt", help="checkpoint to copy to models/model.pt (the training's models/model.pt)")
    ap.add_argument(
        "--preset", action="append", default=[], help="extra config merged after train.json (e.g. small.json)"
    )
    args = ap.parse_args()
    out = make_monailabel_bundle(args.out, args.ckpt, args.preset)
    print(f"MONAI Label bundle written to {out}")


if __name__ == "__main__":
    main()
