"""Evaluation metrics: a metric with no data is null in ``metrics.json``, never 0."""

from __future__ import annotations

import json
import math

import torch
from ignite.engine import Engine


def _item(label: int, lesion: bool, hit: bool = True, score: float = 0.0) -> dict:
    gt = torch.zeros(1, 8, 8)
    if lesion:
        gt[0, 2:5, 2:5] = 1
    pred = gt.repeat(2, 1, 1) if hit else torch.zeros(2, 8, 8)
    return {
        "score": torch.tensor(score),
        "label": torch.tensor(label),
        "pred_mask": pred,
        "gt_mask": gt,
        "gt_available": torch.tensor(1.0 if lesion else 0.0),
    }


def _evaluate(items: list[dict], tmp_path) -> dict:
    from scripts.handlers import MetricsJSONSaver
    from scripts.metrics import additional_metrics, key_metric

    engine = Engine(lambda e, batch: batch)
    for name, metric in {**key_metric(), **additional_metrics([0.2, 0.4])}.items():
        metric.attach(engine, name)
    MetricsJSONSaver(str(tmp_path), print_summary=False).attach(engine)
    engine.run([items[i : i + 2] for i in range(0, len(items), 2)], max_epochs=1)
    return json.loads((tmp_path / "metrics.json").read_text())


def test_no_lesion_masks_dice_is_null(tmp_path):
    """Healthy vs diseased without lesion masks: AUC / AP measured, every Dice null (not 0.0)."""
    items = [_item(0, False, score=0.1 * i) for i in range(4)] + [_item(1, False, score=1 + i) for i in range(4)]
    out = _evaluate(items, tmp_path)
    m = out["metrics"]
    assert out["n_images"] == 8
    assert m["auc"] == 1.0 and m["ap"] == 1.0
    for t in ("0.2", "0.4"):
        assert m[f"dice_tau{t}"] is None, m
        assert m[f"micro_dice_tau{t}"] is None, m


def test_lesion_masks_dice_measured(tmp_path):
    """With lesion masks the Dice is measured, including a true 0.0 for a total miss."""
    items = [_item(0, False, score=0.0), _item(1, True, hit=True, score=1.0)]
    m = _evaluate(items, tmp_path)["metrics"]
    assert math.isclose(m["dice_tau0.2"], 1.0) and math.isclose(m["micro_dice_tau0.2"], 1.0)
    items = [_item(0, False, score=0.0), _item(1, True, hit=False, score=1.0)]
    m = _evaluate(items, tmp_path)["metrics"]
    assert m["dice_tau0.2"] == 0.0 and m["micro_dice_tau0.2"] == 0.0


def test_one_class_auc_ap_null(tmp_path):
    """Only healthy images: AUC and AP cannot be measured and are null."""
    m = _evaluate([_item(0, False, score=0.1 * i) for i in range(4)], tmp_path)["metrics"]
    assert m["auc"] is None and m["ap"] is None, m
