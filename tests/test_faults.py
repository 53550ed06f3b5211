"""The fault battery: the files and accidents of real folders, through every workflow.

Each test reproduces one case and asserts what the bundle does now:

- a folder of good radiographs plus eleven bad or unusual files (:mod:`fault_files`): the
  pre-check decodes every pixel and rejects, with a reason in ``data_report.json`` and the log,
  or accepts with a conversion note; ``run training``, ``run evaluating`` and ``run inference``
  exit 0 and every usable image is scored;
- a file that passes the pre-check and fails later (lung cache, DataLoader worker): named,
  listed, left out, the run goes on;
- ``run inference`` into its own input folder: refused, inputs untouched; outputs are never
  read back as inputs; two runs into one folder keep both runs' CSV rows;
- atomic writes with the user's umask; an empty or damaged checkpoint named on load, refused by
  the MONAI Label packager;
- ``kill -9`` during a checkpoint save: no partial file under a final name; ``--resume true``
  continues from the saved iteration; ``kill -9`` at random moments (3 trials here,
  ``ARTASYN_KILL_TRIALS=20`` for the full battery), each followed by a resumed run;
- the lung cache: an image replaced in place and a damaged entry are recomputed, and the log
  says so.

Good images are real radiographs (``covidquex_normal_lung`` / ``covidquex_noncovid_lung`` of the
shared data set) when it is there, procedural phantoms otherwise, so CI without data runs the
whole battery. Everything runs at 64 x 64 with the tiny network of ``bundle_presets``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_presets import TINY_INFER, TINY_TRAIN, cli_overrides, inference_parser, outputs
from fault_files import EXPECTED, write_bad_files, write_good_images

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
TRAIN_FILES = "['bundle/configs/train.json','bundle/configs/small.json']"
EVAL_FILES = "['bundle/configs/train.json','bundle/configs/small.json','bundle/configs/evaluate.json']"
SHARED = Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
REJECTED = sorted(name for name, (what, _) in EXPECTED.items() if what == "rejected")
ACCEPTED = sorted(name for name, (what, _) in EXPECTED.items() if what == "accepted")
#: a tiny training: 2 iterations an epoch (validation and a saved state every 2 iterations)
TINY = {**TINY_TRAIN, "ema_decay": 0.9, "log_every": 1000, "iterations_per_epoch": 2, "max_val_items": 4}


def _real(name: str) -> Path | None:
    folder = SHARED / name / "images"
    return folder if folder.is_dir() else None


def _bundle(
    args: list, root: Path, timeout: float = 300, script: list | None = None, **popen
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(script or ["-m", "monai.bundle"]), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout, **popen)


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    """``root/train/healthy``: 10 good + the 11 cases; ``root/infer``: the same mix; a datalist whose
    test section holds 10 good healthy, 4 diseased and the 11 cases (validation: 2 + 2 good)."""
    root = tmp_path_factory.mktemp("mix")
    healthy, diseased = _real("covidquex_normal_lung"), _real("covidquex_noncovid_lung")
    train = root / "train" / "healthy"
    write_good_images(train, 10, real=healthy)
    write_bad_files(train)
    infer = root / "infer"
    write_good_images(infer, 10, real=healthy, offset=10)
    write_bad_files(infer)
    test = root / "test"
    good_test = write_good_images(test, 10, real=healthy, offset=20)
    bad_test = list(write_bad_files(test).values())
    sick = write_good_images(root / "sick", 6, real=diseased, offset=0)
    if diseased is None:  # phantoms with opacities
        from PIL import Image

        from artasyn.phantom import make_phantom

        for i, p in enumerate(sick):
            Image.fromarray(make_phantom(64, diseased=True, seed=50 + i)["image"]).save(p)
    val_good = write_good_images(root / "val", 2, real=healthy, offset=30)
    datalist = {
        "training": [{"image": str(p)} for p in sorted(train.iterdir())],
        "validation": [{"image": str(p), "label": 0} for p in val_good]
        + [{"image": str(p), "label": 1} for p in sick[:2]],
        "test": [{"image": str(p), "label": 0} for p in good_test + bad_test]
        + [{"image": str(p), "label": 1} for p in sick[2:]],
    }
    (root / "datalist.json").write_text(json.dumps(datalist, indent=1))
    return root


def test_precheck_decodes_every_case(tmp_path):
    """Each of the eleven files: rejected with its reason, or accepted with a conversion note."""
    from scripts.datalist import inspect_image_file

    paths = write_bad_files(tmp_path)
    for name, (what, fragment) in EXPECTED.items():
        reason, notes = inspect_image_file(paths[name])
        if what == "rejected":
            assert reason is not None and fragment.lower() in reason.lower(), (name, reason)
        else:
            assert reason is None, (name, reason)
            assert fragment in " ".join(notes), (name, notes)


def test_converted_images_read_as_their_gray_content(tmp_path):
    """LA and palette PNGs give the gray image they hold; a NIfTI in 0..2550 is rescaled with a note."""
    import nibabel as nib
    from PIL import Image

    from artasyn.phantom import make_phantom
    from scripts.datalist import inspect_image_file
    from scripts.loading import LoadChestXRay

    gray = make_phantom(64, seed=100)["image"]
    paths = write_bad_files(tmp_path)
    load = LoadChestXRay()
    for name in ("gray_alpha_la.png", "palette.png", "twelve_bit_in_16.png"):
        img = np.asarray(load(paths[name]))[0]
        assert np.abs(img - gray).mean() < 3.0, name  # palette: 64 colours, so not exact
    wide = tmp_path / "wide.nii.gz"
    nib.save(nib.Nifti1Image(gray.astype(np.float32) * 10, np.eye(4)), str(wide))
    reason, notes = inspect_image_file(wide)
    assert reason is None and "outside 0..255: min-max scaled" in notes[0]
    assert float(load(wide).max()) == pytest.approx(255.0)
    Image.fromarray(gray[:20, :20]).save(tmp_path / "small.png")  # 20 x 20: below min_size
    assert "smaller than" in inspect_image_file(tmp_path / "small.png")[0]


@pytest.fixture(scope="module")
def trained_on_mix(mix, tmp_path_factory):
    """``run training`` (tiny) on the mixed folder; returns (output root, process)."""
    root = tmp_path_factory.mktemp("train_mix")
    over = {**TINY, "max_iterations": 4, **outputs(root)}
    proc = _bundle(
        [
            "run",
            "training",
            "--config_file",
            TRAIN_FILES,
            "--datalist_file",
            str(mix / "datalist.json"),
            *cli_overrides(over),
        ],
        root,
    )
    return root, proc


def test_training_on_a_mixed_folder_lists_every_rejected_file(trained_on_mix):
    root, proc = trained_on_mix
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((root / "eval" / "training" / "data_report.json").read_text())
    rejected = {Path(r["path"]).name: r["reason"] for r in report["rejected"] if "/train/" in r["path"]}
    assert sorted(rejected) == REJECTED
    for name in REJECTED:
        assert EXPECTED[name][1].lower() in rejected[name].lower(), (name, rejected[name])
        assert name in proc.stdout + proc.stderr  # the log names it too
    converted = {Path(c["path"]).name for c in report["converted"] if "/train/" in c["path"]}
    assert converted == {"gray_alpha_la.png", "palette.png"}
    assert report["counts"]["training"] == 10 + len(ACCEPTED)
    for name in ("model.pt", "last.pt", "model_final.pt"):
        torch.load(root / "models" / name, weights_only=True)
    assert oct((root / "models" / "model.pt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_evaluating_a_mixed_folder_scores_every_usable_image(mix, trained_on_mix):
    root, train = trained_on_mix
    assert train.returncode == 0
    over = {**TINY, "max_val_items": 1000, **outputs(root)}  # the whole test section
    proc = _bundle(
        [
            "run",
            "evaluating",
            "--config_file",
            EVAL_FILES,
            "--datalist_file",
            str(mix / "datalist.json"),
            *cli_overrides(over),
        ],
        root,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(root / "eval" / "scores.csv") as f:
        scored = {Path(r["filename"]).name for r in csv.DictReader(f)}
    usable = {n for n in os.listdir(mix / "test") if n.startswith("good_")} | set(ACCEPTED)
    usable |= set(sorted(os.listdir(mix / "sick"))[2:])  # the diseased images of the test section
    assert scored == usable
    assert not scored & set(REJECTED)
    report = json.loads((root / "eval" / "data_report.json").read_text())
    assert sorted(Path(r["path"]).name for r in report["rejected"]) == REJECTED


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    parser = inference_parser(TINY_INFER)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, path)
    return path


def _infer_args(input_dir, out, ckpt, **extra) -> list:
    over = {**TINY_INFER, **extra}
    return [
        "run",
        "--config_file",
        "bundle/configs/inference.json",
        "--input_dir",
        str(input_dir),
        "--output_dir",
        str(out),
        "--ckpt_path",
        str(ckpt),
        *cli_overrides(over),
    ]


def test_inference_on_a_mixed_folder_scores_every_usable_image(mix, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    proc = _bundle(_infer_args(mix / "infer", out, tiny_ckpt), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "anomaly_scores.csv") as f:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    usable = [n for n in os.listdir(mix / "infer") if n.startswith("good_")] + ACCEPTED
    for name in usable:
        row = rows[name]
        assert row["status"] == "ok", (name, row["status"])
        for kind in ("heatmap", "overlay", "mask"):
            assert row[kind].endswith(f".artasyn-{kind}{'.nii.gz' if kind == 'heatmap' else '.png'}")
            assert (out / row[kind]).is_file()
    for name in REJECTED:
        assert rows[name]["status"].startswith("failed: "), name
        assert EXPECTED[name][1].lower() in rows[name]["status"].lower(), (name, rows[name]["status"])
    assert "gray + alpha" in rows["gray_alpha_la.png"]["notes"]
    assert f"inference: 21 images, {len(usable)} written, {len(REJECTED)} failed" in proc.stdout
    mode = (out / rows[usable[0]]["mask"]).stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()  # the user's umask, not 0600


def test_inference_into_its_input_folder_is_refused(mix, tiny_ckpt, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((mix / "infer").iterdir())[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    before = _digest(folder)
    for out in (folder, folder / "results"):
        proc = _bundle(_infer_args(folder, out, tiny_ckpt), tmp_path)
        assert proc.returncode != 0
        assert "inference never writes among its inputs" in proc.stdout + proc.stderr
        assert _digest(folder) == before  # every input byte-identical, nothing added
    assert not (folder / "results").exists()


def _infer_in_process(input_dir, out, ckpt, **extra):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        workflow_type="infer",
        logging_file=False,
        input_dir=str(input_dir),
        output_dir=str(out),
        ckpt_path=str(ckpt),
        **TINY_INFER,
        **extra,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(Path(out) / "anomaly_scores.csv") as f:
        return list(csv.DictReader(f))


def test_outputs_are_never_read_back_and_two_runs_keep_their_rows(tiny_ckpt, tmp_path):
    from PIL import Image

    from artasyn.phantom import make_phantom

    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for folder, seed in ((a, 1), (b, 2)):
        folder.mkdir()
        Image.fromarray(make_phantom(64, seed=seed)["image"]).save(folder / "p1.png")  # one stem, two images
    _infer_in_process(a, out, tiny_ckpt)
    rows = _infer_in_process(b, out, tiny_ckpt)
    assert len(rows) == 2 and len({r["run_id"] for r in rows}) == 2
    masks = {Path(r["file"]).parent.name: r["mask"] for r in rows}
    assert masks == {"a": "p1.artasyn-mask.png", "b": "p1_1.artasyn-mask.png"}  # b's outputs do not replace a's
    from scripts.inference import inference_datalist

    assert inference_datalist(input_dir=str(out)) == []  # the outputs are not radiographs to read


def test_a_file_failing_in_the_lung_cache_is_named_and_left_out(tmp_path, caplog):
    """A file that passed the pre-check but fails later (here: truncated in between) is left out."""
    from monai.bundle import ConfigParser

    from scripts.datalist import DataReport, build_datalist
    from scripts.lungs import LungCheck

    folder = tmp_path / "data" / "train" / "healthy"
    paths = write_good_images(folder, 4)
    report = DataReport(tmp_path / "report.json")
    items = build_datalist(tmp_path / "data", "training", report=report)
    paths[1].write_bytes(paths[1].read_bytes()[:200])  # damaged after the check
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    for k, v in {"spatial_size": [64, 64], "pbtseg_size": 128, "lung_cache_dir": str(tmp_path / "cache")}.items():
        parser[k] = v
    parser["train#datalist"] = items
    ds = parser.get_parsed_content("train#dataset")
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        LungCheck(ds, report, num_workers=0).run()
    assert [Path(r["path"]).name for r in report.rejected] == [paths[1].name]
    assert report.rejected[0]["stage"] == "lung cache" and paths[1].name in report.rejected[0]["reason"]
    assert "applying transform" not in report.rejected[0]["reason"]  # the root cause, not MONAI's wrapper
    assert len(ds) == 3 and str(paths[1]) not in {it["image"] for it in ds.data}
    assert json.loads((tmp_path / "report.json").read_text())["n_rejected"] == 1


def test_a_worker_failure_in_training_is_named_and_skipped(tmp_path, caplog):
    from monai.transforms import Lambdad

    from scripts.lungs import LungCacheDataset

    def fail_on_b(x):
        if "b.png" in str(x):
            raise ValueError("synthetic failure")
        return x

    data = [{"image": f"/nowhere/{n}.png", "image_path": f"/nowhere/{n}.png"} for n in "abc"]
    ds = LungCacheDataset(data, Lambdad("image", fail_on_b), cache_dir=None, skip_failed=True)
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        item = ds[1]
    assert item["image"] == "/nowhere/c.png"
    assert "/nowhere/b.png" in caplog.text and "ValueError: synthetic failure" in caplog.text
    strict = LungCacheDataset(data, Lambdad("image", fail_on_b), cache_dir=None)
    with pytest.raises(RuntimeError, match=r"/nowhere/b.png: ValueError: synthetic failure"):
        strict[1]


def test_safe_dataset_reason_is_the_root_cause_with_the_file(tmp_path):
    paths = write_bad_files(tmp_path)
    parser = inference_parser(TINY_INFER)
    for name, inner in (("rgb_hw3.nii.gz", "ValueError: not a 2-D image"), ("gone.png", "FileNotFoundError")):
        path = str(paths["rgb_hw3.nii.gz"].with_name(name))
        parser["datalist"] = [{"image": path, "image_path": path}]
        item = parser.get_parsed_content("dataset", lazy=False)[0]
        assert item["failed"].startswith(inner) and path in item["failed"], item["failed"]
        assert "applying transform" not in item["failed"]


def _cache_parser(tmp_path, items):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    for k, v in {"spatial_size": [64, 64], "pbtseg_size": 128, "lung_cache_dir": str(tmp_path / "cache")}.items():
        parser[k] = v
    parser["train#datalist"] = items
    return parser


def test_lung_cache_recomputes_a_replaced_image_and_a_damaged_entry(tmp_path, caplog):
    from PIL import Image

    from artasyn.phantom import make_phantom
    from scripts.datalist import DataReport
    from scripts.lungs import LungCheck

    paths = write_good_images(tmp_path / "img", 3)
    items = [{"image": str(p), "image_path": str(p)} for p in paths]

    def run():
        report = DataReport()
        LungCheck(_cache_parser(tmp_path, [dict(i) for i in items]).get_parsed_content("train#dataset"), report).run()
        return report.cache

    assert run()["computed"] == 3
    assert run()["reused"] == 3
    before = sorted((tmp_path / "cache").glob("*.pt"))
    # an image replaced in place (same path, new content)
    Image.fromarray(make_phantom(64, seed=77)["image"][::-1].copy()).save(paths[0])
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        counts = run()
    assert counts["recomputed_changed"] == 1 and counts["reused"] == 2
    assert f"{paths[0]} changed since it was cached" in caplog.text
    assert len(sorted((tmp_path / "cache").glob("*.pt"))) == len(before)  # the stale entry is gone
    # a damaged entry
    entry = sorted((tmp_path / "cache").glob("*.pt"))[0]
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # before: OSError: [Errno 22], no path
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        counts = run()
    assert counts["recomputed_damaged"] == 1 and counts["reused"] == 2
    assert f"damaged entry {entry}" in caplog.text
    torch.load(entry, weights_only=True)  # rewritten whole
    assert run()["reused"] == 3


def test_atomic_write_keeps_the_old_file_and_uses_the_umask(tmp_path):
    from scripts.utils import atomic_write, remove_stale_temporaries

    target = tmp_path / "report.json"
    atomic_write(target, "old")
    old_mask = os.umask(0o022)
    try:
        atomic_write(target, "new")
        assert target.stat().st_mode & 0o777 == 0o644

        def fail(f):
            f.write(b"part")
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            atomic_write(target, fail)
    finally:
        os.umask(old_mask)
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    (tmp_path / ".report.json.999999999.abc123.tmp").write_text("left by a killed writer")
    assert remove_stale_temporaries(tmp_path) == [".report.json.999999999.abc123.tmp"]


def test_empty_or_damaged_checkpoint_is_named(tiny_ckpt, tmp_path):
    from scripts.checkpoint import CheckpointError, load_checkpoint
    from scripts.monailabel_bundle import make_monailabel_bundle

    empty = tmp_path / "model.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"checkpoint {empty} is empty"):
        load_checkpoint(empty)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"checkpoint {cut} .* cannot be read"):
        load_checkpoint(cut)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state": {}}, wrong)
    with pytest.raises(CheckpointError, match="no state dict under \\['model'\\]"):
        load_checkpoint(wrong)
    for bad in (empty, cut, tmp_path / "absent.pt"):
        with pytest.raises((CheckpointError, FileNotFoundError), match=re.escape(str(bad))):
            make_monailabel_bundle(tmp_path / "app" / "artasyn_cxr", bad)
    assert not (tmp_path / "app").exists()  # refused before anything is written
    proc = _bundle(_infer_args(tmp_path, tmp_path / "out", empty), tmp_path)
    assert proc.returncode != 0 and f"checkpoint {empty} is empty" in proc.stdout + proc.stderr
    assert "EOFError" not in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """6 training and 4 validation phantoms (the kill tests need speed, not variety)."""
    from PIL import Image

    from artasyn.phantom import make_phantom

    root = tmp_path_factory.mktemp("small_data")
    write_good_images(root / "train" / "healthy", 6)
    write_good_images(root / "test" / "healthy", 2, offset=20)
    (root / "test" / "diseased").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(make_phantom(64, diseased=True, seed=60 + i)["image"]).save(
            root / "test" / "diseased" / f"d{i}.png"
        )
    return root


def _train_args(data: Path, root: Path, **extra) -> list:
    over = {**TINY, "max_iterations": 400, **outputs(root), **extra}
    return ["run", "training", "--config_file", TRAIN_FILES, "--dataset_dir", str(data), *cli_overrides(over)]


def _check_models(folder: Path) -> None:
    """Every file under a final name loads; anything else is a temporary file of an atomic write."""
    from scripts.utils import TEMP_PATTERN

    for p in sorted(folder.iterdir()):
        if TEMP_PATTERN.match(p.name):
            continue
        torch.load(p, weights_only=True)  # raises on a partial or empty file


def _resumed_iteration(text: str) -> int | None:
    m = re.search(r"resuming from \S+ at iteration (\d+)", text)
    return int(m.group(1)) if m else None


def test_kill_during_a_checkpoint_save_then_resume(small_data, tmp_path):
    """``kill -9`` while ``last.pt`` is half written: the old ``last.pt`` stays whole; ``--resume true`` goes on."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "ARTASYN_SLOW_SAVE_NAME": "last.pt"}
    env.update(ARTASYN_SLOW_SAVE_COUNT="2", ARTASYN_SLOW_SAVE_SECONDS="120")
    cmd = [sys.executable, "tests/fault_slow_save.py", *_train_args(small_data, tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = []
    try:
        deadline = time.time() + 240
        for line in proc.stdout:
            log.append(line)
            if line.startswith("ARTASYN_FAULT saving"):
                break
            assert time.time() < deadline, "no checkpoint save seen"
        else:
            pytest.fail("training ended before the slowed save:\n" + "".join(log[-40:]))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    models = tmp_path / "models"
    temps = [p.name for p in models.iterdir() if p.name.startswith(".last.pt.")]
    assert temps, "the kill should have left the half-written temporary file"
    _check_models(models)
    assert torch.load(models / "last.pt", weights_only=True)["trainer"]["iteration"] == 2
    resumed = _bundle(_train_args(small_data, tmp_path, resume=True, max_iterations=6), tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _resumed_iteration(resumed.stdout) == 2
    text = resumed.stdout + resumed.stderr
    assert "Epoch[2] Complete" in text and "Epoch[1] Complete" not in text  # epoch 1 is not run again
    assert torch.load(models / "last.pt", weights_only=True)["trainer"]["iteration"] == 6
    assert not [p for p in models.iterdir() if p.name.startswith(".")]  # the stale temporary file was removed
    _check_models(models)
    fresh = _bundle(_train_args(small_data, tmp_path, max_iterations=2), tmp_path)
    assert fresh.returncode == 0 and "will be overwritten" in fresh.stdout + fresh.stderr


def test_kill_at_random_moments_then_resume(small_data, tmp_path):
    """``ARTASYN_KILL_TRIALS`` (default 3) trials: ``kill -9`` at a random moment, then ``--resume true``."""
    trials = int(os.environ.get("ARTASYN_KILL_TRIALS", "3"))
    rng = random.Random(int(os.environ.get("ARTASYN_KILL_SEED", "0")))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    models, table, last = tmp_path / "models", [], 0
    for trial in range(trials):
        cmd = [sys.executable, "-m", "monai.bundle", *_train_args(small_data, tmp_path, resume=True)]
        log_path = tmp_path / f"trial{trial}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
            delay = rng.uniform(6.0, 20.0)  # start-up (imports, config, cached lungs) takes about 5 s
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        text = log_path.read_text()
        resumed = _resumed_iteration(text)
        saved = (
            torch.load(models / "last.pt", weights_only=True)["trainer"]["iteration"]
            if (models / "last.pt").is_file()
            else 0
        )
        temps = 0
        if models.is_dir():
            _check_models(models)
            temps = sum(1 for p in models.iterdir() if p.name.startswith("."))  # a kill during a save
        # the resume line is the trainer's first act; a kill during start-up comes before it
        started = resumed is not None or "starting a new training" in text or "no saved state" in text
        table.append((trial, round(delay, 1), started, resumed, saved, temps))
        if started and last > 0:
            assert resumed == last, (trial, resumed, last, text[-2000:])  # continues from the saved state
        assert saved >= last, (trial, saved, last)  # never back to an earlier state
        last = saved
    final = _bundle(_train_args(small_data, tmp_path, resume=True, max_iterations=last + 2), tmp_path)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert _resumed_iteration(final.stdout) == last
    _check_models(models)
    assert not [p for p in models.iterdir() if p.name.startswith(".")]
    assert any(row[3] for row in table[1:]) or trials < 3, table  # some resumed run got going
    print(
        "\ntrial, kill after (s), trainer started, resumed from iteration, saved iteration after the kill, "
        "temporary files left by the kill"
    )
    for row in table:
        print(*row, sep=", ")
