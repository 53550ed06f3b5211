"""``bench/bench_overlay_scale.py``: the overlays of one checkpoint, on its scale and per image."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_presets import TINY_INFER, random_checkpoint
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_overlay_scale as bo  # noqa: E402

#: the map options of inference.json's defaults, as the calibration records them
OPTIONS = {"score_map_mode": "squared", "score_map_sigma": 0.0, "score_in_lungs": False, "mask_in_lungs": False}


def test_overlay_colour_is_zero_for_grey_and_hot_share_follows_the_scale(tmp_path):
    grey = np.full((4, 4, 3), 90, np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    coloured = grey.copy()
    coloured[0, 0] = (255, 0, 0)
    Image.fromarray(coloured).save(tmp_path / "c.png")
    assert bo.overlay_colour(tmp_path / "g.png") == 0.0
    assert bo.overlay_colour(tmp_path / "c.png") == pytest.approx(255 / 16)
    heat = np.array([[0.0, 0.1], [0.2, 0.4]], np.float32)
    assert bo.hot_share(heat, None) == 0.5  # its own maximum: 0.2 and 0.4 reach half of 0.4
    assert bo.hot_share(heat, 2.0) == 0.0 and bo.hot_share(heat, 0.2) == 0.75


def test_the_bench_runs_both_scales_and_the_calibrated_one_is_the_checkpoints(tmp_path, monkeypatch):
    from artasyn.phantom import make_phantom

    for label, diseased in (("healthy", False), ("diseased", True)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(make_phantom(64, diseased=diseased, seed=i)["image"]).save(tmp_path / label / f"{i}.png")
    ckpt = random_checkpoint(tmp_path / "model.pt", TINY_INFER)
    state = torch.load(ckpt, weights_only=False)
    state["thresholds"] = {"image_threshold_specificity": None, "pixel_threshold": None, "healthy_peak": 0.05}
    state["thresholds"].update(OPTIONS)
    torch.save(state, ckpt)
    out = tmp_path / "out.json"
    argv = ["x", "--ckpt", str(ckpt), "--healthy", str(tmp_path / "healthy"), "--diseased", str(tmp_path / "diseased")]
    argv += ["--n", "2", "--work", str(tmp_path / "work"), "--out", str(out), "--set"]
    argv += [f"{k}={json.dumps(v)}" for k, v in TINY_INFER.items()]
    monkeypatch.setattr(sys, "argv", argv)
    bo.main()
    result = json.loads(out.read_text())
    assert (result["n_healthy"], result["n_diseased"]) == (2, 2)
    cal, per_image = result["modes"]["calibrated"], result["modes"]["image"]
    assert cal["overlay_peak"] == pytest.approx(0.1) and per_image["overlay_peak"] is None
    assert len(cal["per_image"]) == 4 and all(p["colour"] >= 0 for p in cal["per_image"])
    # each overlay on its own maximum puts some of its pixels in the upper half of the colours
    assert all(p["hot_share"] > 0 for p in per_image["per_image"])
    assert (tmp_path / "work" / "calibrated" / "anomaly_scores.csv").is_file()
