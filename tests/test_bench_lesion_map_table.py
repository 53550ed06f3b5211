"""``bench/lesion_map_table.py``: candidate lesion maps gathered against the preset's, per checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import lesion_map_table as lmt  # noqa: E402


def _result(path: Path, preset, candidate, weight=None, **overrides) -> Path:
    """A bench_zeroshot.py result file with the keys the table reads."""
    data = {
        "overrides": {"cache_dir": "/somewhere", **overrides},
        "settings": {"seed": 0},
        "metrics": {"pixel_auroc_in_gt_lung": {"anomaly_map": {"micro": preset[0], "mean_per_image": preset[1]}}},
        "map_variants_pixel_auroc_in_gt_lung": {"cand": {"micro": candidate[0], "mean_per_image": candidate[1]}},
    }
    if weight is not None:
        data["map_variants_intensity_weight_sigma6"] = weight
    path.write_text(json.dumps(data))
    return path


def test_gains_and_their_range_over_the_rows(tmp_path):
    a = _result(tmp_path / "a.json", (0.70, 0.60), (0.75, 0.58), weight=0.08, w_feat=3.0)
    b = _result(tmp_path / "b.json", (0.72, 0.65), (0.74, 0.70))
    out = tmp_path / "table.json"
    assert lmt.main([str(a), str(b), "--maps", "cand", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    first = result["rows"][0]
    assert first["overrides"] == {"w_feat": 3.0}  # folders left out
    assert first["intensity_weight_sigma6"] == 0.08
    assert first["maps"]["cand"]["gain"]["pooled"] == pytest.approx(0.05)
    assert first["maps"]["cand"]["gain"]["per_image"] == pytest.approx(-0.02)
    s = result["summary"]["cand"]
    assert s["pooled"]["min"] == pytest.approx(0.02) and s["pooled"]["max"] == pytest.approx(0.05)
    assert s["per_image"]["min"] == pytest.approx(-0.02) and s["per_image"]["max"] == pytest.approx(0.05)
    assert s["rows_above_preset_both"] == 1
    assert "+0.050 / -0.020" in result["table_markdown"]


def test_a_missing_map_names_the_file_and_the_key(tmp_path):
    a = _result(tmp_path / "a.json", (0.70, 0.60), (0.75, 0.58))
    with pytest.raises(ValueError, match=r"a\.json.*'other'"):
        lmt.main([str(a), "--maps", "other", "--out", str(tmp_path / "t.json")])
    assert not (tmp_path / "t.json").exists()
