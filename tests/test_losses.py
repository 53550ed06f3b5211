"""The loss of eq. 1 (docs/method.md section 3), term by term, on small hand-made tensors."""

import pytest
import torch

from artasyn.losses import (
    ARTASynLoss,
    FeatureConsistencyLoss,
    GlobalReconstructionLoss,
    LocalReconstructionLoss,
    SoftDiceAnomalyLoss,
    soft_anomaly_map,
)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 1, 8, 8, generator=g)
    inputs = target.clone()
    mask = torch.zeros(3, 1, 8, 8)
    mask[1, :, 2:5, 2:6] = 1
    mask[2, :, 0:3, 0:3] = 1
    inputs[mask.bool()] = (inputs[mask.bool()] + 0.8).clamp(max=1)
    recon = torch.rand(3, 1, 8, 8, generator=g)
    feats_in = torch.randn(3, 4, 2, 2, generator=g)
    feats_target = torch.randn(3, 4, 2, 2, generator=g)
    return inputs, recon, target, mask, feats_in, feats_target


def test_global_loss_is_mean_squared_error(batch):
    _, recon, target, *_ = batch
    expected = ((recon - target) ** 2).mean()
    assert torch.allclose(GlobalReconstructionLoss()(recon, target), expected)


def test_local_loss_averages_masked_error_over_all_pixels(batch):
    _, recon, target, mask, *_ = batch
    per_sample = [((recon[i] - target[i]) ** 2 * mask[i]).sum() / mask[i].numel() for i in range(3)]
    assert torch.allclose(LocalReconstructionLoss()(recon, target, mask), torch.stack(per_sample).mean())


def test_local_loss_is_zero_with_empty_mask(batch):
    _, recon, target, mask, *_ = batch
    assert LocalReconstructionLoss()(recon, target, torch.zeros_like(mask)) == 0


def test_feature_loss_is_one_minus_cosine(batch):
    *_, fi, ft = batch
    a, b = fi.flatten(1), ft.flatten(1)
    expected = (1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean()
    assert torch.allclose(FeatureConsistencyLoss()(fi, ft), expected, atol=1e-6)
    assert FeatureConsistencyLoss()(fi, 3 * fi) < 1e-6  # scale-invariant, 0 for parallel features


def test_soft_anomaly_map_matches_formula_and_threshold():
    x = torch.tensor([0.0, 0.0, 0.0])
    r = torch.tensor([0.0, 0.2**0.5, 0.9])
    m = soft_anomaly_map(x, r, threshold=0.2, scale=50.0)
    assert torch.allclose(m, torch.sigmoid(50 * (r**2 - 0.2)))
    assert m[0] < 1e-4 and abs(m[1] - 0.5) < 1e-5 and m[2] > 0.99


def test_dice_loss_matches_monai_dice_on_soft_map(batch):
    inputs, recon, _, mask, *_ = batch
    from monai.losses import DiceLoss

    pred = soft_anomaly_map(inputs, recon)
    expected = DiceLoss(smooth_nr=1.0, smooth_dr=1.0, batch=True)(pred, mask)
    assert torch.allclose(SoftDiceAnomalyLoss()(inputs, recon, mask), expected)


def test_dice_loss_passes_gradient_to_reconstruction(batch):
    inputs, recon, _, mask, *_ = batch
    recon = recon.clone().requires_grad_(True)
    SoftDiceAnomalyLoss(scale=10.0)(inputs, recon, mask).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0


@pytest.mark.parametrize("batch_dice", [True, False])
def test_dice_loss_with_empty_masks_is_finite_and_prefers_empty_prediction(batch_dice):
    x = torch.zeros(2, 1, 8, 8)
    empty = torch.zeros(2, 1, 8, 8)
    loss = SoftDiceAnomalyLoss(batch=batch_dice)
    perfect = loss(x, x.clone(), empty)
    recon = torch.ones(2, 1, 8, 8, requires_grad=True)  # error 1 everywhere: all predicted anomalous
    bad = loss(x, recon, empty)
    bad.backward()
    assert torch.isfinite(perfect) and torch.isfinite(bad) and perfect < 0.01 < 0.9 < bad
    assert torch.isfinite(recon.grad).all()


def test_total_is_weighted_sum_with_authors_weights(batch):
    out = ARTASynLoss()(*batch)
    inputs, recon, target, mask, fi, ft = batch
    expected = (
        GlobalReconstructionLoss()(recon, target)
        + 2 * LocalReconstructionLoss()(recon, target, mask)
        + FeatureConsistencyLoss()(fi, ft)
        + SoftDiceAnomalyLoss()(inputs, recon, mask)
    )
    assert set(out) == {"total", "global", "local", "feat", "dice"}
    assert torch.allclose(out["total"], expected)


@pytest.mark.parametrize("term", ["global", "local", "feat", "dice"])
def test_zero_weight_switches_term_off(batch, term):
    loss = ARTASynLoss(**{f"w_{term}": 0.0})
    out = loss(*batch)
    full = ARTASynLoss()(*batch)
    weight = {"global": 1, "local": 2, "feat": 1, "dice": 1}[term]
    assert out[term] == 0
    assert torch.allclose(out["total"], full["total"] - weight * full[term])


def test_feature_term_off_needs_no_features(batch):
    inputs, recon, target, mask, *_ = batch
    out = ARTASynLoss(w_feat=0.0)(inputs, recon, target, mask, None, None)
    assert torch.isfinite(out["total"])
    with pytest.raises(ValueError, match="feat_in"):
        ARTASynLoss()(inputs, recon, target, mask, None, None)


def test_no_nan_when_whole_batch_is_healthy(batch):
    inputs, recon, target, mask, fi, ft = batch
    recon = recon.clone().requires_grad_(True)
    out = ARTASynLoss()(target, recon, target, torch.zeros_like(mask), fi, ft)
    out["total"].backward()
    assert all(torch.isfinite(v) for v in out.values()) and torch.isfinite(recon.grad).all()


def _twins(images_and_lungs, seed=0):
    """(inputs, targets, masks) in [0, 1] from healthy uint8 images with one A_final anomaly each."""
    import numpy as np

    from artasyn.synthesis import RandARTAnomaly

    synth = RandARTAnomaly(variant="final").set_random_state(seed)
    xs, ys, ms = [], [], []
    for img, lung in images_and_lungs:
        out, mask = synth(img, lung)
        xs.append(np.asarray(out, np.float32) / 255)
        ys.append(img.astype(np.float32) / 255)
        ms.append(np.asarray(mask, np.float32))
    return (torch.tensor(np.stack(a)) for a in (xs, ys, ms))


def _assert_calibrated(inputs, targets, masks):
    from artasyn.constants import PAPER_DICE_ERROR_THRESHOLD

    assert masks.sum() > 0
    loss = SoftDiceAnomalyLoss()  # calibrated defaults
    perfect, unrepaired = float(loss(inputs, targets, masks)), float(loss(inputs, inputs, masks))
    paper = float(SoftDiceAnomalyLoss(threshold=PAPER_DICE_ERROR_THRESHOLD, scale=50.0)(inputs, targets, masks))
    # a perfect reconstruction of the healthy target scores low, leaving the anomaly scores high;
    # the paper's threshold would call even the perfect reconstruction bad (docs/method.md section 8)
    assert perfect < 0.25 < 0.9 < unrepaired
    assert paper > 2 * perfect


def test_calibrated_dice_is_low_for_perfect_reconstruction_of_phantom_twins():
    from artasyn.phantom import make_phantom

    phantoms = [make_phantom(256, seed=s) for s in range(6)]
    _assert_calibrated(*_twins([(p["image"][None], p["lungs"][None]) for p in phantoms]))


@pytest.mark.slow
def test_calibrated_dice_is_low_for_perfect_reconstruction_of_real_twins(shared_data):
    """COVID-QU-Ex normal images with the authors' PBTSeg lung maps (reference/pbtseg)."""
    import numpy as np
    from PIL import Image

    pairs = []
    for path in sorted((shared_data / "covidquex_normal_lung" / "images").glob("*.png"))[:24]:
        lung = np.asarray(Image.open(shared_data / "reference" / "pbtseg" / "covidquex_normal_lung" / path.name))
        if lung.any():
            pairs.append((np.asarray(Image.open(path).convert("L"))[None], lung[None]))
    _assert_calibrated(*_twins(pairs))
