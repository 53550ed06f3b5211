"""Inference of the bundle (``configs/inference.json`` over ``train.json``) on phantoms.

A tiny network (random weights, saved as the bundle's checkpoint layout ``{"model": ...}``)
runs on a folder of mixed inputs: 64 x 64 gray PNG phantoms, a larger RGB JPEG, a 2-D NIfTI
and a truncated PNG. Each readable image gets a heat map (NIfTI float32 at its own size), an
overlay PNG, a {0, 255} mask PNG and a CSV row; the broken file is a ``failed`` row.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_presets import TINY_INFER

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
TRAIN = str(CONFIGS / "train.json")
INFERENCE = str(CONFIGS / "inference.json")

#: tiny setting: 64 px working size and a 3-level 8-channel network
TINY = {**TINY_INFER, "inference_batch_size": 2}


def _workflow(**override):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(config_file=[TRAIN, INFERENCE], workflow_type="infer", logging_file=False, **override)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of 3 PNG phantoms, an RGB JPEG (96 x 80), a NIfTI and a truncated PNG."""
    import nibabel as nib
    from PIL import Image

    from artasyn.phantom import make_phantom

    folder = tmp_path_factory.mktemp("cxr")
    for i in range(3):
        Image.fromarray(make_phantom(64, diseased=i > 0, seed=i)["image"]).save(folder / f"ph{i}.png")
    big = make_phantom(96, diseased=True, seed=7)["image"][:, 8:88]  # 96 rows x 80 columns
    Image.fromarray(np.stack([big] * 3, -1)).save(folder / "rgb.jpg", quality=95)
    nib.save(
        nib.Nifti1Image(make_phantom(64, seed=9)["image"].astype(np.float32), np.eye(4)), str(folder / "vol.nii.gz")
    )
    data = (folder / "ph0.png").read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])
    return folder


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory):
    """A bundle root whose ``models/model.pt`` has the layout the training's CheckpointSaver writes."""
    root = tmp_path_factory.mktemp("bundle")
    wf = _workflow(bundle_root=str(root), **TINY)
    net = wf.parser.get_parsed_content("network_def")
    (root / "models").mkdir()
    torch.save({"model": net.state_dict()}, root / "models" / "model.pt")
    return root


def _run(bundle_root, out, **override):
    wf = _workflow(bundle_root=str(bundle_root), output_dir=str(out), **TINY, **override)
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(out / "anomaly_scores.csv") as f:
        return wf, list(csv.DictReader(f))


def test_inference_config_has_every_infer_property(bundle_root, inputs):
    wf = _workflow(bundle_root=str(bundle_root), input_dir=str(inputs), **TINY)
    wf.initialize()
    assert wf.check_properties() == []
    for key in (
        "preprocessing",
        "postprocessing",
        "inferer",
        "network_def",
        "bundle_root",
        "device",
        "evaluator",
        "run",
        "inference",
    ):
        assert key in wf.parser, key


def test_inference_imports_everything_train_imports():
    train = json.loads(Path(TRAIN).read_text())["imports"]
    inference = json.loads(Path(INFERENCE).read_text())["imports"]
    assert set(train) <= set(inference)


def test_folder_inference_writes_maps_masks_and_csv(bundle_root, inputs, tmp_path):
    import nibabel as nib
    from PIL import Image

    _, rows = _run(bundle_root, tmp_path / "out", input_dir=str(inputs))
    by_name = {Path(r["file"]).name: r for r in rows}
    assert set(by_name) == {"ph0.png", "ph1.png", "ph2.png", "rgb.jpg", "vol.nii.gz", "broken.png"}
    assert by_name["broken.png"]["status"].startswith("failed")
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 5
    for r in ok:
        assert float(r["score"]) >= 0 and 0 <= float(r["anomaly_area_fraction"]) <= 1
        assert r["lungs_found"] in {"both", "right", "left", "none"}
    out = tmp_path / "out"
    for stem, shape in {"ph1": (64, 64), "rgb": (96, 80), "vol": (64, 64)}.items():
        heat = nib.load(str(out / f"{stem}_heatmap.nii.gz"))
        assert heat.get_data_dtype() == np.float32 and heat.shape == shape
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (shape[1], shape[0])
        row = by_name[f"{stem}.png" if stem.startswith("ph") else {"rgb": "rgb.jpg", "vol": "vol.nii.gz"}[stem]]
        assert int(row["anomaly_area_px"]) == int((mask > 0).sum())
    assert not list(out.glob("*.tmp"))  # atomic writes leave nothing half-written


def test_heatmap_is_the_squared_error_and_mask_follows_tau(bundle_root, inputs, tmp_path):
    """Mask at tau is ``|x - r| >= max(0.03, tau * max|x - r|)``: a larger tau gives a smaller mask."""
    import nibabel as nib

    areas = {}
    for tau in (0.2, 0.8):
        _, rows = _run(bundle_root, tmp_path / f"t{tau}", input_files=[str(inputs / "ph1.png")], tau=tau)
        areas[tau] = int(rows[0]["anomaly_area_px"])
        heat = np.asarray(nib.load(str(tmp_path / f"t{tau}" / "ph1_heatmap.nii.gz")).dataobj)
        assert float(rows[0]["score"]) == pytest.approx(float(heat.mean()), rel=1e-3)  # 64 px: no resampling
    assert areas[0.8] <= areas[0.2]


def test_list_file_and_missing_file_are_reported_not_fatal(bundle_root, inputs, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{inputs / 'ph0.png'}\n{inputs / 'missing.png'}\n")
    _, rows = _run(bundle_root, tmp_path / "out", input_files=str(lst))
    status = {Path(r["file"]).name: r["status"] for r in rows}
    assert status["ph0.png"] == "ok" and status["missing.png"].startswith("failed: file not found")


def test_mask_in_lungs_keeps_the_mask_inside_the_pbtseg_lungs(bundle_root, inputs, tmp_path):
    _, free = _run(bundle_root, tmp_path / "a", input_files=[str(inputs / "ph2.png")])
    _, lungs = _run(bundle_root, tmp_path / "b", input_files=[str(inputs / "ph2.png")], mask_in_lungs=True)
    assert int(lungs[0]["anomaly_area_px"]) <= int(free[0]["anomaly_area_px"])


def test_missing_checkpoint_says_what_to_do(inputs, tmp_path):
    wf = _workflow(bundle_root=str(tmp_path), input_dir=str(inputs), **TINY)
    with pytest.raises(Exception) as info:
        wf.initialize()
    cause = info.value.__cause__ or info.value
    assert isinstance(cause, FileNotFoundError) and "train the bundle first" in str(cause)


def test_command_line_inference(bundle_root, inputs, tmp_path):
    """The README's command on phantoms: ``python -m monai.bundle run inference ...``."""
    over = []
    for k, v in TINY.items():
        over += [f"--{k}", json.dumps(v)]
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "inference",
            "--config_file",
            f"['{TRAIN}','{INFERENCE}']",
            "--bundle_root",
            str(bundle_root),
            "--input_dir",
            str(inputs),
            "--output_dir",
            str(out),
            *over,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "inference: 6 images, 5 written, 1 failed" in proc.stdout
    assert len(list(out.glob("*_heatmap.nii.gz"))) == 5 and (out / "anomaly_scores.csv").is_file()
