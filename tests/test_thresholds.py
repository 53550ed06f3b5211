"""Decision thresholds (``artasyn.thresholds``, ``scripts.thresholds``): calibrated on validation, saved, applied.

Small inputs throughout: known score lists for the calibration, items of 8 x 8 maps for the
handlers and metrics, and for inference a one-weight 1 x 1 convolution as the network
(weight 1: a perfect reconstruction; 0.5: every bright pixel is an error), so the expected
labels and masks are known exactly.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_presets import TINY_INFER
from ignite.engine import Engine

from artasyn.scoring import absolute_mask, drop_small_components, empty_mask_threshold, mask_values
from artasyn.thresholds import (
    AnomalyDecisiond,
    calibrate_thresholds,
    f1_threshold,
    quantile_threshold,
    specificity_threshold,
)

REPO = Path(__file__).resolve().parents[1]
INFERENCE = str(REPO / "bundle" / "configs" / "inference.json")

#: the map options of inference.json's defaults, as the calibration records them
DEFAULT_OPTIONS = {"score_map_mode": "squared", "score_map_sigma": 0.0, "score_in_lungs": False, "mask_in_lungs": False}


# --- the calibration (artasyn.thresholds) ------------------------------------------------------


def test_specificity_threshold_keeps_exactly_the_stated_share_of_healthy_scores_normal():
    rng = np.random.default_rng(0)
    healthy = rng.permutation(np.arange(1.0, 21.0))  # 20 healthy scores 1..20, shuffled
    for specificity, expected in ((0.95, 19.0), (0.9, 18.0), (0.5, 10.0), (1.0, 20.0), (0.01, 1.0)):
        t = specificity_threshold(healthy, specificity)
        assert t == expected, (specificity, t)
        assert np.mean(healthy <= t) == pytest.approx(max(specificity, 1 / 20))  # share labelled normal
        assert t == np.quantile(healthy, specificity, method="inverted_cdf")
    assert specificity_threshold([], 0.95) is None


def test_quantile_threshold_matches_numpy_inverted_cdf_on_random_values():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 100, 1001):
        values = rng.gamma(0.5, 0.01, size=n).astype(np.float32)
        for q in (0.5, 0.95, 0.999, 1.0):
            t = quantile_threshold(values, q)
            assert t == float(np.quantile(values, q, method="inverted_cdf")), (n, q)
            assert np.mean(values > t) <= 1 - q + 1e-12


def test_f1_threshold_on_a_toy_set():
    """Healthy 1..20, diseased 18.5, 25, 30: 'score > 20' finds 2 of 3 with no false alarm, F1 0.8."""
    scores = [*range(1, 21), 18.5, 25, 30]
    labels = [0] * 20 + [1] * 3
    assert f1_threshold(scores, labels) == (20.0, 0.8)
    # separable classes: the threshold is the highest healthy score, F1 1
    assert f1_threshold([0.1, 0.2, 0.3, 0.9, 1.0], [0, 0, 0, 1, 1]) == (0.3, 1.0)
    # every image abnormal is best: the threshold lies just under the lowest score
    t, f1 = f1_threshold([1.0, 2.0, 3.0], [1, 1, 0])
    assert t < 1.0 and t == np.nextafter(1.0, -np.inf) and f1 == pytest.approx(0.8)


def test_f1_threshold_is_the_best_of_every_cut():
    """The vectorized search equals a brute force over every threshold, ties included."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        scores = rng.integers(0, 8, size=n).astype(float)  # many ties
        labels = rng.integers(0, 2, size=n)
        if labels.min() == labels.max():
            assert f1_threshold(scores, labels) is None
            continue
        t, f1 = f1_threshold(scores, labels)
        pred = scores > t
        tp = np.sum(pred & (labels == 1))
        assert f1 == pytest.approx(2 * tp / (pred.sum() + labels.sum()))
        best = max(
            2 * np.sum((scores > c) & (labels == 1)) / (np.sum(scores > c) + labels.sum())
            for c in [scores.min() - 1, *np.unique(scores)]
        )
        assert f1 == pytest.approx(best)


def test_f1_threshold_is_null_with_one_class():
    assert f1_threshold([0.1, 0.2, 0.3], [0, 0, 0]) is None
    assert f1_threshold([0.1, 0.2, 0.3], [1, 1, 1]) is None
    healthy_only = calibrate_thresholds([0.1, 0.2, 0.3], [0, 0, 0], [np.zeros(4)])
    assert healthy_only["image_threshold_f1"] is None and healthy_only["f1"] is None
    assert healthy_only["image_threshold_specificity"] == 0.3 and healthy_only["val_sensitivity"] is None
    diseased_only = calibrate_thresholds([0.1, 0.2], [1, 1])
    assert diseased_only["image_threshold_specificity"] is None and diseased_only["pixel_threshold"] is None
    assert diseased_only["n_healthy"] == 0 and diseased_only["n_diseased"] == 2


def test_calibration_reports_what_the_thresholds_do_on_validation():
    t = calibrate_thresholds(
        [*range(1, 21), 18.5, 25, 30],
        [0] * 20 + [1] * 3,
        [np.arange(1000, dtype=np.float32)],
        0.95,
        0.999,
        pixel_rule="pooled",
    )
    assert t["image_threshold_specificity"] == 19.0 and t["val_specificity"] == 0.95
    assert t["val_sensitivity"] == pytest.approx(2 / 3)
    assert t["pixel_threshold"] == 998.0 and t["n_pixels"] == 1000  # one value of 1000 above it
    assert json.loads(json.dumps(t)) == t  # plain values only


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="scores: 1 of 3 values are NaN or infinite"):
        calibrate_thresholds([0.1, float("nan"), 0.2], [0, 0, 1])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        f1_threshold([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match=r"specificity must be in \(0, 1\], got 1.5"):
        specificity_threshold([0.1], 1.5)
    with pytest.raises(KeyError, match="needs 'score' in the item"):
        AnomalyDecisiond(image_threshold=0.1)({"anomaly_map": torch.zeros(1, 4, 4)})
    with pytest.raises(ValueError, match=r"pixel_rule must be one of \('pooled', 'image_max', 'dice'\), got 'max'"):
        calibrate_thresholds([0.1], [0], [np.zeros((4, 4))], pixel_rule="max")
    with pytest.raises(ValueError, match=r"min_mask_px 4 needs the healthy maps as H x W arrays.*shape \(16,\)"):
        calibrate_thresholds([0.1], [0], [np.zeros(16)], min_mask_px=4)
    with pytest.raises(ValueError, match="2 healthy maps but 1 lung maps"):
        calibrate_thresholds([0.1], [0], [np.zeros((4, 4))] * 2, healthy_lungs=[None])


# --- the pixel rules: pooled or image_max, and the smallest mask component ----------------------


def _healthy_maps(n: int = 20, size: int = 16, seed: int = 3) -> list[np.ndarray]:
    """Noise maps with a few bright specks and one 3 x 3 blob each, values rounded (ties)."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n):
        m = np.round(rng.gamma(0.5, 0.01, size=(size, size)), 3).astype(np.float32)
        m[tuple(rng.integers(0, size, size=(2, 3)))] = rng.uniform(0.05, 0.2, size=3)  # specks
        r, c = rng.integers(0, size - 3, size=2)
        m[r : r + 3, c : c + 3] = np.maximum(m[r : r + 3, c : c + 3], rng.uniform(0.01, 0.05))
        maps.append(m)
    return maps


def test_drop_small_components_counts_8_connected_pixels_per_plane():
    m = np.zeros((2, 6, 6), dtype=np.uint8)
    m[0, 0, 0] = 1  # a speck
    m[0, 2:4, 2:4] = 1  # a 2 x 2 blob ...
    m[0, 4, 4] = 1  # ... with a diagonal neighbour: 5 pixels
    m[1, 0, :4] = 1  # another plane: 4 pixels, not joined to plane 0
    out = drop_small_components(m, 5)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert out[0].sum() == 5 and out[0, 0, 0] == 0 and out[1].sum() == 0
    assert drop_small_components(m, 4).sum() == 9 and drop_small_components(m, 0) is m
    t = torch.as_tensor(m, dtype=torch.float32)
    assert torch.equal(drop_small_components(t, 5), torch.as_tensor(out, dtype=torch.float32))
    assert absolute_mask(t[:1], 0.5, min_px=2).sum() == 5  # the decision masks drop specks too


def test_empty_mask_threshold_is_the_lowest_threshold_that_leaves_the_mask_empty():
    lung = np.zeros((16, 16), dtype=bool)
    lung[:, :9] = True
    for amap in _healthy_maps(n=6):
        for min_px, inside in itertools.product((0, 1, 2, 5, 9, 40, 1000), (None, lung)):
            t = empty_mask_threshold(amap, inside, min_px)
            assert absolute_mask(amap, t, inside, min_px).sum() == 0, (min_px, inside is None)
            values = mask_values(torch.as_tensor(amap), None if inside is None else torch.as_tensor(inside))
            below = values[values < t]
            if below.numel():  # any lower threshold leaves something masked
                assert absolute_mask(amap, float(below.max()), inside, min_px).sum() >= max(min_px, 1)
            else:
                assert t == float(values.min())
        assert empty_mask_threshold(amap) == float(amap.max())


def test_image_max_rule_leaves_at_most_1_minus_q_of_the_healthy_images_with_a_mask():
    maps = _healthy_maps()
    for q, min_px in itertools.product((0.5, 0.8, 0.9, 1.0), (0, 4, 9)):
        t = calibrate_thresholds(
            [0.0] * 20, [0] * 20, maps, pixel_quantile=q, pixel_rule="image_max", min_mask_px=min_px
        )
        masked = [bool(absolute_mask(m, t["pixel_threshold"], min_px=min_px).any()) for m in maps]
        assert np.mean(masked) == t["val_healthy_mask_rate"] <= 1 - q + 1e-9, (q, min_px)
        assert (t["pixel_rule"], t["min_mask_px"], t["pixel_quantile"]) == ("image_max", min_px, q)
    # the rule bounds images, not pixels: at q = 0.9 the pooled threshold masks nearly every image
    pooled = calibrate_thresholds([0.0] * 20, [0] * 20, maps, pixel_quantile=0.9, pixel_rule="pooled")
    assert pooled["val_healthy_mask_rate"] == 1.0 and pooled["pixel_rule"] == "pooled"
    image_max = calibrate_thresholds([0.0] * 20, [0] * 20, maps, pixel_quantile=0.9, pixel_rule="image_max")
    assert pooled["healthy_peak"] == image_max["healthy_peak"] == image_max["pixel_threshold"]
    assert calibrate_thresholds([0.0], [0])["healthy_peak"] is None  # no healthy map


def test_pooled_rule_keeps_its_threshold_and_counts_the_masks_after_dropping_components():
    maps = _healthy_maps()
    plain = calibrate_thresholds([0.0] * 20, [0] * 20, maps, pixel_quantile=0.99, pixel_rule="pooled", min_mask_px=0)
    filtered = calibrate_thresholds([0.0] * 20, [0] * 20, maps, pixel_quantile=0.99, pixel_rule="pooled", min_mask_px=4)
    pooled = np.concatenate([m.ravel() for m in maps])
    assert plain["pixel_threshold"] == filtered["pixel_threshold"] == np.quantile(pooled, 0.99, method="inverted_cdf")
    rates = [np.mean([bool(absolute_mask(m, plain["pixel_threshold"], min_px=k).any()) for m in maps]) for k in (0, 4)]
    assert (plain["val_healthy_mask_rate"], filtered["val_healthy_mask_rate"]) == tuple(rates)
    assert rates[1] < rates[0]  # the specks go, the blobs stay


def test_min_mask_px_defaults_to_a_share_of_the_map():
    """``None`` (the default): MIN_MASK_AREA_FRACTION of the map, 32 px at 128 x 128."""
    amap = np.zeros((128, 128), dtype=np.float32)
    amap[0, 0] = 1.0  # a speck
    amap[50:56, 50:56] = 0.5  # a 36-pixel blob
    t = calibrate_thresholds([0.0], [0], [amap])
    assert (t["pixel_rule"], t["min_mask_px"], t["pixel_threshold"]) == ("image_max", 32, 0.5)
    item = {"score": torch.tensor([0.0]), "anomaly_map": torch.as_tensor(amap)[None]}
    assert int(AnomalyDecisiond(pixel_threshold=0.25)(item)["abs_mask"].sum()) == 36  # the speck dropped
    assert calibrate_thresholds([0.0], [0], [amap.ravel()])["min_mask_px"] == 0  # values without a shape


def test_decision_transform_drops_components_under_min_mask_px():
    amap = torch.zeros(1, 8, 8)
    amap[0, 0, 0] = 0.5  # a speck
    amap[0, 4:6, 4:6] = 0.5  # a 2 x 2 blob
    item = {"score": torch.tensor([0.1]), "anomaly_map": amap}
    assert int(AnomalyDecisiond(pixel_threshold=0.1)(item)["abs_mask"].sum()) == 5
    out = AnomalyDecisiond(pixel_threshold=0.1, min_mask_px=4)(item)["abs_mask"]
    assert out.shape == (1, 8, 8) and int(out.sum()) == 4 and out[0, 0, 0] == 0
    assert int(AnomalyDecisiond(pixel_threshold=0.1, min_mask_px=5)(item)["abs_mask"].sum()) == 0


# --- absolute masks and the decision transform -------------------------------------------------


def test_absolute_mask_is_empty_for_a_perfect_reconstruction_and_follows_the_threshold():
    assert absolute_mask(torch.zeros(1, 8, 8), 0.0).sum() == 0  # strict: zero error is never masked
    amap = torch.zeros(1, 8, 8)
    amap[0, 2:4, 2:4] = 0.05
    amap[0, 6, 6] = 0.01
    assert int(absolute_mask(amap, 0.02).sum()) == 4
    assert int(absolute_mask(amap, 0.005).sum()) == 5
    lung = torch.zeros(1, 8, 8)
    lung[0, :, :3] = 1
    assert int(absolute_mask(amap, 0.005, lung).sum()) == 2  # only inside the lungs
    assert absolute_mask(amap, 0.005, torch.zeros(1, 8, 8)).sum() == 5  # no lung found: whole image
    assert mask_values(amap, lung).numel() == 24 and mask_values(amap).numel() == 64


def test_decision_transform_writes_label_and_mask_and_nothing_without_thresholds():
    amap = torch.zeros(1, 8, 8)
    amap[0, 0, 0] = 0.5
    item = {"score": torch.tensor([amap.mean()]), "anomaly_map": amap, "abs_mask": "kept"}
    out = AnomalyDecisiond(image_threshold=0.001, pixel_threshold=0.1)(item)
    assert out["pred_label"].tolist() == [1.0] and int(out["abs_mask"].sum()) == 1
    out = AnomalyDecisiond(image_threshold=0.01, pixel_threshold=0.5)(item)  # score 0.0078, equal is not above
    assert out["pred_label"].tolist() == [0.0] and int(out["abs_mask"].sum()) == 0
    out = AnomalyDecisiond()(item)
    assert "pred_label" not in out and out["abs_mask"] == "kept"


# --- the validation handler and the checkpoints ------------------------------------------------


def _item(label: int, score: float, peak: float = 0.0) -> dict:
    amap = torch.zeros(1, 8, 8)
    amap[0, 0, :4] = peak  # 4 pixels at the peak, in the first row
    return {"score": torch.tensor([score]), "label": torch.tensor([float(label)]), "anomaly_map": amap}


def _validate(handlers, items, epochs: int = 1) -> Engine:
    engine = Engine(lambda e, batch: batch)
    for h in handlers:
        h.attach(engine)
    engine.run([items[i : i + 3] for i in range(0, len(items), 3)], max_epochs=epochs)
    return engine


def test_saved_option_reads_an_unrecorded_input_sigma_as_zero_and_nothing_else():
    from scripts.thresholds import saved_option

    old = {"score_map_mode": "positive", "score_map_sigma": 3.0}  # saved before score_input_sigma was recorded
    assert saved_option(old, "score_input_sigma") == 0.0
    assert saved_option({**old, "score_input_sigma": 1.5}, "score_input_sigma") == 1.5
    assert saved_option(old, "score_map_sigma") == 3.0
    assert saved_option(old, "score_in_lungs") is None  # not recorded and no earlier value: unknown


def test_calibrator_computes_every_epoch_and_writes_the_json(tmp_path):
    from scripts.thresholds import ThresholdCalibrator

    items = [_item(0, 0.1 * i, peak=0.01 * i) for i in range(1, 11)] + [_item(1, 2.0), _item(1, 0.55)]
    calibrator = ThresholdCalibrator(tmp_path, specificity=0.9, pixel_quantile=0.99, pixel_rule="pooled")
    engine = _validate([calibrator], items, epochs=2)
    t = engine.state.thresholds
    values = np.concatenate([mask_values(o["anomaly_map"]).numpy() for o in items[:10]])
    assert t["image_threshold_specificity"] == pytest.approx(0.9)  # 9th smallest of 0.1 .. 1.0
    assert t["pixel_threshold"] == pytest.approx(np.quantile(values, 0.99, method="inverted_cdf"))
    assert t["n_healthy"] == 10 and t["n_diseased"] == 2 and t["n_pixels"] == 640 and t["epoch"] == 2
    assert t["image_threshold_f1"] is not None
    assert {k: t[k] for k in DEFAULT_OPTIONS} == DEFAULT_OPTIONS
    assert json.loads((tmp_path / "val_thresholds.json").read_text()) == t


def test_calibrator_takes_pixels_inside_the_lungs_when_masks_are(tmp_path):
    from scripts.thresholds import ThresholdCalibrator

    items = [_item(0, 0.1, peak=1.0) for _ in range(3)]
    for o in items:
        o["lung"] = torch.zeros(1, 8, 8)
        o["lung"][0, 4:, :] = 1  # the peak row lies outside
    t = _validate([ThresholdCalibrator(tmp_path, mask_in_lungs=True, pixel_quantile=1.0)], items).state.thresholds
    assert t["pixel_threshold"] == 0.0 and t["n_pixels"] == 3 * 32 and t["mask_in_lungs"] is True
    t = _validate([ThresholdCalibrator(tmp_path, pixel_quantile=1.0)], items).state.thresholds
    assert t["pixel_threshold"] == 1.0


def test_calibrator_applies_its_pixel_rule_and_min_mask_px_inside_the_lungs(tmp_path):
    """Healthy maps: a 4-pixel run at 0.5 (row 0) and a speck at 0.9 (row 7), lungs rows 4-7 or none."""
    from scripts.thresholds import ThresholdCalibrator

    items = [_item(0, 0.1, peak=0.5) for _ in range(4)] + [_item(1, 0.9, peak=0.5)]
    for o in items:
        o["anomaly_map"][0, 7, 7] = 0.9
        o["lung"] = torch.zeros(1, 8, 8)
        o["lung"][0, 4:, :] = 1
    settings = [
        ({"pixel_rule": "image_max"}, 0.9, 1.0),  # each image's largest value: no healthy mask left
        ({"pixel_rule": "image_max", "min_mask_px": 2}, 0.5, 1.0),  # the speck is dropped: the run's value
        ({"pixel_rule": "image_max", "min_mask_px": 5}, 0.0, 1.0),  # no component of 5: the smallest value
        ({"pixel_rule": "image_max", "min_mask_px": 2, "mask_in_lungs": True}, 0.0, 1.0),  # only the speck inside
        ({"pixel_rule": "pooled", "pixel_quantile": 0.9, "min_mask_px": 2}, 0.0, 0.0),  # speck and run masked
    ]
    for options, threshold, empty in settings:
        calibrator = ThresholdCalibrator(tmp_path, **options)
        t = _validate([calibrator], items).state.thresholds
        assert t["pixel_threshold"] == pytest.approx(threshold), options
        assert t["val_healthy_mask_rate"] == 1.0 - empty, options
        assert (t["pixel_rule"], t["min_mask_px"]) == (options["pixel_rule"], options.get("min_mask_px", 0))
        assert json.loads((tmp_path / "val_thresholds.json").read_text()) == t
    with pytest.raises(ValueError, match="pixel_rule must be one of"):
        ThresholdCalibrator(tmp_path, pixel_rule="max")
    with pytest.raises(ValueError, match="min_mask_px must be >= 0, got -1"):
        ThresholdCalibrator(tmp_path, min_mask_px=-1)


def _best_at_epoch_1() -> Engine:
    """An engine with the state MONAI's evaluator keeps, its first epoch the best."""
    engine = Engine(lambda e, batch: batch)
    engine.state.best_metric_epoch, engine.state.best_metric, engine.state.key_metric_name = 1, 0.9, "val_auc"
    return engine


def test_best_model_and_final_weights_carry_the_thresholds_of_their_validation(tmp_path):
    from scripts.checkpoint import BestModelSaver, TrainingCheckpoint, load_checkpoint
    from scripts.thresholds import ThresholdCalibrator

    net = torch.nn.Linear(2, 2)
    saver = BestModelSaver(tmp_path, {"model": net})
    calibrator = ThresholdCalibrator(tmp_path)
    items = [_item(0, 0.1), _item(0, 0.2), _item(1, 0.9)]
    engine = _best_at_epoch_1()
    calibrator.attach(engine)
    saver.attach(engine)
    engine.run([items], max_epochs=1)
    saved = load_checkpoint(tmp_path / "model.pt")
    assert saved["thresholds"] == engine.state.thresholds and saved["thresholds"]["epoch"] == 1

    ema = torch.optim.swa_utils.AveragedModel(net)
    handler = TrainingCheckpoint(tmp_path, net, ema, torch.optim.SGD(net.parameters(), lr=0.1), validator=engine)
    trainer = Engine(lambda e, b: None)
    trainer.state.epoch = 1
    handler.complete(trainer)
    for name in ("last.pt", "model_final.pt"):
        assert load_checkpoint(tmp_path / name)["thresholds"] == engine.state.thresholds, name
    engine.state.thresholds = None  # resuming restores the last validation's thresholds
    handler.load(trainer, tmp_path / "last.pt")
    assert engine.state.thresholds == saved["thresholds"]


def test_best_model_saver_refuses_thresholds_of_another_epoch(tmp_path, caplog):
    from scripts.checkpoint import BestModelSaver, load_checkpoint

    engine = _best_at_epoch_1()
    engine.state.thresholds = {"epoch": 0, "pixel_threshold": 0.1}  # left by an earlier validation
    BestModelSaver(tmp_path, {"model": torch.nn.Linear(2, 2)}).attach(engine)
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        engine.run([[]], max_epochs=1)
    assert "thresholds" not in load_checkpoint(tmp_path / "model.pt")
    assert "decision thresholds are of epoch 0, not of epoch 1" in caplog.text


# --- reading them back (scripts.thresholds.CheckpointThresholds) ------------------------------


def _thresholds(**over) -> dict:
    return {
        "image_threshold_specificity": 1e-4,
        "specificity": 0.95,
        "val_specificity": 0.95,
        "val_sensitivity": 0.5,
        "image_threshold_f1": 2e-4,
        "f1": 0.7,
        "pixel_threshold": 1e-3,
        "pixel_quantile": 0.999,
        "pixel_rule": "image_max",
        "min_mask_px": 3,
        "val_healthy_mask_rate": 0.05,
        "n_healthy": 20,
        "n_diseased": 20,
        "n_pixels": 20 * 64 * 64,
        **DEFAULT_OPTIONS,
        "epoch": 3,
        **over,
    }


def _conv_checkpoint(path: Path, weight: float, thresholds: dict | None) -> Path:
    ckpt = {"model": {"weight": torch.full((1, 1, 1, 1), float(weight))}}
    if thresholds is not None:
        ckpt["thresholds"] = thresholds
    torch.save(ckpt, path)
    return path


def test_checkpoint_thresholds_choose_specificity_or_f1(tmp_path):
    from scripts.thresholds import CheckpointThresholds

    path = _conv_checkpoint(tmp_path / "model.pt", 1.0, _thresholds())
    spec = CheckpointThresholds(path)
    assert (spec.image_threshold, spec.label_threshold, spec.pixel_threshold, spec.mask_threshold) == (
        1e-4,
        "specificity",
        1e-3,
        "absolute",
    )
    f1 = CheckpointThresholds(path, label_threshold="f1", mask_threshold="relative")
    assert (f1.image_threshold, f1.label_threshold, f1.pixel_threshold, f1.mask_threshold) == (
        2e-4,
        "f1",
        None,
        "relative",
    )
    with pytest.raises(ValueError, match="label_threshold must be one of"):
        CheckpointThresholds(path, label_threshold="youden")


def test_checkpoint_healthy_peak_is_saved_or_the_image_max_threshold_and_only_for_its_map(tmp_path):
    from scripts.thresholds import CheckpointThresholds

    saved = _conv_checkpoint(tmp_path / "saved.pt", 1.0, _thresholds(healthy_peak=5e-4, pixel_rule="dice"))
    assert CheckpointThresholds(saved).healthy_peak == 5e-4
    assert CheckpointThresholds(saved, mask_threshold="relative").healthy_peak == 5e-4  # not tied to the masks
    old = _conv_checkpoint(tmp_path / "old.pt", 1.0, _thresholds())  # image_max, saved before the level
    assert CheckpointThresholds(old).healthy_peak == 1e-3 == CheckpointThresholds(old).pixel_threshold
    old_dice = _conv_checkpoint(tmp_path / "old_dice.pt", 1.0, _thresholds(pixel_rule="dice"))
    assert CheckpointThresholds(old_dice).healthy_peak is None  # unknown: its threshold is another level
    other_map = _conv_checkpoint(tmp_path / "other.pt", 1.0, _thresholds(healthy_peak=5e-4, score_map_sigma=3.0))
    assert CheckpointThresholds(other_map).healthy_peak is None


def test_f1_asked_of_a_checkpoint_without_it_is_an_error(tmp_path):
    from scripts.thresholds import CheckpointThresholds

    path = _conv_checkpoint(tmp_path / "model.pt", 1.0, _thresholds(image_threshold_f1=None, f1=None, n_diseased=0))
    with pytest.raises(ValueError, match="no F1-optimal threshold.*20 healthy and 0 diseased"):
        CheckpointThresholds(path, label_threshold="f1")


def test_thresholds_of_another_anomaly_map_are_not_applied(tmp_path, caplog):
    from scripts.thresholds import CheckpointThresholds

    path = _conv_checkpoint(tmp_path / "model.pt", 1.0, _thresholds(score_map_sigma=3.0))
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        t = CheckpointThresholds(path)
    assert t.image_threshold is None and t.pixel_threshold is None and t.mask_threshold == "relative"
    assert "score_map_sigma 3.0 at validation, 0.0 here" in caplog.text
    lungs = CheckpointThresholds(path, score_map_sigma=3.0, score_in_lungs=True)  # only the score changes
    assert lungs.image_threshold is None and lungs.pixel_threshold == 1e-3


def test_thresholds_of_another_input_smoothing_are_not_applied_and_old_ones_had_none(tmp_path, caplog):
    """Thresholds saved before ``score_input_sigma`` existed were calibrated on unsmoothed inputs."""
    from scripts.thresholds import CheckpointThresholds

    old = _conv_checkpoint(tmp_path / "old.pt", 1.0, _thresholds())  # no score_input_sigma: 0
    assert CheckpointThresholds(old).image_threshold == 1e-4
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        t = CheckpointThresholds(old, score_input_sigma=1.5)
    assert t.image_threshold is None and t.pixel_threshold is None
    assert "score_input_sigma 0.0 at validation, 1.5 here" in caplog.text
    new = _conv_checkpoint(tmp_path / "new.pt", 1.0, _thresholds(score_input_sigma=1.5))
    t = CheckpointThresholds(new, score_input_sigma=1.5)
    assert (t.image_threshold, t.pixel_threshold) == (1e-4, 1e-3)


def test_thresholds_of_another_intensity_weight_are_not_applied_and_old_ones_had_none(tmp_path, caplog):
    """Thresholds saved before ``score_map_intensity`` existed were calibrated without the term."""
    from scripts.thresholds import CheckpointThresholds

    old = _conv_checkpoint(tmp_path / "old.pt", 1.0, _thresholds())  # no score_map_intensity: 0
    assert CheckpointThresholds(old).image_threshold == 1e-4
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        t = CheckpointThresholds(old, score_map_mode="signed", score_map_intensity=0.015)
    assert t.image_threshold is None and t.pixel_threshold is None
    assert "score_map_intensity 0.0 at validation, 0.015 here" in caplog.text
    saved = _thresholds(score_map_mode="signed", score_map_intensity=0.015)
    new = _conv_checkpoint(tmp_path / "new.pt", 1.0, saved)
    t = CheckpointThresholds(new, score_map_mode="signed", score_map_intensity=0.015)
    assert (t.image_threshold, t.pixel_threshold) == (1e-4, 1e-3)


def test_old_checkpoint_without_thresholds_is_read_and_said(tmp_path, caplog):
    from scripts.thresholds import CheckpointThresholds

    path = _conv_checkpoint(tmp_path / "model.pt", 1.0, None)
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        t = CheckpointThresholds(path)
    assert t.thresholds is None and t.image_threshold is None and t.pixel_threshold is None
    assert "has no decision thresholds" in caplog.text and "relative threshold tau" in caplog.text
    assert t.info()["mask_threshold"] == "relative"


def test_min_mask_px_is_read_from_the_checkpoint_and_zero_for_thresholds_saved_before_it(tmp_path):
    from scripts.thresholds import CheckpointThresholds

    t = CheckpointThresholds(_conv_checkpoint(tmp_path / "new.pt", 1.0, _thresholds()))
    assert (t.pixel_threshold, t.min_mask_px, t.info()["min_mask_px"]) == (1e-3, 3, 3)
    assert CheckpointThresholds(tmp_path / "new.pt", mask_threshold="relative").min_mask_px == 0
    before = {k: v for k, v in _thresholds().items() if k not in ("pixel_rule", "min_mask_px", "val_healthy_mask_rate")}
    t = CheckpointThresholds(_conv_checkpoint(tmp_path / "old.pt", 1.0, before))
    assert (t.pixel_threshold, t.min_mask_px, t.mask_threshold) == (1e-3, 0, "absolute")


# --- the decision metrics of evaluate.json -----------------------------------------------------


def test_sensitivity_specificity_and_healthy_mask_rate(tmp_path):
    from scripts.metrics import decision_metrics

    def item(label, pred, masked):
        mask = torch.zeros(1, 8, 8)
        mask[0, 0, 0] = float(masked)
        return {
            "label": torch.tensor([float(label)]),
            "pred_label": torch.tensor([float(pred)]),
            "abs_mask": mask,
            "gt_mask": torch.zeros(1, 8, 8),
            "gt_available": torch.tensor([0.0]),
        }

    items = [item(0, 0, 0), item(0, 0, 1), item(0, 1, 1), item(0, 0, 0), item(1, 1, 1), item(1, 0, 0)]
    engine = Engine(lambda e, batch: batch)
    for name, metric in decision_metrics().items():
        metric.attach(engine, name)
    engine.run([items[:4], items[4:]], max_epochs=1)
    m = engine.state.metrics
    assert m["sensitivity"] == 0.5 and m["specificity"] == 0.75 and m["healthy_mask_rate"] == 0.5
    assert np.isnan(m["micro_dice_absolute"])  # no lesion mask to score
    # a checkpoint without thresholds: no pred_label, no abs_mask -> every decision metric NaN
    bare = [{k: v for k, v in o.items() if k not in ("pred_label", "abs_mask")} for o in items]
    engine.run([bare], max_epochs=1)
    assert all(np.isnan(engine.state.metrics[k]) for k in decision_metrics())


# --- inference.json with the thresholds of the checkpoint -------------------------------------

#: the reconstruction network: a 1 x 1 convolution whose one weight the checkpoint sets
CONV_NET = {
    "network_def": {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 1, "bias": False}
}


def _infer(ckpt: Path, out: Path, inputs: list[str], **override) -> list[dict]:
    from monai.bundle import ConfigWorkflow

    settings = {k: v for k, v in TINY_INFER.items() if not k.startswith("network_def")}
    wf = ConfigWorkflow(
        config_file=INFERENCE,
        workflow_type="infer",
        logging_file=False,
        ckpt_path=str(ckpt),
        output_dir=str(out),
        input_files=inputs,
        **settings,
        **CONV_NET,
        **override,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(out / "anomaly_scores.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> list[str]:
    from PIL import Image

    from artasyn.phantom import make_phantom

    folder = tmp_path_factory.mktemp("cxr")
    paths = []
    for i in range(2):
        paths.append(str(folder / f"ph{i}.png"))
        Image.fromarray(make_phantom(64, diseased=i == 1, seed=i)["image"]).save(paths[-1])
    return paths


def test_inference_labels_normal_and_masks_nothing_when_the_reconstruction_is_perfect(phantoms, tmp_path):
    from PIL import Image

    ckpt = _conv_checkpoint(tmp_path / "model.pt", 1.0, _thresholds())
    rows = _infer(ckpt, tmp_path / "out", phantoms)
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "ok" and float(row["score"]) == 0.0
        assert (row["label"], row["label_threshold"], row["image_threshold"]) == ("normal", "specificity", "0.0001")
        assert (row["mask_rule"], row["mask_threshold"], row["mask_min_px"]) == ("absolute", "0.001", "3")
        assert row["anomaly_area_px"] == "0"
        assert not np.asarray(Image.open(tmp_path / "out" / row["mask"])).any()


def test_inference_labels_abnormal_and_masks_the_error_above_the_pixel_threshold(phantoms, tmp_path):
    """Weight 0.5: the error is x / 2, far above both thresholds wherever the image is not black."""
    import nibabel as nib
    from PIL import Image

    ckpt = _conv_checkpoint(tmp_path / "model.pt", 0.5, _thresholds())
    rows = _infer(ckpt, tmp_path / "out", phantoms, label_threshold="f1")
    for row in rows:
        assert (row["label"], row["label_threshold"], row["image_threshold"]) == ("abnormal", "f1", "0.0002")
        heat = np.asarray(nib.load(str(tmp_path / "out" / row["heatmap"])).dataobj)
        mask = np.asarray(Image.open(tmp_path / "out" / row["mask"])) > 0
        assert np.array_equal(mask, drop_small_components(heat > 1e-3, 3))  # 64 px: the map is not resampled
        assert 0 < int(row["anomaly_area_px"]) == int(mask.sum())
    # a smallest component larger than the image: labelled abnormal, nothing masked
    ckpt = _conv_checkpoint(tmp_path / "model.pt", 0.5, _thresholds(min_mask_px=64 * 64 + 1))
    for row in _infer(ckpt, tmp_path / "out2", phantoms):
        assert (row["label"], row["mask_min_px"], row["anomaly_area_px"]) == ("abnormal", "4097", "0")


def test_inference_with_an_old_checkpoint_writes_no_label_and_relative_masks(phantoms, tmp_path):
    ckpt = _conv_checkpoint(tmp_path / "model.pt", 0.5, None)
    rows = _infer(ckpt, tmp_path / "out", phantoms)
    for row in rows:
        assert row["status"] == "ok" and row["label"] == "" and row["label_threshold"] == ""
        assert (row["mask_rule"], row["mask_threshold"]) == ("relative", "0.2")
        assert int(row["anomaly_area_px"]) > 0


def test_inference_draws_gated_masks_only_on_images_above_the_specificity_threshold(phantoms, tmp_path):
    """Weight 0.5 (every bright pixel an error): labelled abnormal by F1, masked only when the gate lets it."""
    from PIL import Image

    gate_shut = _thresholds(mask_gate="image", image_threshold_specificity=10.0)
    closed = _conv_checkpoint(tmp_path / "closed.pt", 0.5, gate_shut)
    for row in _infer(closed, tmp_path / "closed", phantoms, label_threshold="f1"):
        assert (row["label"], row["mask_rule"], row["anomaly_area_px"]) == ("abnormal", "absolute", "0")
        assert not np.asarray(Image.open(tmp_path / "closed" / row["mask"])).any()
    opened = _conv_checkpoint(tmp_path / "open.pt", 0.5, _thresholds(mask_gate="image"))
    for row in _infer(opened, tmp_path / "open", phantoms):
        assert row["label"] == "abnormal" and int(row["anomaly_area_px"]) > 0
