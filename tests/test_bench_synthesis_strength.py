"""``bench/synthesis_strength.py``: the strength of the synthetic opacities, one setting against another."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import synthesis_strength as ss  # noqa: E402

BRIGHTNESS = "train#preprocessing_synthesis#0#brightness"


def test_twin_measures_on_known_arrays():
    lung = torch.zeros(8, 8, dtype=torch.bool)
    lung[:, :4] = True
    target = torch.full((1, 8, 8), 100.0)
    image, mask = target.clone(), torch.zeros(1, 8, 8)
    image[0, :2, :2] += 40.0
    mask[0, :2, :2] = 1.0
    twin = {"image": image, "target": target, "anomaly_mask": mask, "anomaly_label": torch.tensor([1.0])}
    m = ss.twin_measures(twin, lung)
    expected = {"change_in_mask": 40.0, "change_in_lung": 40.0 * 4 / 32, "mask_share_of_lung": 4 / 32}
    assert m == {**expected, "empty_mask": False}
    healthy = {**twin, "image": target, "anomaly_mask": torch.zeros(1, 8, 8), "anomaly_label": torch.tensor([0.0])}
    assert ss.twin_measures(healthy, lung) is None


def test_fainter_brightness_on_real_images(shared_data, tmp_path):
    """Same draws, T_rib brightness 1.5 against 0.75 on three real radiographs: the same twins painted,
    a smaller change inside the mask and a smaller mask."""
    out = tmp_path / "strength.json"
    argv = ["--images", str(shared_data / "zhanglab_train_normal"), "--n", "3", "--out", str(out)]
    assert ss.main(argv + ["--compare", BRIGHTNESS, "1.5", "0.75"]) == 0
    res = json.loads(out.read_text())
    strong, faint = res["values"]["1.5"], res["values"]["0.75"]
    assert strong["n_painted_twins"] == faint["n_painted_twins"] > 0
    assert faint["change_in_mask"]["median"] < strong["change_in_mask"]["median"]
    assert faint["mask_share_of_lung"]["median"] < strong["mask_share_of_lung"]["median"]
    assert "| 0.75 |" in res["table_markdown"]
    # the same value twice: the same draws give the same numbers
    assert ss.main(argv + ["--compare", BRIGHTNESS, "1.5", "1.50001"]) == 0
    again = json.loads(out.read_text())["values"]
    assert again["1.5"] == strong
    assert again["1.50001"]["change_in_mask"]["median"] == pytest.approx(strong["change_in_mask"]["median"], rel=0.02)


def test_compare_needs_a_value(tmp_path):
    with pytest.raises(SystemExit):
        ss.main(["--images", str(tmp_path), "--out", str(tmp_path / "o.json"), "--compare", BRIGHTNESS])


def test_lesion_contrast_on_known_arrays():
    image = np.full((2, 10, 10), 0.2, np.float32)
    lung = np.zeros((2, 10, 10), bool)
    lung[:, :, :6] = True
    lesion = np.zeros((2, 10, 10), bool)
    lesion[0, :5, :6] = True  # half the lung of image 0, brighter by 0.1
    image[0, :5, :6] = 0.3
    lesion[1, 0, :3] = True  # 3 pixels: under the 20-pixel floor, left out
    lesion[0, :, 8] = True  # outside the lung: not lesion pixels of the lung
    image[0, :, 8] = 1.0
    res = ss.lesion_contrast({"image": image, "infection": lesion, "lung_gt": lung})
    assert res["n_images"] == 1
    assert res["lesion_minus_rest_of_lung"]["median"] == pytest.approx(25.5, abs=1e-3)
    assert res["lesion_share_of_lung"]["median"] == pytest.approx(0.5)
    assert ss.lesion_contrast({"image": image[1:], "infection": lesion[1:], "lung_gt": lung[1:]}) == {"n_images": 0}


def test_summary_of_twins_without_a_mask():
    rows = [{"change_in_mask": None, "change_in_lung": 2.0, "mask_share_of_lung": 0.0, "empty_mask": True}]
    s = ss.summary(rows)
    assert s["empty_masks"] == 1 and s["change_in_mask"] is None
    assert s["change_in_lung"] == {"median": 2.0, "q25": 2.0, "q75": 2.0}
    assert "n/a" in ss.table({"compare": "k", "values": {"1": s}})
