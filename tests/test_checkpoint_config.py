"""Checkpoints that describe themselves (``scripts.checkpoint_config``): any preset's checkpoint served.

A ``cpu.json`` checkpoint (its own network: 8 channels, 4 levels; 128 px; the positive map
with sigma 3) is trained for two iterations on 128 px phantoms; ``inference.json`` alone (as
MONAI Label and ``ckpt_export`` read it) then serves it, a preset after ``inference.json``
composes, a preset that disagrees is named with both values, and a bare state dict loads.
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
from bundle_presets import outputs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
TRAIN, INFERENCE, EVALUATE = (str(CONFIGS / n) for n in ("train.json", "inference.json", "evaluate.json"))
#: the presets of train.json (every other JSON of bundle/configs)
NOT_PRESETS = {"train.json", "inference.json", "evaluate.json", "metadata.json", "multi_gpu_train.json"}
PRESETS = sorted(p.name for p in CONFIGS.glob("*.json") if p.name not in NOT_PRESETS)

#: a short cpu.json training on few phantoms (its network and settings unchanged)
SHORT = {
    "max_iterations": 2,
    "iterations_per_epoch": 2,
    "max_train_items": 4,
    "max_val_items": 8,
    "batch_size": 2,
    "val_batch_size": 8,
    "num_workers": 0,
}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _workflow(config_file, workflow_type="infer", **override):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(config_file=config_file, workflow_type=workflow_type, logging_file=False, **override)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """``[train.json, cpu.json]`` for two iterations: (root, checkpoint path)."""
    root = tmp_path_factory.mktemp("cpu_run")
    wf = _workflow([TRAIN, str(CONFIGS / "cpu.json")], workflow_type="train", **outputs(root), **SHORT)
    n = torch.get_num_threads()
    try:
        wf.initialize()
        wf.run()
        wf.finalize()
    finally:
        torch.set_num_threads(n)
    return root, root / "models" / "model.pt"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from PIL import Image

    from artasyn.phantom import make_phantom

    folder = tmp_path_factory.mktemp("cxr")
    for i in range(2):
        Image.fromarray(make_phantom(96, diseased=i > 0, seed=20 + i)["image"]).save(folder / f"p{i}.png")
    return folder


def _infer(config_file, ckpt, inputs, out, **override):
    wf = _workflow(
        config_file, ckpt_path=str(ckpt), input_dir=str(inputs), output_dir=str(out), num_workers=0, **override
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(out / "anomaly_scores.csv") as f:
        return wf, list(csv.DictReader(f))


def test_training_checkpoints_describe_their_network_and_settings(cpu_run):
    root, _ = cpu_run
    for name in ("model.pt", "last.pt", "model_final.pt"):
        config = torch.load(root / "models" / name, map_location="cpu", weights_only=True)["config"]
        assert config["network"] == {
            "target": "artasyn.model.networks.AnomalyUNet",
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "channels": 8,
            "channel_mult": [1, 2, 2, 4],
            "num_res_blocks": 1,
            "attention_downsample": [8],
            "num_heads": 1,
            "dropout": 0.1,
            "norm": "batch",
            "resblock_updown": True,
        }, name
        assert (config["spatial_size"], config["pbtseg_size"], config["pbtseg_mode"]) == ([128, 128], 256, "paper")
        assert (config["score_map_mode"], config["score_map_sigma"], config["score_map_intensity"]) == (
            "positive",
            3.0,
            0.0,
        )
        assert (config["score_in_lungs"], config["mask_in_lungs"], config["variant"]) == (False, False, "final")
        assert config["intensity_percentiles"] == _cpu_percentiles()
        assert config["score_input_sigma"] == _cpu_input_sigma()
        assert config["lung_box_margin"] == json.loads((CONFIGS / "cpu.json").read_text()).get("lung_box_margin")
        assert config["artasyn_version"]


def _cpu_percentiles():
    """cpu.json's ``intensity_percentiles`` (train.json's ``None`` when it sets none)."""
    return json.loads((CONFIGS / "cpu.json").read_text()).get("intensity_percentiles")


def _cpu_input_sigma() -> float:
    """cpu.json's ``score_input_sigma`` (train.json's 0 when it sets none)."""
    return float(json.loads((CONFIGS / "cpu.json").read_text()).get("score_input_sigma", 0.0))


def test_train_json_records_every_argument_of_network_def():
    from monai.bundle import ConfigParser

    train = ConfigParser.load_config_file(TRAIN)
    recorded = set(train["checkpoint_config"]["network"]) - {"target"}
    assert recorded == set(train["network_def"]) - {"_target_"}


def test_cpu_checkpoint_served_by_inference_json_alone(cpu_run, inputs, tmp_path):
    """No preset: the checkpoint's network, working size, map and thresholds; decisions are made."""
    _, ckpt = cpu_run
    wf, rows = _infer(INFERENCE, ckpt, inputs, tmp_path / "alone")
    assert wf.parser.get_parsed_content("spatial_size") == [128, 128]
    assert wf.parser.get_parsed_content("score_map_mode") == "positive"
    assert wf.parser.get_parsed_content("score_map_sigma") == 3.0
    expected = _cpu_percentiles()
    assert wf.parser.get_parsed_content("intensity_percentiles") == expected
    (stretch,) = [
        t for t in wf.parser.get_parsed_content("preprocessing").transforms if type(t).__name__ == "PercentileStretchd"
    ]
    assert stretch.stretch.percentiles == (tuple(expected) if expected else None)
    assert wf.parser.get_parsed_content("inferer").sigma == _cpu_input_sigma()  # the network's input as trained
    net = wf.parser.get_parsed_content("network_def")
    assert net.stem.out_channels == 8 and len(net.encoder) == 4 * 1 + 3  # 4 levels of 1 block, 3 downsamplings
    thresholds = wf.parser.get_parsed_content("thresholds")
    assert thresholds.label_threshold == "specificity" and thresholds.mask_threshold == "absolute"
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["label"] in ("normal", "abnormal") for r in rows)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_after_inference_json(preset, cpu_run, inputs, tmp_path):
    """``[inference.json, <preset>]`` as the docs say; with the checkpoint's own preset, the same scores."""
    _, ckpt = cpu_run
    _, alone = _infer(INFERENCE, ckpt, inputs, tmp_path / "alone")
    _, composed = _infer([INFERENCE, str(CONFIGS / preset)], ckpt, inputs, tmp_path / preset)
    assert [r["status"] for r in composed] == ["ok", "ok"]
    if preset == "cpu.json":
        assert [r["score"] for r in composed] == [r["score"] for r in alone]


def test_preset_ids_compose_with_inference_and_evaluate():
    """A preset's ``a#b`` ids name only what inference.json (and train.json) have, so no merge fails."""
    from monai.bundle import ConfigParser

    inference = ConfigParser.load_config_file(INFERENCE)
    train = ConfigParser.load_config_file(TRAIN)
    for preset in PRESETS:
        for key in ConfigParser.load_config_file(str(CONFIGS / preset)):
            if "#" in key:
                parent = key.rsplit("#", 1)[0]
                assert parent in inference and parent in train, f"{preset}: {key!r} has no parent in inference.json"
        for order in ([TRAIN, str(CONFIGS / preset), EVALUATE], [TRAIN, EVALUATE, str(CONFIGS / preset)]):
            ConfigParser().read_config(order)
        ConfigParser().read_config([INFERENCE, str(CONFIGS / preset)])


def test_a_disagreeing_network_is_named_with_both_values(cpu_run, inputs, tmp_path):
    from scripts.checkpoint import CheckpointError

    _, ckpt = cpu_run
    with pytest.raises(Exception) as info:
        _infer(INFERENCE, ckpt, inputs, tmp_path / "bad", **{"network_def#channels": 16})
    cause = info.value
    while not isinstance(cause, CheckpointError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, CheckpointError)
    assert "network_def#channels: 8 in the checkpoint, 16 given" in str(cause) and "cpu.json" in str(cause)


def test_a_disagreeing_setting_is_named_with_both_values(cpu_run, inputs, tmp_path, caplog):
    """A preset's scoring setting that differs is used, with a warning naming it (a deliberate rescoring)."""
    _, ckpt = cpu_run
    with caplog.at_level("WARNING", logger="artasyn.bundle"):
        wf, rows = _infer(INFERENCE, ckpt, inputs, tmp_path / "rescore", score_map_sigma=0.0)
    assert wf.parser.get_parsed_content("score_map_sigma") == 0.0
    assert "was trained with score_map_sigma 3.0; this run uses 0.0" in caplog.text
    assert all(r["label"] == "" for r in rows)  # thresholds of another map are not applied


def test_evaluate_names_the_preset_a_checkpoint_needs(cpu_run):
    """evaluate.json (overrides of train.json) checks train.json's network against the checkpoint."""
    from monai.bundle import ConfigParser

    from scripts.checkpoint import CheckpointError

    _, ckpt = cpu_run
    parser = ConfigParser()
    parser.read_config([TRAIN, EVALUATE])
    parser["ckpt_path"] = str(ckpt)
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("checkpoint_check")
    cause = info.value
    while not isinstance(cause, CheckpointError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert "network_def#channels: 8 in the checkpoint, 32 here" in str(cause) and "cpu.json" in str(cause)


def test_evaluate_with_the_preset_runs(cpu_run):
    root, ckpt = cpu_run
    wf = _workflow([TRAIN, str(CONFIGS / "cpu.json"), EVALUATE], **outputs(root), **SHORT, ckpt_path=str(ckpt))
    wf.initialize()
    wf.run()
    wf.finalize()
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["info"]["spatial_size"] == [128, 128] and metrics["n_images"] == 8


def test_bare_state_dict_loads_for_the_default_network(inputs, tmp_path):
    """``torch.save(net.state_dict())`` of train.json's network: read as the weights, no thresholds."""
    from monai.bundle import ConfigParser

    torch.manual_seed(0)
    net = ConfigParser(ConfigParser.load_config_file(TRAIN)).get_parsed_content("network_def")
    ckpt = tmp_path / "bare.pt"
    torch.save(net.state_dict(), ckpt)
    wf, rows = _infer(INFERENCE, ckpt, inputs, tmp_path / "bare", spatial_size=[64, 64], pbtseg_size=128)
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["label"] == "" for r in rows)
    loaded = wf.parser.get_parsed_content("network_def")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())


def test_ckpt_export_of_a_cpu_checkpoint_with_inference_json_alone(cpu_run, tmp_path):
    _, ckpt = cpu_run
    ts_path = tmp_path / "model.ts"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            str(ts_path),
            "--ckpt_file",
            str(ckpt),
            "--ckpt_path",
            str(ckpt),
            "--config_file",
            "bundle/configs/inference.json",
            "--key_in_ckpt",
            "model",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from scripts.checkpoint_config import checkpoint_network

    net = checkpoint_network(ckpt).eval()
    net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    x = torch.as_tensor(np.random.default_rng(0).random((1, 1, 128, 128), dtype=np.float32))
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(ts_path))(x), net(x), atol=1e-5)


def test_an_input_smoothing_that_differs_is_named_and_drops_the_thresholds(cpu_run, inputs, tmp_path, caplog):
    _, ckpt = cpu_run
    other = _cpu_input_sigma() + 1.0
    with caplog.at_level("WARNING", logger="artasyn.bundle"):
        wf, rows = _infer(INFERENCE, ckpt, inputs, tmp_path / "smooth", score_input_sigma=other)
    assert wf.parser.get_parsed_content("inferer").sigma == other
    assert f"was trained with score_input_sigma {_cpu_input_sigma()}; this run uses {other}" in caplog.text
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["label"] == "" for r in rows)


@pytest.mark.parametrize(
    ("setting", "given", "trained"),
    [("score_input_sigma", 2.0, 0.0), ("lung_box_margin", 0.1, None), ("score_map_intensity", 0.015, 0.0)],
)
def test_a_checkpoint_from_before_a_setting_is_read_as_trained_without_it(cpu_run, tmp_path, setting, given, trained):
    """A ``config`` saved before the setting existed reads as what it was trained with, not the default given."""
    from scripts.checkpoint_config import CheckpointConfig

    _, ckpt = cpu_run
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["config"].pop(setting)
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert CheckpointConfig(old, {setting: given})[setting] == trained


def test_a_checkpoint_from_before_the_stretch_is_read_without_it(cpu_run, tmp_path, caplog):
    """A ``config`` saved before ``intensity_percentiles`` existed was trained without the stretch:
    inference.json alone does not stretch, and a preset that does is named in a warning."""
    from scripts.checkpoint_config import CheckpointConfig, compare_config

    _, ckpt = cpu_run
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["config"].pop("intensity_percentiles")
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert CheckpointConfig(old, {"intensity_percentiles": [1, 99]})["intensity_percentiles"] is None
    used = {k: v for k, v in state["config"].items() if k not in ("network", "artasyn_version")}
    with caplog.at_level("WARNING", logger="artasyn.bundle"):
        warnings = compare_config(old, state["config"], {**used, "intensity_percentiles": [0.5, 99.5]})
    assert len(warnings) == 1 and "intensity_percentiles null; this run uses [0.5, 99.5]" in warnings[0]
    assert compare_config(old, state["config"], {**used, "intensity_percentiles": None}) == []


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory):
    """``[train.json, cpu.json]`` with the crop to the lungs, two iterations: the checkpoint path."""
    root = tmp_path_factory.mktemp("crop_run")
    wf = _workflow(
        [TRAIN, str(CONFIGS / "cpu.json")], workflow_type="train", lung_box_margin=0.08, **outputs(root), **SHORT
    )
    n = torch.get_num_threads()
    try:
        wf.initialize()
        chain = wf.parser.get_parsed_content("train#preprocessing_lungs")
        assert type(chain[0]).__name__ == "LungBoxCropd" and chain[0].margin == 0.08
        wf.run()
        wf.finalize()
    finally:
        torch.set_num_threads(n)
    return root / "models" / "model.pt"


def test_a_crop_to_the_lungs_is_recorded_and_inference_maps_back_into_the_box(crop_run, inputs, tmp_path):
    """The checkpoint records ``lung_box_margin``; inference.json alone crops as it was trained
    and writes the map and the mask at the original size, zero outside the crop's box."""
    import nibabel as nib
    from PIL import Image

    from artasyn.lungs import LungBoxCrop

    assert torch.load(crop_run, map_location="cpu", weights_only=True)["config"]["lung_box_margin"] == 0.08
    wf, rows = _infer(INFERENCE, crop_run, inputs, tmp_path / "out", mask_threshold="relative")
    assert wf.parser.get_parsed_content("lung_box_margin") == 0.08
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for name in ("p0", "p1"):
        img = np.asarray(Image.open(inputs / f"{name}.png").convert("L"), np.float32)
        (r0, c0), (r1, c1) = LungBoxCrop(margin=0.08).compute_bounding_box(img[None])
        assert 0 < (r1 - r0) * (c1 - c0) < img.size  # a real crop of the 96 px phantom
        heat = np.asarray(nib.load(str(tmp_path / "out" / f"{name}.artasyn-heatmap.nii.gz")).dataobj)
        mask = np.asarray(Image.open(tmp_path / "out" / f"{name}.artasyn-mask.png"))
        assert heat.shape == mask.shape == img.shape
        outside = np.ones(img.shape, bool)
        outside[r0:r1, c0:c1] = False
        assert not heat[outside].any() and not mask[outside].any()
        assert heat[~outside].any()
