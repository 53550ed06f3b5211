"""The MONAI bundle in ``bundle/``: configs, a tiny end-to-end training and evaluation.

Everything runs on procedural phantoms (``artasyn.phantom``) at 64 x 64 with a tiny network,
in a temporary bundle root, so it needs no data and takes well under a minute per test.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_presets import TINY_TRAIN, cli_overrides, outputs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = str(CONFIGS / "evaluate.json")
SMALL = str(CONFIGS / "small.json")

#: the tiny setting of these tests: 64 px phantoms, a 3-level 8-channel network, few images
TINY = {**TINY_TRAIN, "ema_decay": 0.9, "max_train_items": 16, "max_val_items": 16, "log_every": 1000}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """``initialize`` sets torch's thread count (``cpu_threads``): give other tests theirs back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _workflow(config_file, workflow_type="train", **override):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(config_file=config_file, workflow_type=workflow_type, logging_file=False, **override)


@pytest.mark.parametrize("config_file", [TRAIN, [TRAIN, SMALL]])
def test_train_config_has_every_train_property(config_file, tmp_path):
    wf = _workflow(config_file, **outputs(tmp_path), **TINY)
    wf.initialize()  # MONAI checks properties on parsed content: phantoms and lung maps are made
    assert wf.check_properties() == []
    for key in (
        "network_def",
        "train#preprocessing",
        "train#trainer",
        "validate#evaluator",
        "bundle_root",
        "dataset_dir",
        "ckpt_dir",
        "initialize",
        "run",
        "finalize",
        "training",
    ):
        assert key in wf.parser, key


@pytest.mark.parametrize("workflow_type", ["train", "infer"])
def test_evaluate_config_has_every_property(workflow_type, tmp_path):
    wf = _workflow([TRAIN, EVALUATE], workflow_type=workflow_type, **outputs(tmp_path), **TINY)
    wf.initialize()
    assert wf.check_properties() == []
    assert "evaluating" in wf.parser


def test_train_config_holds_the_paper_defaults():
    from monai.bundle import ConfigParser

    cfg = ConfigParser.load_config_file(TRAIN)
    net = cfg["network_def"]
    assert (net["channels"], net["channel_mult"], net["num_res_blocks"]) == (32, [1, 1, 2, 3, 4], 2)
    assert net["attention_downsample"] == [8, 16, 32] and net["dropout"] == 0.1 and net["norm"] == "batch"
    assert cfg["spatial_size"] == [256, 256] and cfg["batch_size"] == 4 and cfg["max_iterations"] == 100000
    assert cfg["learning_rate"] == 1e-4 and cfg["ema_decay"] == 0.9999 and cfg["variant"] == "final"
    assert cfg["training"] == "%run"
    assert (cfg["w_global"], cfg["w_local"], cfg["w_feat"], cfg["w_dice"]) == (1.0, 2.0, 1.0, 1.0)
    assert {k: cfg["loss"][k] for k in ("w_global", "w_local", "w_feat", "w_dice")} == {
        k: f"@{k}" for k in ("w_global", "w_local", "w_feat", "w_dice")
    }


def test_small_preset_only_overrides():
    small = json.loads(Path(SMALL).read_text())
    train = json.loads(Path(TRAIN).read_text())
    for key in small:
        assert key.split("#")[0] in train, f"small.json adds {key!r}, which train.json does not have"


def _count_samples(tmp_path, variant):
    wf = _workflow(TRAIN, **outputs(tmp_path), variant=variant, **TINY)
    ds = wf.parser.get_parsed_content("train#dataset")
    return [len(ds[i]) for i in range(4)]


def test_variant_switch_changes_samples_per_image(tmp_path):
    assert _count_samples(tmp_path, "none") == [1, 1, 1, 1]
    counts = _count_samples(tmp_path, "final")
    assert all(2 <= c <= 4 for c in counts), counts  # healthy + 1..3 twins


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """A tiny training run on phantoms through the workflow API; returns (root, losses)."""
    import torch
    from ignite.engine import Events

    root = tmp_path_factory.mktemp("bundle")
    wf = _workflow(
        TRAIN, **outputs(root), max_iterations=24, iterations_per_epoch=12, learning_rate=1e-3, seed=1, **TINY
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    n_threads = torch.get_num_threads()
    try:
        wf.run()
        wf.finalize()
    finally:
        torch.set_num_threads(n_threads)
    return root, losses


def test_training_log_prints_every_loss_term_readably(tmp_path):
    """L_feat is about 1e-5: the log's four decimals printed it as 0.0000."""
    from monai.handlers import StatsHandler

    wf = _workflow(TRAIN, **outputs(tmp_path), **TINY)
    wf.initialize()
    (stats,) = [h for h in wf.parser.get_parsed_content("train#handlers") if isinstance(h, StatsHandler)]
    line = "".join(stats.key_var_format.format(k, v) for k, v in {"loss_feat": 1.08e-05, "loss_global": 0.0013}.items())
    assert line == "loss_feat: 1.08e-05 loss_global: 0.0013 "


def test_tiny_training_loss_falls(trained_bundle):
    root, losses = trained_bundle
    assert len(losses) == 24
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first, f"loss did not fall: first {first:.4f}, last {last:.4f}"


def test_training_saves_checkpoints_and_validation_outputs(trained_bundle):
    import torch

    root, _ = trained_bundle
    ckpt = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"model", "model_raw", "optimizer"}
    assert (root / "models" / "model_final.pt").is_file()
    val = json.loads((root / "eval" / "training" / "val_metrics.json").read_text())["metrics"]
    assert {"val_auc", "val_ap", "val_micro_dice_tau0.2", "val_dice_tau0.8"} <= set(val)
    report = json.loads((root / "eval" / "training" / "data_report.json").read_text())
    assert report["counts"]["training"] == 16 and report["n_unreadable"] == 0
    assert any((root / "runs").iterdir())  # TensorBoard events


def test_training_checkpoints_carry_the_validation_thresholds(trained_bundle):
    """model.pt: the thresholds of its (best) validation; last.pt, model_final.pt: of the last one."""
    import torch

    root, _ = trained_bundle
    load = lambda name: torch.load(root / "models" / name, map_location="cpu", weights_only=True)  # noqa: E731
    last, final, best = load("last.pt"), load("model_final.pt"), load("model.pt")
    written = json.loads((root / "eval" / "training" / "val_thresholds.json").read_text())
    assert last["thresholds"] == final["thresholds"] == written and written["epoch"] == 2
    assert best["thresholds"]["epoch"] == last["best_metric_epoch"]
    for t in (written, best["thresholds"]):
        assert (t["n_healthy"], t["n_diseased"], t["n_pixels"]) == (8, 8, 8 * 64 * 64)  # validation half
        assert t["specificity"] == 0.95 and t["pixel_quantile"] == 0.95
        # image_max: the pixel threshold leaves at most 5 % of the healthy validation masks
        # non-empty (none of 8), after dropping components under 8 px (1/512 of 64 x 64)
        assert (t["pixel_rule"], t["min_mask_px"], t["val_healthy_mask_rate"]) == ("image_max", 8, 0.0)
        assert t["image_threshold_specificity"] > 0 and t["pixel_threshold"] > 0
        assert t["image_threshold_f1"] is not None and 0 < t["f1"] <= 1
        assert (t["score_map_mode"], t["score_map_sigma"], t["score_in_lungs"], t["mask_in_lungs"]) == (
            "squared",
            0.0,
            False,
            False,
        )


def _evaluate(root, **override):
    wf = _workflow([TRAIN, EVALUATE], **{**outputs(root), **TINY, **override})
    wf.initialize()
    wf.run()
    wf.finalize()
    out = Path(override.get("output_dir", root / "eval"))
    with open(out / "scores.csv") as f:
        return json.loads((out / "metrics.json").read_text()), list(csv.DictReader(f))


def test_evaluate_loads_checkpoint_and_writes_metrics(trained_bundle):
    import torch

    root, _ = trained_bundle
    metrics, rows = _evaluate(root)
    out = root / "eval"
    assert {"auc", "ap", "micro_dice_tau0.2", "dice_tau0.2", "micro_dice_tau0.8"} <= set(metrics["metrics"])
    assert 0.0 <= metrics["metrics"]["auc"] <= 1.0
    assert metrics["info"]["checkpoint"].endswith("model.pt")
    assert len(rows) == metrics["n_images"] == 16  # the test half of 16 + 16 phantoms
    assert {r["label"] for r in rows} == {"0", "1"}
    assert all(r["filename"].endswith(".png") for r in rows)
    assert all(r["dice_tau0.2"] == "" for r in rows if r["label"] == "0")
    assert (out / "panels.png").is_file()
    # the decisions of the checkpoint's thresholds, counted on the test half
    saved = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)["thresholds"]
    used = metrics["info"]["thresholds"]
    assert used["label_threshold"] == "specificity" and used["image_threshold"] == saved["image_threshold_specificity"]
    assert used["mask_threshold"] == "absolute" and used["pixel_threshold"] == saved["pixel_threshold"]
    assert used["min_mask_px"] == saved["min_mask_px"] == 8
    for r in rows:
        assert int(r["pred_label"]) == int(float(r["score"]) > used["image_threshold"]), r
    healthy = [r for r in rows if r["label"] == "0"]
    diseased = [r for r in rows if r["label"] == "1"]
    m = metrics["metrics"]
    assert m["specificity"] == sum(r["pred_label"] == "0" for r in healthy) / len(healthy)
    assert m["sensitivity"] == sum(r["pred_label"] == "1" for r in diseased) / len(diseased)
    assert m["healthy_mask_rate"] == sum(int(r["abs_mask_px"]) > 0 for r in healthy) / len(healthy)
    assert "micro_dice_absolute" in m


@pytest.mark.parametrize(
    ("override", "taus"),
    [
        ({}, [0.2, 0.4, 0.6, 0.8]),
        ({"tau": 0.4}, [0.4, 0.2, 0.6, 0.8]),
        ({"tau": 0.3}, [0.3, 0.2, 0.4, 0.6, 0.8]),
        ({"tau": 0.3, "taus": [0.6, 0.8]}, [0.6, 0.8]),
    ],
)
def test_tau_leads_the_taus_of_training_and_evaluation(override, taus):
    """``--tau`` works for training and evaluation as for inference; an explicit ``--taus`` wins."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([TRAIN, str(CONFIGS / "cpu.json"), EVALUATE])
    parser.update(override)
    assert parser.get_parsed_content("taus") == taus


def test_evaluate_with_tau_reports_that_tau_first(trained_bundle, tmp_path):
    root, _ = trained_bundle
    metrics, rows = _evaluate(root, tau=0.3, output_dir=str(tmp_path / "eval_tau"))
    assert metrics["info"]["taus"] == [0.3, 0.2, 0.4, 0.6, 0.8]
    assert {"micro_dice_tau0.3", "dice_tau0.3", "micro_dice_tau0.2"} <= set(metrics["metrics"])
    assert list(rows[0])[4:6] == ["dice_tau0.3", "dice_tau0.2"]


def test_evaluate_with_a_checkpoint_saved_before_thresholds(trained_bundle, tmp_path):
    """A checkpoint without ``thresholds``: the tau metrics as before, every decision metric null."""
    import torch

    root, _ = trained_bundle
    ckpt = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    del ckpt["thresholds"]
    torch.save(ckpt, tmp_path / "old.pt")
    metrics, rows = _evaluate(root, ckpt_path=str(tmp_path / "old.pt"), output_dir=str(tmp_path / "eval"))
    m = metrics["metrics"]
    assert 0.0 <= m["auc"] <= 1.0 and "micro_dice_tau0.2" in m
    assert all(m[k] is None for k in ("sensitivity", "specificity", "healthy_mask_rate", "micro_dice_absolute")), m
    assert metrics["info"]["thresholds"]["mask_threshold"] == "relative"
    assert all(r["pred_label"] == "" and r["abs_mask_px"] == "" for r in rows)


def test_evaluation_set_is_apart_from_validation(tmp_path):
    wf = _workflow(TRAIN, **outputs(tmp_path), **TINY)
    val = wf.parser.get_parsed_content("validate#datalist")
    wf_eval = _workflow([TRAIN, EVALUATE], **outputs(tmp_path), **TINY)
    test = wf_eval.parser.get_parsed_content("validate#datalist")
    assert val and test and not {v["image"] for v in val} & {t["image"] for t in test}


def test_command_line_training_and_evaluating(tmp_path):
    """The README's two commands as written (run from the repository root), outputs moved to ``tmp_path``."""
    over = cli_overrides(
        {**TINY, "max_iterations": 2, "iterations_per_epoch": 2, "max_train_items": 4, **outputs(tmp_path)}
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "training",
            "--config_file",
            "['bundle/configs/train.json','bundle/configs/small.json']",
            *over,
            "--learning-rates",  # misspelt: warned about, and the run goes on
            "0.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "AUC=" in train.stdout and "AP=" in train.stdout and "Dice(micro" in train.stdout
    warned = [ln for ln in (train.stdout + train.stderr).splitlines() if "names no setting" in ln]
    assert len(warned) == 1 and warned[0].split(" - ")[-1].startswith("--learning_rates names no setting"), warned
    assert "did you mean --learning_rate" in warned[0], warned
    assert (tmp_path / "models" / "model.pt").is_file()
    evaluate = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "evaluating",
            "--config_file",
            "['bundle/configs/train.json','bundle/configs/small.json','bundle/configs/evaluate.json']",
            *over,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    assert "AUC=" in evaluate.stdout and (tmp_path / "eval" / "metrics.json").is_file()
    assert "names no setting" not in evaluate.stdout + evaluate.stderr  # every README override is a setting


def test_loading_reads_png_8_16_bit_rgb_jpeg_and_nifti_alike(tmp_path):
    """The config's loading chain gives the same 1 x H x W, 0..255, rows-down image for every format.

    A 12-bit image in a 16-bit PNG is read at its own bit depth (4095 -> 255), not divided by 257.
    """
    import nibabel as nib
    import numpy as np
    from monai.bundle import ConfigParser
    from monai.transforms import Compose
    from PIL import Image

    gray = np.zeros((40, 30), np.uint8)  # H=40, W=30; a bright block at the top left
    gray[2:10, 3:8] = 200
    gray[20:, :] = 100
    files = {
        "png8": tmp_path / "a.png",
        "png16": tmp_path / "b.png",
        "png12_in_16": tmp_path / "b12.png",
        "rgb_jpeg": tmp_path / "c.jpg",
        "nifti": tmp_path / "d.nii.gz",
    }
    Image.fromarray(gray).save(files["png8"])
    Image.fromarray(gray.astype(np.uint16) * 257).save(files["png16"])
    Image.fromarray((gray.astype(np.uint32) * 4095 // 255).astype(np.uint16)).save(files["png12_in_16"])
    Image.fromarray(np.stack([gray] * 3, -1)).save(files["rgb_jpeg"], quality=100)
    nib.save(nib.Nifti1Image(gray.astype(np.float32), np.eye(4)), files["nifti"])
    parser = ConfigParser()
    parser.read_config(TRAIN)
    load = Compose(parser.get_parsed_content("load_transforms"))
    for name, path in files.items():
        img = np.asarray(load({"image": str(path)})["image"])
        assert img.shape == (1, 40, 30), name
        assert abs(float(img[0, 5, 5]) - 200) < 4 and abs(float(img[0, 30, 15]) - 100) < 4, name
        assert float(img[0, 15, 20]) < 4, name


def _formats(folder: Path) -> dict:
    """One 96 x 80 phantom radiograph (rows != columns) as 8-, 12-in-16- and 16-bit PNG, RGB JPEG and NIfTI."""
    import nibabel as nib
    import numpy as np
    from PIL import Image

    from artasyn.phantom import make_phantom

    gray = make_phantom(96, diseased=True, seed=3)["image"][:, 8:88]
    files = {
        "png8": folder / "p8.png",
        "png12_in_16": folder / "p12.png",
        "png16": folder / "p16.png",
        "rgb_jpeg": folder / "rgb.jpg",
        "nifti": folder / "vol.nii.gz",
    }
    Image.fromarray(gray).save(files["png8"])
    Image.fromarray((gray.astype(np.uint32) * 4095 // 255).astype(np.uint16)).save(files["png12_in_16"])
    Image.fromarray(gray.astype(np.uint16) * 257).save(files["png16"])
    Image.fromarray(np.stack([gray] * 3, -1)).save(files["rgb_jpeg"], quality=95)
    nib.save(nib.Nifti1Image(gray.astype(np.float32), np.eye(4)), str(files["nifti"]))
    return files


@pytest.mark.parametrize("fmt", ["png8", "png12_in_16", "png16", "rgb_jpeg", "nifti"])
def test_same_file_gives_the_same_image_in_training_evaluation_and_inference(fmt, tmp_path):
    """Training (healthy target), validation / evaluation and inference preprocess one file identically."""
    import torch
    from monai.bundle import ConfigParser

    path = str(_formats(tmp_path)[fmt])
    over = {"spatial_size": [64, 64], "pbtseg_size": 96, "variant": "none"}

    def parsed(config_file, pid):
        parser = ConfigParser()
        parser.read_config(config_file)
        for k, v in over.items():
            if k in parser:
                parser[k] = v
        return parser.get_parsed_content(pid)

    train = parsed(TRAIN, "train#preprocessing")({"image": path, "image_path": path})
    train = train[0] if isinstance(train, list) else train
    val = parsed(TRAIN, "validate#preprocessing")({"image": path, "image_path": path, "label": 0, "mask": ""})
    evaluate = parsed([TRAIN, EVALUATE], "validate#preprocessing")(
        {"image": path, "image_path": path, "label": 1, "mask": ""}
    )
    infer = parsed(str(CONFIGS / "inference.json"), "preprocessing")({"image": path, "image_path": path})
    reference = torch.as_tensor(infer["image"])
    assert reference.shape == (1, 64, 64) and 0.0 <= float(reference.min()) and float(reference.max()) <= 1.0
    assert float(reference.std()) > 0.05, "the image lost its contrast"
    for name, item, key in (
        ("training", train, "target"),
        ("validation", val, "image"),
        ("evaluation", evaluate, "image"),
    ):
        assert torch.equal(torch.as_tensor(item[key]), reference), f"{fmt}: {name} differs from inference"
    assert torch.equal(torch.as_tensor(val["lung"]), torch.as_tensor(infer["lung"])), fmt


@pytest.mark.parametrize("name", ["train.json", "evaluate.json", "multi_gpu_train.json", "inference.json"])
def test_every_initialize_first_puts_the_bundle_root_on_sys_path(name):
    """The model-zoo way: ``scripts`` is importable from the first step of ``initialize`` on."""
    config = json.loads((CONFIGS / name).read_text())
    assert config["initialize"][0] == "$sys.path.append(@bundle_root)"
    assert "bundle_utils" not in (CONFIGS / name).read_text()


def test_library_holds_no_bundle_code():
    """``artasyn`` is what other pipelines reuse: no bundle glue, no ignite, no command-line parsing."""
    import artasyn

    package = Path(artasyn.__file__).parent
    assert not (package / "bundle_utils").exists()
    for path in package.glob("*.py"):
        text = path.read_text()
        assert "sys.argv" not in text and "import ignite" not in text and "scripts." not in text, path.name


def test_12bit_real_radiograph_reads_like_its_8bit_original(shared_data, tmp_path):
    """COVID-QU-Ex (``covidquex_noncovid_lung``): a radiograph stored with 12 bits in a 16-bit PNG gives the
    8-bit original's image (within one grey level) and PBTSeg finds both lungs in it, as in the original."""
    import numpy as np
    import torch
    from monai.bundle import ConfigParser
    from PIL import Image

    source = sorted((shared_data / "covidquex_noncovid_lung" / "images").glob("*.png"))[0]
    gray = np.asarray(Image.open(source).convert("L"))
    p8, p12 = tmp_path / "cxr8.png", tmp_path / "cxr12.png"
    Image.fromarray(gray).save(p8)
    Image.fromarray((gray.astype(np.uint32) * 4095 // 255).astype(np.uint16)).save(p12)
    parser = ConfigParser()
    parser.read_config([TRAIN, EVALUATE])
    pre = parser.get_parsed_content("validate#preprocessing")
    out = {p.name: pre({"image": str(p), "image_path": str(p), "label": 1, "mask": ""}) for p in (p8, p12)}
    diff = (torch.as_tensor(out["cxr12.png"]["image"]) - torch.as_tensor(out["cxr8.png"]["image"])).abs().max()
    assert float(diff) <= 1.0 / 255 + 1e-6, float(diff)
    for name, item in out.items():
        lung = torch.as_tensor(item["lung"])
        assert bool((lung == 1).any()) and bool((lung == 2).any()), f"{name}: PBTSeg lost a lung"


@pytest.mark.parametrize("mode", ["paper", "robust"])
def test_pbtseg_mode_reaches_every_lung_segmentation(mode, tmp_path):
    """``--pbtseg_mode`` switches PBTSeg in training, validation and the standalone inference."""
    from artasyn.pbtseg import PBTSegd

    def modes(parser, ids):
        return [t.pbtseg.mode for i in ids for t in parser.get_parsed_content(i) if isinstance(t, PBTSegd)]

    train = _workflow(TRAIN, **outputs(tmp_path), pbtseg_mode=mode, **TINY)
    found = modes(train.parser, ["train#preprocessing_lungs", "validate#preprocessing_tail"])
    infer = _workflow(str(CONFIGS / "inference.json"), "infer", pbtseg_mode=mode)
    found += modes(infer.parser, ["preprocessing_tail"])
    assert found == [mode] * 3


def test_boolean_settings_from_the_command_line_are_read_strictly(tmp_path):
    """``--resume false`` reaches the config as the string "false" (python-fire), not False."""
    import torch

    from scripts.checkpoint import TrainingCheckpoint
    from scripts.utils import as_bool

    assert [as_bool(v) for v in ("false", "False", "0", "no", "true", "TRUE", "1", "on")] == [False] * 4 + [True] * 4
    with pytest.raises(ValueError, match="resume must be true or false, got 'maybe'"):
        as_bool("maybe", "resume")
    net = torch.nn.Linear(2, 2)
    handler = TrainingCheckpoint(tmp_path, net, net, torch.optim.SGD(net.parameters(), lr=0.1), resume="false")
    assert handler.resume is False
