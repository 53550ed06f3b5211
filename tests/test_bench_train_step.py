"""Benchmarks and bfloat16: ``bench/bench_train_step.py`` runs its bfloat16 variants only where
the CPU has it natively, and the training benchmarks record the machine they ran on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_train_real  # noqa: E402
import bench_train_step as bts  # noqa: E402

TINY = ["--size", "32", "--channels", "8", "--steps", "1", "--rounds", "1", "--variants", "ours", "ours_bf16"]


@pytest.mark.parametrize("native", [False, True])
def test_bf16_variants_follow_the_cpu(tmp_path, monkeypatch, native):
    import scripts.training

    monkeypatch.setattr(scripts.training, "cpu_has_native_bf16", lambda: native)
    out = tmp_path / "train_step.json"
    assert bts.main([*TINY, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["cpu_native_bf16"] is native
    if native:
        assert sorted(res["results"]) == ["ours", "ours_bf16"] and res["notes"] == []
    else:
        # measured as float32, a bf16 column would be mislabelled: it is left out, and the file says why
        assert list(res["results"]) == ["ours"]
        assert "no native bfloat16" in res["notes"][0] and "ours_bf16" in res["notes"][0]


@pytest.mark.parametrize("native", [False, True])
def test_training_benchmarks_record_the_machine(monkeypatch, native):
    import scripts.training

    monkeypatch.setattr(scripts.training, "cpu_has_native_bf16", lambda: native)
    info = bench_train_real.machine_info()
    assert info["cpu_native_bf16"] is native
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["cpu_count"] >= 1
