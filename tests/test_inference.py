"""Inference of the bundle (``configs/inference.json``, which stands alone) on phantoms.

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
from bundle_presets import NO_CHECKPOINT, TINY_INFER, TINY_NET, cli_overrides, outputs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
TRAIN = str(CONFIGS / "train.json")
INFERENCE = str(CONFIGS / "inference.json")

#: tiny setting: 64 px working size and a 3-level 8-channel network
TINY = {**TINY_INFER, "inference_batch_size": 2}


def _workflow(**override):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(config_file=INFERENCE, workflow_type="infer", logging_file=False, **override)


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
def ckpt(tmp_path_factory):
    """A checkpoint with the layout the training's CheckpointSaver writes (``model`` = the weights)."""
    path = tmp_path_factory.mktemp("models") / "model.pt"
    wf = _workflow(ckpt_path=NO_CHECKPOINT, **TINY)
    net = wf.parser.get_parsed_content("network_def")
    torch.save({"model": net.state_dict()}, path)
    return path


def _run(ckpt, out, **override):
    wf = _workflow(ckpt_path=str(ckpt), output_dir=str(out), **TINY, **override)
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(out / "anomaly_scores.csv") as f:
        return wf, list(csv.DictReader(f))


def test_inference_config_alone_has_every_infer_property(ckpt, inputs):
    """``inference.json`` by itself (no train.json), as MONAI Label and deployment load it."""
    wf = _workflow(ckpt_path=str(ckpt), input_dir=str(inputs))
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


def test_inference_config_stands_alone():
    """Every id that inference.json refers to is defined in it; the paper's network and size by default."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(INFERENCE)
    config = parser.get()
    assert config["initialize"][0] == "$sys.path.append(@bundle_root)"
    train = json.loads(Path(TRAIN).read_text())
    # a checkpoint that does not describe its training gets train.json's network and settings
    from scripts.checkpoint_config import SETTINGS

    assert config["default_settings"] == {k: train[k] for k in SETTINGS}
    assert all(v is None for k, v in config["network_def"].items() if not k.startswith("_") and k != "ckpt_path")
    parser["ckpt_path"] = "/nonexistent/model.pt"
    net = parser.get_parsed_content("network_def")
    paper = ConfigParser(train).get_parsed_content("network_def")
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in paper.state_dict().items()}
    assert parser.get_parsed_content("spatial_size") == train["spatial_size"]
    text = Path(INFERENCE).read_text()
    for ref in set(__import__("re").findall(r"@([A-Za-z_][A-Za-z0-9_#]*)", text)):
        assert ref in parser, f"inference.json refers to @{ref}, which it does not define"


def test_metadata_describes_the_network_output_and_the_inference_outputs():
    """``pred`` is the network's reconstruction (MONAI's convention, checked by ``verify_net_in_out``);
    the inference's mask comes first, since MONAI Label takes its label names from the first output."""
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    outputs = meta["network_data_format"]["outputs"]
    first_name, first = next(iter(outputs.items()))  # what MONAI Label's BundleInferTask reads
    assert first_name == "anomaly_mask" and first["channel_def"] == {"0": "background", "1": "opacity"}
    assert first["format"] == "segmentation" and first["value_range"] == [0, 1]
    pred = outputs["pred"]
    assert (pred["format"], pred["num_channels"], pred["dtype"], pred["value_range"]) == (
        "magnitude",
        1,
        "float32",
        [0, 1],
    )
    assert outputs["anomaly_map"]["dtype"] == "float32"
    for spec in outputs.values():
        for key in ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data"):
            assert key in spec, key


def test_monai_verify_net_in_out_accepts_the_metadata():
    """MONAI's own check: network_def on the metadata's input gives the metadata's ``pred`` (channels, dtype)."""
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=INFERENCE,
        device="cpu",
        **{"_meta_#network_data_format#inputs#image#spatial_shape": [64, 64]},
        **TINY_NET,
        ckpt_path=NO_CHECKPOINT,
    )


def test_folder_inference_writes_maps_masks_and_csv(ckpt, inputs, tmp_path):
    import nibabel as nib
    from PIL import Image

    _, rows = _run(ckpt, tmp_path / "out", input_dir=str(inputs))
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
        heat = nib.load(str(out / f"{stem}.artasyn-heatmap.nii.gz"))
        assert heat.get_data_dtype() == np.float32 and heat.shape == shape
        mask = np.asarray(Image.open(out / f"{stem}.artasyn-mask.png"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        overlay = Image.open(out / f"{stem}.artasyn-overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (shape[1], shape[0])
        row = by_name[f"{stem}.png" if stem.startswith("ph") else {"rgb": "rgb.jpg", "vol": "vol.nii.gz"}[stem]]
        assert int(row["anomaly_area_px"]) == int((mask > 0).sum())
    assert not list(out.glob("*.tmp"))  # atomic writes leave nothing half-written


def test_heatmap_is_the_squared_error_and_mask_follows_tau(ckpt, inputs, tmp_path):
    """Mask at tau is ``|x - r| >= max(0.03, tau * max|x - r|)``: a larger tau gives a smaller mask."""
    import nibabel as nib

    areas = {}
    for tau in (0.2, 0.8):
        _, rows = _run(ckpt, tmp_path / f"t{tau}", input_files=[str(inputs / "ph1.png")], tau=tau)
        areas[tau] = int(rows[0]["anomaly_area_px"])
        heat = np.asarray(nib.load(str(tmp_path / f"t{tau}" / "ph1.artasyn-heatmap.nii.gz")).dataobj)
        assert float(rows[0]["score"]) == pytest.approx(float(heat.mean()), rel=1e-3)  # 64 px: no resampling
    assert areas[0.8] <= areas[0.2]


def test_list_file_and_missing_file_are_reported_not_fatal(ckpt, inputs, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{inputs / 'ph0.png'}\n{inputs / 'missing.png'}\n")
    _, rows = _run(ckpt, tmp_path / "out", input_files=str(lst))
    status = {Path(r["file"]).name: r["status"] for r in rows}
    assert status["ph0.png"] == "ok" and status["missing.png"].startswith("failed: file not found")


def test_mask_in_lungs_keeps_the_mask_inside_the_pbtseg_lungs(ckpt, inputs, tmp_path):
    _, free = _run(ckpt, tmp_path / "a", input_files=[str(inputs / "ph2.png")])
    _, lungs = _run(ckpt, tmp_path / "b", input_files=[str(inputs / "ph2.png")], mask_in_lungs=True)
    assert int(lungs[0]["anomaly_area_px"]) <= int(free[0]["anomaly_area_px"])


def test_missing_checkpoint_says_what_to_do(inputs, tmp_path):
    wf = _workflow(ckpt_path=str(tmp_path / "none.pt"), input_dir=str(inputs), **TINY)
    with pytest.raises(Exception) as info:
        wf.initialize()
    cause = info.value
    while cause.__cause__ is not None and not isinstance(cause, FileNotFoundError):
        cause = cause.__cause__
    assert isinstance(cause, FileNotFoundError) and "train the bundle first" in str(cause)


def test_command_line_inference(ckpt, inputs, tmp_path):
    """The documented command, inference.json alone: ``python -m monai.bundle run --config_file ...``."""
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "bundle/configs/inference.json",
            "--input_dir",
            str(inputs),
            "--ckpt_path",
            str(ckpt),
            "--output_dir",
            str(out),
            *cli_overrides(TINY),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "inference: 6 images, 5 written, 1 failed" in proc.stdout
    assert len(list(out.glob("*.artasyn-heatmap.nii.gz"))) == 5 and (out / "anomaly_scores.csv").is_file()


def test_12bit_png_scores_the_same_in_evaluation_and_inference(ckpt, tmp_path):
    """One 12-bit radiograph in a 16-bit PNG: ``run evaluating`` and ``run inference`` give one score."""
    from PIL import Image

    from artasyn.phantom import make_phantom

    gray = make_phantom(96, diseased=True, seed=5)["image"][:, 8:88]
    p12 = tmp_path / "cxr12.png"
    Image.fromarray((gray.astype(np.uint32) * 4095 // 255).astype(np.uint16)).save(p12)
    p8 = tmp_path / "cxr8.png"
    Image.fromarray(make_phantom(96, seed=6)["image"]).save(p8)
    items = [{"image": str(p12), "label": 1}, {"image": str(p8), "label": 0}]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": str(p8)}], "validation": items, "test": items}))
    from monai.bundle import ConfigWorkflow

    evaluate = ConfigWorkflow(
        config_file=[TRAIN, str(CONFIGS / "evaluate.json")],
        workflow_type="infer",
        logging_file=False,
        datalist_file=str(datalist),
        ckpt_path=str(ckpt),
        **outputs(tmp_path / "eval_run"),
        **TINY,
    )
    evaluate.initialize()
    evaluate.run()
    evaluate.finalize()
    with open(tmp_path / "eval_run" / "eval" / "scores.csv") as f:
        eval_scores = {Path(r["filename"]).name: float(r["score"]) for r in csv.DictReader(f)}
    _, rows = _run(ckpt, tmp_path / "infer", input_files=[str(p12), str(p8)])
    infer_scores = {Path(r["file"]).name: float(r["score"]) for r in rows}
    assert {r["lungs_found"] for r in rows} == {"both"}
    for name in ("cxr12.png", "cxr8.png"):
        assert abs(eval_scores[name] - infer_scores[name]) <= 1e-6, (name, eval_scores[name], infer_scores[name])
