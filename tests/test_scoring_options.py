"""The anomaly map's options: one-sided (brightening only), signed plus intensity, smoothed; defaults unchanged."""

from __future__ import annotations

import pytest
import torch

from artasyn.scoring import AnomalyScored, anomaly_map, anomaly_masks, anomaly_scores


def _pair():
    x = torch.zeros(1, 16, 16)
    r = torch.zeros(1, 16, 16)
    x[0, 4:8, 4:8] = 0.5  # an opacity: the input brighter than its healthy reconstruction
    r[0, 10:12, 10:12] = 0.5  # the reconstruction brighter than the input: not an opacity
    return x, r


def test_default_is_the_papers_map():
    x, r = _pair()
    assert torch.equal(anomaly_map(x, r), (x - r) ** 2)
    _, _, masks = anomaly_scores(x, r, taus=(0.2,))
    assert torch.equal(masks, anomaly_masks(x, r, taus=(0.2,)))


def test_positive_keeps_only_brightening():
    x, r = _pair()
    amap = anomaly_map(x, r, mode="positive")
    assert amap[0, 4:8, 4:8].min() == pytest.approx(0.25) and amap[0, 10:12, 10:12].max() == 0
    _, score, masks = anomaly_scores(x, r, taus=(0.2,), map_mode="positive")
    assert float(score) == pytest.approx(16 * 0.25 / 256)
    assert masks[0, 4:8, 4:8].all() and not masks[0, 10:12, 10:12].any()


def test_sigma_smooths_the_difference():
    x = torch.zeros(1, 32, 32)
    x[0, ::2] = 0.2  # pixel-scale detail missed by the reconstruction: +0.2, -0.2 on alternate rows
    x[0, 1::2] = -0.2
    x[0, 12:20, 12:20] += 0.5  # a blob
    r = torch.zeros(1, 32, 32)
    sharp = anomaly_map(x, r)
    smooth = anomaly_map(x, r, sigma=2.0)
    assert smooth[0, 28:, :].mean() < 0.1 * sharp[0, 28:, :].mean()  # detail error mostly gone
    assert smooth[0, 14:18, 14:18].mean() > 0.5 * 0.5**2  # the blob stays


def test_dict_transform_rejects_unknown_mode():
    with pytest.raises(ValueError):
        AnomalyScored(map_mode="abs")
    d = AnomalyScored(map_mode="positive", map_sigma=1.0)({"image": torch.rand(1, 8, 8), "pred": torch.rand(1, 8, 8)})
    assert d["anomaly_map"].min() >= 0 and d["score"].shape == (1,)


def test_signed_keeps_the_sign_and_adds_the_intensity():
    """``signed`` ranks the darker pixels that ``positive`` ties at 0; ``intensity`` adds the
    brightness, so an opacity the network reconstructed as bright as it is still stands out."""
    x, r = _pair()
    x[0, 0:2, 0:2] = 0.5
    r[0, 0:2, 0:2] = 0.5  # a bright region reconstructed exactly: no error
    signed = anomaly_map(x, r, mode="signed")
    assert torch.equal(signed, x - r)  # not squared; negative where the reconstruction is brighter
    assert signed[0, 10:12, 10:12].max() == pytest.approx(-0.5) and anomaly_map(x, r, "positive")[0, 10, 10] == 0
    both = anomaly_map(x, r, mode="signed", intensity=0.2)
    assert torch.allclose(both, x - r + 0.2 * x)
    assert both[0, 0, 0] > both[0, 15, 15]  # the reconstructed bright region ranks above the background
    smoothed = anomaly_map(x, r, "signed", sigma=2.0, intensity=0.2)
    assert torch.allclose(smoothed, anomaly_map(x, r, "signed", 2.0) + 0.2 * x)  # the intensity is not smoothed
    amap, score, _ = anomaly_scores(x, r, taus=(0.2,), map_mode="signed", map_intensity=0.2)
    assert torch.equal(amap, both) and float(score) == pytest.approx(float(both.mean()))
    d = AnomalyScored(map_mode="signed", map_intensity=0.2)({"image": x, "pred": r})
    assert torch.equal(d["anomaly_map"], both)


def test_intensity_needs_the_signed_map_and_a_weight_of_zero_or_more():
    x, r = _pair()
    with pytest.raises(ValueError, match="needs mode 'signed'"):
        anomaly_map(x, r, mode="positive", intensity=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        anomaly_map(x, r, mode="signed", intensity=-0.1)
    with pytest.raises(ValueError, match="needs mode 'signed'"):
        AnomalyScored(map_mode="squared", map_intensity=0.1)  # at construction, not at the first image
