"""Copy the bundle into a MONAI Label app, with its weights (and the preset they were trained with).

MONAI Label's bundle app (``monailabel.tasks.infer.bundle.BundleInferTask``) reads
``<bundle>/configs/inference.json`` alone, ``configs/metadata.json`` (its first output,
``anomaly_mask``, names the label ``opacity``), puts the bundle folder on ``sys.path`` (so ``scripts``
imports) and loads ``models/model.pt`` (key ``model``: the EMA weights). ``inference.json``
stands alone and builds the network the checkpoint describes (its ``config`` entry,
:mod:`scripts.checkpoint_config`), so the bundle folder itself is such a bundle once its
``models/model.pt`` is there, whatever preset trained it: no config merging is needed. This
script only packages a copy:

- ``configs/`` (``inference.json``, ``metadata.json``, ``logging.conf``), ``scripts/`` and
  ``docs/`` of the bundle, and the checkpoint as ``models/model.pt``;
- with ``--preset`` (e.g. ``bundle/configs/small.json``), the preset's ids that
  ``inference.json`` has (network size, ``spatial_size``, ...) are written into the copy's
  ``inference.json``, since MONAI Label reads no list of config files; training-only ids are
  skipped (listed in the log). Only needed for a checkpoint without ``config`` (saved before
  checkpoints described themselves); with one, the ids written are checked against it.

The folder name must not contain ``classification``, ``detection``, ``deepedit`` or
``deepgrow``: MONAI Label takes the task type from it (anything else is a segmentation task).

DICOM studies: MONAI Label's local datastore lists the files of ``--studies`` whose names match
its setting ``MONAI_LABEL_DATASTORE_FILE_EXT`` (0.8.5: ``*.nii.gz``, ``*.nii``, ``*.nrrd``,
``*.jpg``, ``*.png``, ``*.tif``, ``*.svs``, ``*.xml``), which has no ``*.dcm``: a ``.dcm``
radiograph would be left out of the datastore without a word. Start the server with that
setting extended (:data:`DATASTORE_FILE_EXT`, as an environment variable:
:func:`datastore_env`; this script prints the line); the bundle's own loading chain then reads
the ``.dcm`` study as every workflow does (:mod:`scripts.dicom`). DICOM files without the
``.dcm`` suffix are not listed by the datastore: name them ``*.dcm``.

Usage (from the repository root)::

    python bundle/scripts/monailabel_bundle.py --ckpt bundle/models/model.pt \\
        --out ~/apps/monaibundle/model/artasyn_cxr_anomaly_segmentation [--preset bundle/configs/small.json]

then see ``bundle/docs/deployment.md`` ("MONAI Label").
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1]
if str(BUNDLE) not in sys.path:  # run as a script: ``scripts`` is the bundle's package
    sys.path.insert(0, str(BUNDLE))

from scripts.checkpoint import load_checkpoint  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402

CONFIGS = BUNDLE / "configs"
#: MONAI Label 0.8.5's default ``MONAI_LABEL_DATASTORE_FILE_EXT`` (``monailabel/config.py``) ...
MONAI_LABEL_DEFAULT_FILE_EXT = ("*.nii.gz", "*.nii", "*.nrrd", "*.jpg", "*.png", "*.tif", "*.svs", "*.xml")
#: ... and the one to start the server with, so that DICOM radiographs are studies too
DATASTORE_FILE_EXT = (*MONAI_LABEL_DEFAULT_FILE_EXT, "*.dcm")
#: what MONAI Label's task type detection must not find in the folder name
_OTHER_TASKS = ("classification", "detection", "deepedit", "deepgrow")

logger = logging.getLogger("artasyn.bundle")


def datastore_env() -> dict[str, str]:
    """The environment that makes MONAI Label's local datastore list ``*.dcm`` studies too.

    ``MONAI_LABEL_DATASTORE_FILE_EXT`` is a pydantic setting: a JSON list read from the
    environment (or a ``.env`` file in the server's working folder).
    """
    return {"MONAI_LABEL_DATASTORE_FILE_EXT": json.dumps(list(DATASTORE_FILE_EXT))}


def datastore_export_line() -> str:
    """The shell line to run before ``monailabel start_server`` (see :func:`datastore_env`)."""
    return " ".join(f"export {k}='{v}'" for k, v in datastore_env().items())


def inference_config(presets: list[str] | tuple[str, ...] = (), overrides: dict | None = None) -> dict:
    """``inference.json`` with the ids of ``presets`` (files) and ``overrides`` that it defines applied."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    changes: dict = {}
    for preset in presets:
        changes.update(ConfigParser.load_config_file(str(preset)))
    changes.update(overrides or {})
    skipped = []
    for key, value in changes.items():
        if key in parser:
            parser[key] = value
        else:
            skipped.append(key)
    if skipped:
        logger.info("not in inference.json (training only), skipped: %s", ", ".join(sorted(skipped)))
    config = parser.get()
    if not config.get("_meta_"):
        config.pop("_meta_", None)  # ConfigParser's empty metadata slot is no part of the file
    return config


def make_monailabel_bundle(
    out: str | Path,
    ckpt: str | Path | None = None,
    presets: list[str] | tuple[str, ...] = (),
    overrides: dict | None = None,
) -> Path:
    """Write a copy of the bundle to ``out`` (configs, scripts, docs; ``models/model.pt`` from ``ckpt``).

    ``ckpt`` is checked first (:func:`scripts.checkpoint.load_checkpoint`: it must be readable and
    hold the ``model`` weights): a missing, empty or damaged checkpoint is refused with an error
    naming it, before anything is written. Every file is written atomically.
    """
    out = Path(out).expanduser()
    if any(word in out.name.lower() for word in _OTHER_TASKS):
        raise ValueError(
            f"MONAI Label reads the task type from the folder name; {out.name!r} names another task "
            f"({', '.join(_OTHER_TASKS)}): choose e.g. 'artasyn_cxr_anomaly_segmentation'"
        )
    if ckpt is not None:
        load_checkpoint(ckpt, keys=("model",))  # refuses a missing, empty or unreadable checkpoint, naming it
    out.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sub in ("scripts", "docs"):
        shutil.copytree(BUNDLE / sub, out / sub, ignore=ignore, dirs_exist_ok=True)
    (out / "configs").mkdir(exist_ok=True)
    for name in ("metadata.json", "logging.conf"):
        atomic_write(out / "configs" / name, (CONFIGS / name).read_bytes())
    atomic_write(out / "configs" / "inference.json", json.dumps(inference_config(presets, overrides), indent=4))
    if ckpt is not None:
        with open(ckpt, "rb") as src:
            atomic_write(out / "models" / "model.pt", lambda f: shutil.copyfileobj(src, f))
    elif not (out / "models" / "model.pt").is_file():
        logger.warning("no checkpoint given and none in %s: MONAI Label will not load this bundle", out / "models")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", required=True, help="bundle folder to write (e.g. <app>/model/artasyn_cxr_anomaly_segmentation)"
    )
    ap.add_argument(
        "--ckpt", required=True, help="checkpoint to copy to models/model.pt (the training's models/model.pt)"
    )
    ap.add_argument(
        "--preset",
        action="append",
        default=[],
        help="preset a checkpoint without 'config' was trained with (e.g. small.json); not needed otherwise",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    out = make_monailabel_bundle(args.out, args.ckpt, args.preset)
    print(f"MONAI Label bundle written to {out}")
    print(f"for DICOM (*.dcm) studies, start the server after: {datastore_export_line()}")


if __name__ == "__main__":
    main()
