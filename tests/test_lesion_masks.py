"""Lesion masks a reader can trust: the ``dice`` pixel rule and the image gate of the masks.

``docs/method.md`` section 4: the pixel threshold of rule ``dice`` is chosen on the diseased
validation images that carry a lesion mask (best micro Dice, the masks drawn as they will be:
gate, lungs, smallest component), and with ``mask_gate="image"`` a mask is drawn only on an
image whose score passes the specificity image threshold. Small phantom maps throughout: a
healthy map is low noise, a diseased one adds a raised blob where its lesion mask is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from artasyn.scoring import absolute_mask
from artasyn.scoring.thresholds import AnomalyDecisiond, calibrate_thresholds, dice_threshold

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"


def _maps(n_healthy: int = 20, n_lesion: int = 10, size: int = 16, seed: int = 0):
    """Healthy and lesion maps: noise below 0.01; a healthy map has one speck at 0.05, a lesion map
    a 6 x 6 blob raised by 0.01 to 0.03 where its lesion mask is.

    The lesion images score higher than every healthy one (their blob), and the healthy specks
    lie above every lesion value: the ``image_max`` threshold (no healthy mask) masks no lesion.
    """
    rng = np.random.default_rng(seed)
    healthy = []
    for _ in range(n_healthy):
        m = rng.uniform(0, 0.01, (size, size)).astype(np.float32)
        m[tuple(rng.integers(0, size, 2))] = 0.05
        healthy.append(m)
    maps, masks = [], []
    for _ in range(n_lesion):
        m = rng.uniform(0, 0.01, (size, size)).astype(np.float32)
        g = np.zeros((size, size), bool)
        r, c = rng.integers(0, size - 6, size=2)
        g[r : r + 6, c : c + 6] = True
        m[g] += rng.uniform(0.01, 0.03, int(g.sum())).astype(np.float32)
        maps.append(m)
        masks.append(g)
    return healthy, maps, masks


def _score(m) -> float:
    return float(np.mean(m))


def _micro_dice(maps, masks, t, drawn=None, min_px=0) -> float:
    tp = fp = fn = 0
    for i, (m, g) in enumerate(zip(maps, masks)):
        p = absolute_mask(torch.from_numpy(m), t, None, min_px)[0].numpy() > 0
        p &= True if drawn is None else bool(drawn[i])
        tp, fp, fn = tp + int((p & g).sum()), fp + int((p & ~g).sum()), fn + int((~p & g).sum())
    return 2 * tp / (2 * tp + fp + fn)


def test_dice_threshold_is_the_best_of_its_candidates_and_says_its_dice():
    _, maps, masks = _maps()
    t, d = dice_threshold(maps, masks)
    assert d == pytest.approx(_micro_dice(maps, masks, t))
    values = np.concatenate([m.ravel() for m in maps])
    for q in np.linspace(0, 0.99, 23):  # no other threshold of the range does better
        assert _micro_dice(maps, masks, float(np.quantile(values, q))) <= d + 1e-9
    assert dice_threshold(maps, [np.zeros_like(g) for g in masks]) is None  # no lesion pixel: no rule


def test_dice_threshold_counts_the_lesions_of_images_left_unmasked_as_missed():
    _, maps, masks = _maps()
    drawn = np.arange(len(maps)) % 2 == 0
    t, d = dice_threshold(maps, masks, drawn=drawn)
    assert d == pytest.approx(_micro_dice(maps, masks, t, drawn))
    assert d < dice_threshold(maps, masks)[1]


def test_dice_rule_masks_more_lesion_than_image_max_and_the_gate_keeps_healthy_images_empty():
    healthy, maps, masks = _maps()
    scores = [_score(m) for m in healthy] + [_score(m) for m in maps]
    labels = [0] * len(healthy) + [1] * len(maps)
    common = dict(healthy_maps=healthy, min_mask_px=0, lesion_maps=maps, lesion_masks=masks)
    common["lesion_scores"] = [_score(m) for m in maps]
    old = calibrate_thresholds(scores, labels, **common)  # image_max: no healthy mask, little lesion
    ungated = calibrate_thresholds(scores, labels, pixel_rule="dice", **common)
    gated = calibrate_thresholds(scores, labels, pixel_rule="dice", mask_gate="image", **common)
    assert old["pixel_rule"] == "image_max" and old["mask_gate"] == "none" and old["notes"] == []
    assert ungated["pixel_threshold"] < old["pixel_threshold"]
    assert old["val_lesion_dice"] == 0.0 and ungated["val_lesion_dice"] > 0.9  # no lesion masked, then most
    assert ungated["val_healthy_mask_rate"] > 0.5  # generous masks paint the healthy images ...
    assert gated["val_healthy_mask_rate"] <= 0.05  # ... unless the image decision gates them
    assert gated["val_lesion_dice"] == pytest.approx(ungated["val_lesion_dice"])  # every lesion image passes
    assert (gated["pixel_rule"], gated["pixel_rule_requested"], gated["n_lesion_images"]) == ("dice", "dice", 10)
    assert json.loads(json.dumps(gated)) == gated
    # whatever the rule, the healthy maps' level is the image_max threshold (the overlays' scale)
    assert ungated["healthy_peak"] == gated["healthy_peak"] == old["healthy_peak"] == old["pixel_threshold"]


def test_dice_rule_without_lesion_masks_falls_back_to_image_max_and_says_so():
    healthy, _, _ = _maps()
    scores = [_score(m) for m in healthy] + [1.0]
    t = calibrate_thresholds(scores, [0] * len(healthy) + [1], healthy, pixel_rule="dice", min_mask_px=0)
    same = calibrate_thresholds(scores, [0] * len(healthy) + [1], healthy, pixel_rule="image_max", min_mask_px=0)
    assert (t["pixel_rule"], t["pixel_rule_requested"]) == ("image_max", "dice")
    assert t["pixel_threshold"] == same["pixel_threshold"] and t["val_lesion_dice"] is None
    assert len(t["notes"]) == 1 and "lesion masks" in t["notes"][0]


def test_the_gate_needs_one_healthy_map_per_healthy_score():
    healthy, _, _ = _maps(n_healthy=4)
    with pytest.raises(ValueError, match="mask_gate 'image': 5 healthy scores but 4 healthy maps"):
        calibrate_thresholds([0.1] * 5, [0] * 5, healthy, mask_gate="image")
    with pytest.raises(ValueError, match="mask_gate must be one of"):
        calibrate_thresholds([0.1], [0], mask_gate="lungs")


def test_decision_transform_draws_no_mask_below_the_gate():
    amap = torch.zeros(1, 8, 8)
    amap[0, 2:5, 2:5] = 0.5
    item = {"score": torch.tensor([0.25]), "anomaly_map": amap}
    assert int(AnomalyDecisiond(pixel_threshold=0.1)(item)["abs_mask"].sum()) == 9  # no gate: today's mask
    assert int(AnomalyDecisiond(pixel_threshold=0.1, mask_gate_threshold=0.125)(item)["abs_mask"].sum()) == 9
    out = AnomalyDecisiond(image_threshold=0.125, pixel_threshold=0.1, mask_gate_threshold=0.25)(item)
    assert out["abs_mask"].shape == (1, 8, 8) and int(out["abs_mask"].sum()) == 0  # equal is not above
    assert out["pred_label"].tolist() == [1.0]  # the label follows its own threshold


# --- the bundle: calibrated at validation, saved, applied --------------------------------------


def _items():
    healthy, maps, masks = _maps()
    items = [
        {"score": torch.tensor([_score(m)]), "label": torch.tensor([0.0]), "anomaly_map": torch.from_numpy(m)[None]}
        for m in healthy
    ]
    for m, g in zip(maps, masks):
        items.append(
            {
                "score": torch.tensor([_score(m)]),
                "label": torch.tensor([1.0]),
                "anomaly_map": torch.from_numpy(m)[None],
                "gt_mask": torch.from_numpy(g.astype(np.float32))[None],
                "gt_available": torch.tensor([1.0]),
            }
        )
    items.append({**items[-1], "gt_available": torch.tensor([0.0])})  # a diseased image without a mask
    return items, healthy, maps, masks


def _validate(calibrator, items) -> dict:
    engine = Engine(lambda e, batch: batch)
    calibrator.attach(engine)
    engine.run([items[i : i + 4] for i in range(0, len(items), 4)], max_epochs=1)
    return engine.state.thresholds


def test_calibrator_collects_the_lesion_images_for_the_dice_rule_and_records_the_gate(tmp_path):
    from scripts.thresholds import ThresholdCalibrator

    items, healthy, maps, masks = _items()
    t = _validate(ThresholdCalibrator(tmp_path, pixel_rule="dice", mask_gate="image", min_mask_px=0), items)
    direct = calibrate_thresholds(
        [float(o["score"]) for o in items],
        [float(o["label"]) for o in items],
        healthy,
        min_mask_px=0,
        pixel_rule="dice",
        mask_gate="image",
        lesion_maps=maps,
        lesion_masks=masks,
        lesion_scores=[_score(m) for m in maps],
    )
    assert t["pixel_threshold"] == direct["pixel_threshold"] and t["n_lesion_images"] == 10  # not the 11th
    assert (t["mask_gate"], t["n_diseased"]) == ("image", 11)
    assert json.loads((tmp_path / "val_thresholds.json").read_text()) == t
    with pytest.raises(ValueError, match="mask_gate must be one of"):
        ThresholdCalibrator(tmp_path, mask_gate="lung")


def test_calibrator_default_ignores_the_lesion_images(tmp_path):
    from scripts.thresholds import ThresholdCalibrator

    items, healthy, _, _ = _items()
    t = _validate(ThresholdCalibrator(tmp_path, min_mask_px=0), items)
    assert t["n_lesion_images"] == 0 and t["mask_gate"] == "none" and t["pixel_rule"] == "image_max"
    assert t["pixel_threshold"] == pytest.approx(0.05)  # the healthy specks: image_max, as before


def _checkpoint(path: Path, **over) -> Path:
    thresholds = {
        "image_threshold_specificity": 0.02,
        "image_threshold_f1": 0.01,
        "pixel_threshold": 1e-3,
        "min_mask_px": 0,
        "pixel_rule": "dice",
        "mask_gate": "image",
        "score_map_mode": "squared",
        "score_map_sigma": 0.0,
        "score_in_lungs": False,
        "mask_in_lungs": False,
        **over,
    }
    torch.save({"model": {}, "thresholds": thresholds}, path)
    return path


def test_checkpoint_thresholds_give_the_gate_of_gated_masks_only(tmp_path, caplog):
    from scripts.thresholds import CheckpointThresholds

    gated = CheckpointThresholds(_checkpoint(tmp_path / "a.pt"), label_threshold="f1")
    assert (gated.image_threshold, gated.pixel_threshold, gated.mask_gate_threshold) == (0.01, 1e-3, 0.02)
    assert gated.info()["mask_gate_threshold"] == 0.02
    assert CheckpointThresholds(_checkpoint(tmp_path / "b.pt", mask_gate="none")).mask_gate_threshold is None
    assert CheckpointThresholds(_checkpoint(tmp_path / "c.pt"), mask_threshold="relative").mask_gate_threshold is None
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):  # the score is on another scale here
        other = CheckpointThresholds(_checkpoint(tmp_path / "d.pt"), score_in_lungs=True)
    assert other.pixel_threshold is None and other.mask_gate_threshold is None and other.mask_threshold == "relative"
    assert "gated by the image score" in caplog.text


# --- the preset ---------------------------------------------------------------------------------


def test_lesions_preset_only_overrides_train_json_and_applies_after_cpu_json():
    from monai.bundle import ConfigParser

    lesions = json.loads((CONFIGS / "lesions.json").read_text())
    train = json.loads((CONFIGS / "train.json").read_text())
    for key in lesions:
        assert key.split("#")[0] in train, f"lesions.json adds {key!r}, which train.json does not have"
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / n) for n in ("train.json", "cpu.json", "lesions.json")])
    calibrator = [
        h for h in parser.get_parsed_content("validate#handlers") if type(h).__name__ == "ThresholdCalibrator"
    ][0]
    assert (calibrator.pixel_rule, calibrator.mask_gate) == ("dice", "image")
    assert calibrator.options["mask_in_lungs"] is True
    assert parser.get_parsed_content("spatial_size") == [128, 128]  # cpu.json's, kept
    # the plain A_base opacities for the synthesis (they localise best), the paper's chain elsewhere
    assert parser.get_parsed_content("train#preprocessing_synthesis#0").variant == "base"
    assert parser.get_parsed_content("checkpoint_config#variant") == "base"
    plain = ConfigParser()
    plain.read_config([str(CONFIGS / n) for n in ("train.json", "cpu.json")])
    assert plain.get_parsed_content("variant") == "final"
    assert plain.get_parsed_content("score_map_mode") == "positive"
    assert parser.get_parsed_content("score_map_mode") == "signed"  # x - r plus 0.015 x, sigma 6
    # its setting was measured without the Dice term, which cpu.json weighs at 0.01
    assert plain.get_parsed_content("loss").w_dice == 0.01
    assert parser.get_parsed_content("loss").w_dice == 0.0
    for key in ("score_map_mode", "score_map_sigma", "score_map_intensity", "pbtseg_mode", "mask_in_lungs"):
        assert parser.get_parsed_content(f"checkpoint_config#{key}") == parser.get_parsed_content(key)
