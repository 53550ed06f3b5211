"""``bench/loss_terms.py``: eq. 1's terms read back from a training's TensorBoard events."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard", reason="the bundle extra's tensorboard reads the events files")
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import loss_terms as lt  # noqa: E402

WEIGHTS = {"global": 1.0, "local": 2.0, "feat": 6.0, "dice": 0.0}


def _events(folder: Path, steps: int = 10) -> None:
    """Terms as a training logs them: the loss is their weighted sum; L_feat tiny."""
    writer = SummaryWriter(log_dir=str(folder / "runs"))
    for i in range(1, steps + 1):
        t = {"global": 0.01 / i, "local": 0.001, "feat": 1e-5, "dice": 0.0}
        for name, value in t.items():
            writer.add_scalar(f"loss_{name}", value, i * 50)
        writer.add_scalar("loss", sum(WEIGHTS[k] * v for k, v in t.items()), i * 50)
        writer.add_scalar("n_samples", 24.0, i * 50)
    writer.close()


def test_shares_and_means_at_full_precision(tmp_path):
    _events(tmp_path)
    summary = lt.summarise(lt.read_scalars(tmp_path), WEIGHTS)
    assert summary["n_logged"] == 10 and summary["iterations"] == [50, 500]
    feat = summary["terms"]["feat"]
    assert feat["mean"] == pytest.approx(1e-5, rel=1e-4)  # the log's four decimals would read 0.0000
    late_total = sum(0.01 / i + 0.002 + 6e-5 for i in range(6, 11)) / 5
    assert feat["share_second_half"] == pytest.approx(6e-5 / late_total, rel=1e-4)
    assert sum(r["share"] for r in summary["terms"].values()) == pytest.approx(1.0, rel=1e-5)
    assert summary["max_rel_gap_total_vs_weighted_terms"] < 1e-5


def test_weights_that_are_not_the_runs_are_an_error(tmp_path):
    _events(tmp_path)
    with pytest.raises(ValueError, match="not this training's"):
        lt.summarise(lt.read_scalars(tmp_path), {**WEIGHTS, "local": 8.0})


def test_weights_merge_configs_then_overrides(tmp_path):
    base, over = tmp_path / "train.json", tmp_path / "cpu.json"
    base.write_text(json.dumps({"w_global": 1.0, "w_local": 2.0, "w_feat": 1.0, "w_dice": 1.0}))
    over.write_text(json.dumps({"w_dice": 0.0}))
    assert lt.weights_of([base, over], [("w_feat", "6.0")]) == WEIGHTS
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"w_global": 1.0, "w_local": 2.0, "w_feat": 1.0}))
    with pytest.raises(KeyError, match="w_dice"):
        lt.weights_of([partial], [])


def test_cli_writes_json_and_names_a_folder_without_events(tmp_path, capsys):
    _events(tmp_path / "run")
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"w_global": 1.0, "w_local": 2.0, "w_feat": 6.0, "w_dice": 0.0}))
    out = tmp_path / "terms.json"
    lt.main([str(tmp_path / "run"), "--config", str(cfg), "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["terms"]["feat"]["weight"] == 6.0 and "| L_feat | 6 |" in saved["table_markdown"]
    assert "| L_feat | 6 |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no TensorBoard events"):
        lt.main([str(tmp_path / "empty"), "--config", str(cfg)])
