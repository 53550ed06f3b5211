"""The prepared GPU check: without CUDA it says so and writes the reason."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_train_speed", BENCH / "gpu_train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script measures instead")
def test_without_cuda_the_speed_check_writes_why_it_measured_nothing(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert _load().main(["--out", str(out), "--minutes", "0"]) == 2
    written = json.loads(out.read_text())
    assert "no CUDA device" in written["skipped"]
    assert "no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tmp"))
