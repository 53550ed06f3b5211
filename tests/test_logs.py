"""Quiet, useful logs: a tiny command-line training prints no line twice, and each per-file fact once.

The training set holds two images where PBTSeg finds no lung (bright noise: kept, they get no
synthetic anomaly, drawn several times a run and as several twins) and one gray + alpha PNG (a
conversion on reading); data loading runs in a worker process, as in real runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from bundle_presets import TINY_TRAIN, cli_overrides, outputs

REPO = Path(__file__).resolve().parents[1]
#: a log line: ``2026-01-01 10:00:00,123 - <logger> - <LEVEL> - <message>`` (or without the logger)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - (?:(?P<name>\S+) - )?(?P<level>[A-Z]+) - (?P<msg>.*)$")


def _data(folder: Path) -> Path:
    from PIL import Image

    from artasyn.phantom import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train = []
    for i in range(4):
        path = folder / f"healthy_{i}.png"
        Image.fromarray(make_phantom(64, seed=i)["image"]).save(path)
        train.append({"image": str(path)})
    for i in range(2):  # no lung for PBTSeg: bright noise
        path = folder / f"nolung_{i}.png"
        Image.fromarray(rng.integers(200, 256, (64, 64)).astype(np.uint8)).save(path)
        train.append({"image": str(path)})
    la = folder / "alpha.png"  # gray + alpha: converted on reading
    gray = make_phantom(64, seed=9)["image"]
    Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), mode="LA").save(la)
    train.append({"image": str(la)})
    val = []
    for i in range(4):
        path = folder / f"val_{i}.png"
        Image.fromarray(make_phantom(64, diseased=i % 2 == 1, seed=10 + i)["image"]).save(path)
        val.append({"image": str(path), "label": i % 2})
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": train, "validation": val, "test": val}))
    return datalist


def test_training_log_prints_each_line_once_and_each_file_warning_once(tmp_path):
    datalist = _data(tmp_path / "data")
    over = {
        **TINY_TRAIN,
        **outputs(tmp_path),
        "datalist_file": str(datalist),
        "num_workers": 1,
        "max_iterations": 6,
        "iterations_per_epoch": 3,
        "log_every": 2,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundle/configs/train.json"]
        + cli_overrides(over),
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=600,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    lines = [ln for ln in re.split(r"[\r\n]+", text) if ln.strip() and "%|" not in ln]  # no progress bars
    repeated = [ln for ln, n in Counter(lines).items() if n > 1 and LOG_LINE.match(ln)]
    assert not repeated, repeated
    warnings = [m["msg"] for m in map(LOG_LINE.match, lines) if m and m["level"] == "WARNING"]
    assert not [w for w, n in Counter(warnings).items() if n > 1], warnings
    for name in ("nolung_0.png", "nolung_1.png", "alpha.png"):
        mentions = [ln for ln in lines if name in ln and LOG_LINE.match(ln)]
        assert len(mentions) == 1, (name, mentions)
    report = json.loads((tmp_path / "eval" / "training" / "data_report.json").read_text())
    assert (report["n_no_lung"], report["n_converted"]) == (2, 1)
    summary = [ln for ln in lines if "no lung found: 2" in ln and "converted: 1" in ln]
    assert len(summary) == 1, summary


def test_the_log_filter_comes_off_the_handlers_at_finalize():
    """``initialize`` installs the filter on the root logger's handlers, ``finalize`` takes it off,
    so a process that goes on (a notebook, a test session) sees the library's messages again."""
    import logging

    from scripts.logs import LibraryLogFilter

    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        f = LibraryLogFilter().install()
        assert f in handler.filters
        f.uninstall()
        assert f not in handler.filters
    finally:
        root.removeHandler(handler)
    train = json.loads((REPO / "bundle" / "configs" / "train.json").read_text())
    assert "$@log_filter.install()" in train["initialize"] and "$@log_filter.uninstall()" in train["finalize"]
