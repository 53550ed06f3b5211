"""The zero-shot bench (``bench/bench_zeroshot.py``): its metrics, its datalist and its evaluation.

The metric functions are checked on small synthetic arrays with known answers (``docs/method.md``
section 4: micro Dice pools pixels, a mean per image weighs images). The datalist and the
evaluation read the real COVID-QU-Ex images of ``../shared/data`` (``covidquex_covid_infection``
with its infection and lung masks; ``covidquex_normal_lung``, ``nih_nofinding_normal``) and
skip, saying where they looked, when it is absent. No training runs here.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_presets import TINY_INFER

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_zeroshot as bz  # noqa: E402


def _pairwise_auroc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_of_a_perfect_map_is_one_and_of_its_negation_zero():
    labels = np.zeros((4, 8, 8), bool)
    labels[:, 2:5, 3:6] = True
    score = labels.astype(np.float32) + 0.1 * np.random.default_rng(0).random(labels.shape)
    assert bz.pixel_auroc(score, labels) == 1.0
    assert bz.pixel_auroc(-score, labels) == 0.0
    assert bz.pixel_auroc(np.ones_like(score), labels) == 0.5  # all tied: chance


def test_auroc_equals_the_pairwise_count_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 60)  # many ties
    labels = rng.random(60) < 0.3
    assert bz.pixel_auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels))


def test_auroc_of_one_class_is_nan():
    assert np.isnan(bz.pixel_auroc([0.1, 0.5], [0, 0]))


def test_pooled_auroc_is_below_the_per_image_auroc_when_images_are_offset():
    labels = np.zeros((2, 4, 4), bool)
    labels[:, 0, :2] = True
    scores = labels.astype(np.float64)
    scores[1] += 5.0  # image 2 scores higher everywhere: each image separates, the pool does not
    region = np.ones_like(labels)
    out = bz.auroc_inside(scores, labels, region)
    assert out["mean_per_image"] == 1.0 and out["n_images"] == 2
    assert out["micro"] < 1.0


def test_auroc_inside_a_region_ignores_the_pixels_outside():
    labels = np.zeros((1, 4, 4), bool)
    labels[0, 0, 0] = True
    scores = labels.astype(np.float64)
    scores[0, 3, 3] = 9.0  # a high score outside the region
    region = np.ones_like(labels)
    region[0, 3, 3] = False
    assert bz.auroc_inside(scores, labels, region)["micro"] == 1.0
    assert bz.auroc_inside(scores, labels, np.ones_like(labels))["micro"] < 1.0


def test_per_image_auroc_is_split_by_the_lesion_share_of_the_region():
    labels = np.zeros((3, 6, 6), bool)
    labels[0, 0, :6] = True  # a sixth of the region
    labels[1, :3] = True  # a half
    labels[2, :5] = True  # five sixths
    scores = labels.astype(np.float64)
    scores[2] = 1.0 - scores[2]  # the large lesion ranked below its healthy pixels
    region = np.ones_like(labels)
    out = bz.auroc_inside(scores, labels, region)["per_image_by_extent"]
    assert list(out) == ["0.00-0.33", "0.33-0.67", "0.67-1.00"]
    assert [v["n_images"] for v in out.values()] == [1, 1, 1]
    assert out["0.00-0.33"]["mean"] == 1.0 and out["0.67-1.00"]["mean"] == 0.0
    empty = bz.auroc_inside(scores[:1], labels[:1], region[:1])["per_image_by_extent"]
    assert empty["0.67-1.00"]["n_images"] == 0 and np.isnan(empty["0.67-1.00"]["mean"])


def test_dice_of_the_mask_itself_is_one_and_of_two_empty_masks_nan():
    gt = np.zeros((3, 8, 8), bool)
    gt[0, 1:4, 1:4] = gt[2, 5:, 5:] = True
    assert bz.micro_dice(gt, gt) == 1.0
    assert bz.mean_dice(gt, gt) == 1.0  # the empty image 1 is skipped
    assert np.isnan(bz.dice_from_counts(bz.dice_counts(gt[1], gt[1])))


def test_pooled_dice_weighs_pixels_and_the_mean_per_image_weighs_images():
    gt = np.zeros((2, 16, 16), bool)
    gt[0, :10, :10] = True  # 100 lesion pixels, found exactly
    gt[1, 0, :4] = True  # 4 lesion pixels, missed
    pred = gt.copy()
    pred[1] = False
    assert bz.micro_dice(pred, gt) == pytest.approx(200 / 204)
    assert bz.mean_dice(pred, gt) == pytest.approx(0.5)


def test_best_threshold_dice_is_the_best_over_every_threshold():
    rng = np.random.default_rng(2)
    labels = rng.random(200) < 0.2
    scores = np.round(labels * 0.3 + rng.random(200), 2)  # ties included
    for n_positive in (None, int(labels.sum()) + 7):  # + 7 lesion pixels outside the scored region
        g = int(labels.sum()) if n_positive is None else n_positive
        brute = max(2 * np.sum(labels & (scores >= t)) / (np.sum(scores >= t) + g) for t in np.unique(scores))
        dice, t = bz.best_threshold_dice(scores, labels, n_positive)
        assert dice == pytest.approx(brute)
        assert 2 * np.sum(labels & (scores >= t)) / (np.sum(scores >= t) + g) == pytest.approx(dice)
    assert bz.best_threshold_dice(labels.astype(float), labels)[0] == 1.0
    with pytest.raises(ValueError, match="n_positive"):
        bz.best_threshold_dice(scores, labels, 1)


# ------------------------------------------------------------------------------------------
# real images (../shared/data)
# ------------------------------------------------------------------------------------------


def test_datalist_keeps_the_monitor_images_out_of_training_and_test(shared_data):
    dl = bz.build_zeroshot_datalist(shared_data, n_monitor=24)
    train = {it["image"] for it in dl["training"]}
    val = {it["image"] for it in dl["validation"]}
    test = {it["image"] for it in dl["test"]}
    assert not (train & val) and not (val & test) and not (train & test)
    assert all("covidquex_covid_infection" not in p for p in train)  # healthy only
    assert dl["counts"]["monitor_normal"] == dl["counts"]["monitor_covid"] == 24
    n_covid = len(list((shared_data / "covidquex_covid_infection" / "images").glob("*.png")))
    assert len(test) == n_covid - 24
    for it in dl["test"]:
        stem = Path(it["image"]).stem
        assert Path(it["mask"]).parent.name == "masks" and Path(it["mask"]).stem == stem
        assert Path(it["lung_mask"]).parent.name == "masks_lung" and Path(it["lung_mask"]).stem == stem
    with_mon = bz.build_zeroshot_datalist(shared_data, n_monitor=24, monitor_in_test=True)
    assert len(with_mon["test"]) == n_covid


def test_a_larger_healthy_monitor_draws_on_both_sources_and_leaves_training(shared_data):
    """``n_monitor_healthy``: the gate's threshold sees NIH images too; nothing is in two sections."""
    base = bz.build_zeroshot_datalist(shared_data, n_monitor=24, n_healthy_test=60)
    dl = bz.build_zeroshot_datalist(shared_data, n_monitor=24, n_healthy_test=60, n_monitor_healthy=96)
    healthy_mon = [it["image"] for it in dl["validation"] if it["label"] == 0]
    assert len(healthy_mon) == dl["counts"]["monitor_normal"] == 96 and dl["counts"]["monitor_covid"] == 24
    assert any("nih_nofinding_normal" in p for p in healthy_mon)
    assert any("covidquex_normal_lung" in p for p in healthy_mon)
    sections = [{it["image"] for it in dl[k]} for k in ("training", "validation", "test", "healthy_test")]
    assert sum(len(s) for s in sections) == len(set().union(*sections))  # disjoint
    n_healthy = sum(len(base[k]) for k in ("training", "healthy_test")) + 24
    assert len(dl["training"]) + len(dl["healthy_test"]) + 96 == n_healthy  # every healthy image used once


def test_extra_training_folders_join_the_training_section_only(shared_data, tmp_path):
    """``extra_training``: more healthy images for training; monitor, test and held-apart sets unchanged."""
    base = bz.build_zeroshot_datalist(shared_data, n_monitor=24, n_healthy_test=60, n_monitor_healthy=96)
    extra = shared_data / "covidquex_noncovid_lung" / "images"  # any folder of images serves the test
    dl = bz.build_zeroshot_datalist(
        shared_data, n_monitor=24, n_healthy_test=60, n_monitor_healthy=96, extra_training=[extra]
    )
    n_extra = len([p for p in extra.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")])
    assert n_extra > 0 and dl["counts"]["training_extra"] == n_extra
    assert len(dl["training"]) == len(base["training"]) + n_extra
    for k in ("validation", "test", "healthy_test"):
        assert dl[k] == base[k], k
    with pytest.raises(FileNotFoundError, match="no images"):
        bz.build_zeroshot_datalist(shared_data, extra_training=[tmp_path])


def test_without_adult_training_the_extra_folders_are_the_whole_training_section(shared_data):
    """``adult_training=False``: training sees the extra folders only; the other sections are unchanged."""
    base = bz.build_zeroshot_datalist(shared_data, n_monitor=24, n_healthy_test=60, n_monitor_healthy=96)
    extra = shared_data / "covidquex_noncovid_lung" / "images"
    dl = bz.build_zeroshot_datalist(
        shared_data, n_monitor=24, n_healthy_test=60, n_monitor_healthy=96, extra_training=[extra], adult_training=False
    )
    train = [Path(it["image"]) for it in dl["training"]]
    assert train and all(p.parent == extra for p in train)
    assert dl["counts"]["training"] == dl["counts"]["training_extra"] == len(train)
    assert dl["counts"]["training_covidquex_normal"] == dl["counts"]["training_nih_nofinding"] == 0
    assert "adults" not in dl["description"] and "extra folders" in dl["description"]
    for k in ("validation", "test", "healthy_test"):
        assert dl[k] == base[k], k
    with pytest.raises(ValueError, match="no training images"):
        bz.build_zeroshot_datalist(shared_data, adult_training=False)


@pytest.fixture(scope="module")
def covid_eval(shared_data):
    """Three real COVID images at 64 x 64 through the bundle's preprocessing (cpu.json, tiny network)."""
    configs = [bz.CONFIGS / "train.json", bz.CONFIGS / "cpu.json"]
    parser = bz.bundle_parser(configs, {**TINY_INFER, "lung_box_margin": None})
    items = bz.build_zeroshot_datalist(shared_data)["test"][:3]
    return parser, bz.preset_settings(parser), bz.load_test_arrays(items, parser)


def test_maps_of_a_crop_go_back_into_its_box_on_a_zero_canvas():
    values = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4) + 1
    boxes = np.array([[[0, 0], [4, 4]], [[2, 1], [4, 3]]])
    out = bz.to_frame(values, boxes)
    assert out.shape == values.shape
    assert np.array_equal(out[0], values[0])  # a box that is the whole grid: unchanged
    assert (out[1][2:4, 1:3] > 0).all() and out[1].sum() == out[1][2:4, 1:3].sum()  # nothing outside the box
    masks = bz.to_frame(np.ones((1, 4, 4)), boxes[1:], "nearest")
    assert masks.dtype == bool and masks.sum() == 4 and masks[0, 2:4, 1:3].all()


@pytest.fixture(scope="module")
def covid_eval_crop(shared_data, covid_eval):
    """The same three COVID images through cpu.json's crop to the lungs (lung_box_margin 0.08)."""
    configs = [bz.CONFIGS / "train.json", bz.CONFIGS / "cpu.json"]
    parser = bz.bundle_parser(configs, {**TINY_INFER, "lung_box_margin": 0.08})
    items = bz.build_zeroshot_datalist(shared_data)["test"][:3]
    return parser, bz.preset_settings(parser), bz.load_test_arrays(items, parser)


def test_a_cropped_preset_is_measured_on_the_whole_image(covid_eval, covid_eval_crop):
    _, _, whole = covid_eval
    _, settings, arrays = covid_eval_crop
    assert whole["frame"] is None and settings["lung_box_margin"] == 0.08
    frame = arrays["frame"]
    for key in ("image", "infection", "lung_gt", "lung_paper", "lung_robust"):  # the uncropped arrays, exactly
        assert np.array_equal(frame[key], whole[key]), key
        assert arrays[key].shape == (3, 64, 64), key
    assert not np.array_equal(arrays["image"], whole["image"])  # the network sees the crop
    assert arrays["infection"].any(axis=(1, 2)).all() and arrays["lung_gt"].any(axis=(1, 2)).all()
    boxes = arrays["boxes"]
    assert boxes.shape == (3, 2, 2) and (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= 64).all()
    assert ((boxes[:, 1] - boxes[:, 0]) < 64).any()  # at least one crop is smaller than the image
    # the cropped ground-truth lung, put back, lies on the uncropped one
    back = bz.to_frame(arrays["lung_gt"].astype(np.float32), boxes, "nearest")
    assert (back & whole["lung_gt"]).sum() / back.sum() > 0.9


def test_a_repair_inside_the_crop_is_found_on_the_whole_image(covid_eval, covid_eval_crop):
    _, settings, arrays = covid_eval_crop
    settings = {**settings, "score_map_sigma": 0.0}
    recon = arrays["image"] - 0.5 * arrays["infection"]
    m = bz.zeroshot_metrics(arrays, recon, settings)
    assert m["pixel_auroc_in_gt_lung"]["anomaly_map"]["micro"] > 0.97  # only the resampled edges miss
    assert m["oracle_best_threshold_micro_dice"]["anomaly_map_whole_image"]["dice"] > 0.85
    assert m["data"]["lesion_fraction_inside_crop"] > 0.95 and m["data"]["gt_lung_fraction_inside_crop"] > 0.95
    # what needs no network is the uncropped bench's, number for number
    _, whole_settings, whole = covid_eval
    ref = bz.zeroshot_metrics(whole, whole["image"].copy(), whole_settings)
    key = "raw_intensity_in_gt_lung"
    assert m["oracle_best_threshold_micro_dice"][key] == ref["oracle_best_threshold_micro_dice"][key]
    raw, raw_ref = m["pixel_auroc_in_gt_lung"]["raw_intensity"], ref["pixel_auroc_in_gt_lung"]["raw_intensity"]
    assert (raw["micro"], raw["mean_per_image"]) == (raw_ref["micro"], raw_ref["mean_per_image"])
    assert m["constant_baselines_micro_dice"] == ref["constant_baselines_micro_dice"]
    identity = bz.zeroshot_metrics(arrays, arrays["image"].copy(), settings)
    assert identity["pixel_auroc_in_gt_lung"]["anomaly_map"]["micro"] == 0.5
    assert all(v == 0.0 for v in identity["masks_micro_dice"]["whole_image"].values())


def test_saved_masks_of_a_crop_are_scored_against_the_uncropped_lesions(covid_eval_crop):
    _, settings, arrays = covid_eval_crop
    settings = {**settings, "score_map_sigma": 0.0, "mask_in_lungs": False, "score_in_lungs": False}
    recon = arrays["image"] - 0.5 * arrays["infection"]
    decision = {"pixel_threshold": 0.01, "min_mask_px": 0, "mask_gate_threshold": None}
    out = bz.saved_mask_metrics(arrays, recon, None, None, settings, decision)
    assert out["micro_dice"] > 0.85 and out["covid_with_mask"] == 1.0
    zero = bz.saved_mask_metrics(arrays, arrays["image"].copy(), None, None, settings, decision)
    assert zero["micro_dice"] == 0.0 and zero["covid_with_mask"] == 0.0


def test_test_images_come_at_the_preset_size_with_their_masks(covid_eval):
    _, settings, arrays = covid_eval
    assert settings["spatial_size"] == [64, 64]
    for key in ("image", "infection", "lung_gt", "lung_paper", "lung_robust", "lung"):
        assert arrays[key].shape == (3, 64, 64), key
    assert 0.0 <= arrays["image"].min() and arrays["image"].max() <= 1.0 and arrays["image"].std() > 0.05
    assert arrays["infection"].any(axis=(1, 2)).all() and arrays["lung_gt"].any(axis=(1, 2)).all()
    assert (arrays["lung"] == arrays["lung_paper"]).all()  # cpu.json segments in paper mode


def test_a_reconstruction_that_repairs_exactly_the_lesions_scores_one(covid_eval):
    _, settings, arrays = covid_eval
    settings = {**settings, "score_map_sigma": 0.0}  # no smoothing: the error is the lesion itself
    recon = arrays["image"] - 0.5 * arrays["infection"]
    m = bz.zeroshot_metrics(arrays, recon, settings)
    assert m["pixel_auroc_in_gt_lung"]["anomaly_map"]["micro"] == 1.0
    assert m["pixel_auroc_in_gt_lung"]["anomaly_map"]["mean_per_image"] == 1.0
    for region in ("whole_image", "in_gt_lung"):
        assert all(v == 1.0 for v in m["masks_micro_dice"][region].values()), region
    # inside the PBTSeg map only the lesion pixels it covers are found (an empty map: the whole image)
    inside = np.stack([lung if lung.any() else np.ones_like(lung) for lung in arrays["lung"]])
    expected = bz.micro_dice(arrays["infection"] & inside, arrays["infection"])
    assert expected < 1.0
    assert all(v == pytest.approx(expected) for v in m["masks_micro_dice"]["in_pbtseg_lung"].values())
    assert m["oracle_best_threshold_micro_dice"]["anomaly_map_whole_image"]["dice"] == 1.0
    identity = bz.zeroshot_metrics(arrays, arrays["image"].copy(), settings)  # no repair: nothing found
    assert identity["pixel_auroc_in_gt_lung"]["anomaly_map"]["micro"] == 0.5
    assert all(v == 0.0 for v in identity["masks_micro_dice"]["whole_image"].values())


def test_evaluation_of_a_random_tiny_network_checkpoint(covid_eval, tmp_path):
    parser, settings, arrays = covid_eval
    torch.manual_seed(0)
    ckpt = tmp_path / "model_final.pt"
    torch.save({"model": parser.get_parsed_content("network_def", lazy=False).state_dict()}, ckpt)
    recon = bz.reconstruct(bz.load_network(parser, ckpt), arrays["image"], batch_size=2)
    assert recon.shape == arrays["image"].shape and np.isfinite(recon).all()
    m = bz.zeroshot_metrics(arrays, recon, settings)
    inf, lung = arrays["infection"], arrays["lung_gt"]
    n_lesion, n_pixels = int(inf.sum()), inf.size
    # the constant guesses, from the masks themselves
    c = m["constant_baselines_micro_dice"]
    assert c["whole_image"] == pytest.approx(2 * n_lesion / (n_pixels + n_lesion))
    assert c["gt_lung"] == pytest.approx(bz.micro_dice(lung, inf))
    # the raw-intensity AUROC is that of the image inside the lungs
    assert m["pixel_auroc_in_gt_lung"]["raw_intensity"]["micro"] == pytest.approx(
        bz.pixel_auroc(arrays["image"][lung], inf[lung])
    )
    # COVID-QU-Ex lesions lie inside the ground-truth lungs: masking outside them only drops
    # false positives, and the oracle may threshold at the lungs' lowest score (= the whole lung)
    assert m["data"]["lesion_fraction_inside_gt_lung"] == 1.0
    for tau, dice in m["masks_micro_dice"]["in_gt_lung"].items():
        assert dice >= m["masks_micro_dice"]["whole_image"][tau] - 1e-12, tau
    oracle = m["oracle_best_threshold_micro_dice"]
    assert oracle["anomaly_map_in_gt_lung"]["dice"] >= c["gt_lung"] - 1e-12
    assert oracle["raw_intensity_in_gt_lung"]["dice"] >= c["gt_lung"] - 1e-12
    assert list(m["masks_micro_dice"]["whole_image"]) == [f"tau{t:g}" for t in settings["taus"]]
    table = bz.table({"metrics": m, "settings": settings})
    row = next(line for line in table.splitlines() if line.startswith("| constant: ground-truth lung"))
    assert row.endswith("|  |")  # docs/method.md's 128 px figures are not shown beside 64 px ones


def test_map_variants_rank_a_bright_lesion_and_normalise_a_systematic_error():
    """A lesion brighter than its reconstruction ranks first in every signed map; an error that
    every healthy image makes at one place (a rib edge) fools the plain map but not the z-map."""
    rng = np.random.default_rng(0)
    n, size = 6, 32
    recon = rng.uniform(0.3, 0.5, (n, size, size)).astype(np.float32)
    images = recon + rng.normal(0, 0.005, recon.shape).astype(np.float32)
    images[:, 4:8, 4:28] += 0.2  # systematic error: strong on every image, healthy ones too
    infection = np.zeros(images.shape, bool)
    infection[:, 16:24, 10:20] = True
    images[infection] += 0.1  # the lesion: weaker than the systematic error, but only here
    ref_recon = rng.uniform(0.3, 0.5, (8, size, size)).astype(np.float32)
    ref_images = ref_recon + rng.normal(0, 0.005, ref_recon.shape).astype(np.float32)
    ref_images[:, 4:8, 4:28] += 0.2
    arrays = {"image": images, "infection": infection, "lung_gt": np.ones(images.shape, bool)}
    v = bz.map_variants(arrays, recon, ref_images, ref_recon)
    assert v["signed_sigma1"]["micro"] < 0.95  # the rib-edge error outranks part of the lesion
    assert v["z_signed_sigma1"]["micro"] > 0.99
    assert set(v) >= {"positive_sigma3", "signed_sigma6", "z_signed_sigma3", "raw_z"}


def test_ssim_separates_a_change_of_brightness_from_a_lost_texture():
    """SSIM is 1 where input and reconstruction agree; a uniform brightening lowers SSIM through
    its luminance term only, while a texture the input lost (a blurred patch, what an opacity
    does to ribs and vessels) lowers the contrast-structure term too; the SSIM map ranks it."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    recon = rng.uniform(0.2, 0.6, (2, 48, 48))
    ssim, cs = bz.ssim_maps(recon, recon)
    np.testing.assert_allclose(ssim, 1.0, atol=1e-9)
    ssim, cs = bz.ssim_maps(np.full_like(recon, 0.9), np.full_like(recon, 0.2))
    assert ssim.max() < 0.5 and cs.min() > 0.999  # flat images: brightness only
    images = recon.copy()
    lesion = np.zeros(recon.shape, bool)
    lesion[:, 16:32, 16:32] = True
    images[:, 16:32, 16:32] = ndimage.gaussian_filter(recon, (0, 3, 3))[:, 16:32, 16:32]
    ssim, cs = bz.ssim_maps(images, recon)
    assert (1 - cs)[lesion].mean() > 10 * (1 - cs)[~lesion].mean() + 0.1
    arrays = {"image": images.astype(np.float32), "infection": lesion, "lung_gt": np.ones(recon.shape, bool)}
    v = bz.map_variants(arrays, recon.astype(np.float32), recon[:1].astype(np.float32), recon[:1].astype(np.float32))
    assert v["ssim_sigma3"]["micro"] > 0.9 and v["ssim_struct_sigma12"]["micro"] > 0.9


def _half_reconstructed_lesion(seed, n, size, noise, lift, box, n_ref):
    """A lesion ``lift`` brighter than its surroundings, whose columns from ``box[4]`` on the network
    reconstructed as bright (only brightness shows them there); healthy references of the same noise.

    ``box``: rows ``box[0]:box[1]``, columns ``box[2]:box[3]``. Returns ``(arrays, recon, ref_images,
    ref_recon)`` as :func:`bench_zeroshot.map_variants` takes them.
    """
    rng = np.random.default_rng(seed)
    r0, r1, c0, c1, c_rec = box
    recon = rng.uniform(0.3, 0.5, (n, size, size)).astype(np.float32)
    images = recon + rng.normal(0, noise, recon.shape).astype(np.float32)
    infection = np.zeros(images.shape, bool)
    infection[:, r0:r1, c0:c1] = True
    images[infection] += lift
    recon[:, r0:r1, c_rec:c1] += lift  # the network reconstructs this part of the lesion
    ref_recon = rng.uniform(0.3, 0.5, (n_ref, size, size)).astype(np.float32)
    ref_images = ref_recon + rng.normal(0, noise, ref_recon.shape).astype(np.float32)
    arrays = {"image": images, "infection": infection, "lung_gt": np.ones(images.shape, bool)}
    return arrays, recon, ref_images, ref_recon


def test_signed_error_plus_intensity_finds_what_each_misses_alone():
    """Half of a lesion is brighter than its reconstruction (the network's evidence), the other
    half was reconstructed bright as well (only brightness shows it): the sum ranks both."""
    arrays, recon, ref_images, ref_recon = _half_reconstructed_lesion(2, 6, 128, 0.005, 0.1, (50, 90, 10, 70, 40), 8)
    images, infection = arrays["image"], arrays["infection"]
    v = bz.map_variants(arrays, recon, ref_images, ref_recon)
    both = v["signed_sigma6+raw"]["micro"]
    alone = {
        "signed": v["signed_sigma6"]["micro"],
        "raw": bz.auroc_inside(images, infection, arrays["lung_gt"])["micro"],
    }
    assert both > max(alone.values()) + 0.03, (both, alone)


def test_iterated_reconstruction_maps_rank_what_the_second_pass_removes():
    """The first reconstruction copies a lesion, the second removes it: the maps of ``r_2`` rank
    the lesion (AUROC > 0.95), those of ``r_1`` at least 0.1 worse."""
    rng = np.random.default_rng(3)
    n, size = 6, 64
    healthy = rng.uniform(0.3, 0.5, (n, size, size)).astype(np.float32)
    infection = np.zeros(healthy.shape, bool)
    infection[:, 20:40, 10:30] = True
    images = healthy + 0.1 * infection
    recon1 = healthy + 0.1 * infection + rng.normal(0, 0.01, healthy.shape).astype(np.float32)
    recon2 = healthy + rng.normal(0, 0.01, healthy.shape).astype(np.float32)
    ref_images = rng.uniform(0.3, 0.5, (8, size, size)).astype(np.float32)
    ref_recon = ref_images + rng.normal(0, 0.01, ref_images.shape).astype(np.float32)
    arrays = {"image": images, "infection": infection, "lung_gt": np.ones(images.shape, bool)}
    v = bz.map_variants(arrays, recon1, ref_images, ref_recon, iterated={2: (recon2, ref_recon)})
    assert {"iter2_signed_sigma6", "iter2_signed_sigma12", "iter2_signed_sigma6+raw"} <= set(v)
    assert v["iter2_signed_sigma6"]["micro"] > 0.95
    assert v["signed_sigma6"]["micro"] < v["iter2_signed_sigma6"]["micro"] - 0.1
    assert "iter2_signed_sigma6" not in bz.map_variants(arrays, recon1, ref_images, ref_recon)


def test_feature_distance_maps_are_zero_for_a_perfect_reconstruction_and_join_the_variants():
    from artasyn.networks import SMALL_CONFIG, AnomalyUNet

    torch.manual_seed(0)
    net = AnomalyUNet(**SMALL_CONFIG, zero_init=False).eval()
    rng = np.random.default_rng(1)
    images = rng.uniform(0.2, 0.6, (3, 32, 32)).astype(np.float32)
    same = bz.feature_distance_maps(net, images, images.copy(), batch_size=2)
    widths = sorted(same, reverse=True)
    assert widths[0] == 32 and len(widths) >= 2  # one map per encoder resolution
    for width, m in same.items():
        assert m.shape == images.shape and np.abs(m).max() < 1e-4, width
    recon = images.copy()
    recon[:, 8:16, 8:16] += 0.3  # the reconstruction misses a patch
    maps = bz.feature_distance_maps(net, images, recon, batch_size=2)
    assert maps[32][:, 8:16, 8:16].mean() > 10 * maps[32][:, 24:, 24:].mean()
    arrays = {"image": images, "infection": np.zeros(images.shape, bool), "lung_gt": np.ones(images.shape, bool)}
    arrays["infection"][:, 8:16, 8:16] = True
    v = bz.map_variants(arrays, recon, images, images + 0.01, maps, same)
    assert {f"feature_cos{w}" for w in widths} | {"feature_cos_all", "feature_cos_all+signed_sigma6"} <= set(v)
    assert v["feature_cos32"]["micro"] > 0.9


def test_texture_and_lung_normalised_maps():
    """A smooth patch in a textured image ranks first on the texture map; a lesion in an image
    exposed darker than the others ranks with the brightest pixels only after normalising per
    image inside its lungs."""
    rng = np.random.default_rng(4)
    n, size = 4, 64
    images = (0.4 + 0.05 * rng.standard_normal((n, size, size))).astype(np.float32)
    infection = np.zeros(images.shape, bool)
    infection[:, 20:40, 20:40] = True
    images[infection] = 0.45  # flat, slightly bright: the texture is gone there
    images[0] -= 0.2  # one darker exposure
    recon = images.copy()
    ref_images = (0.4 + 0.05 * rng.standard_normal((8, size, size))).astype(np.float32)
    arrays = {"image": images, "infection": infection, "lung_gt": np.ones(images.shape, bool)}
    v = bz.map_variants(arrays, recon, ref_images, ref_images.copy())
    assert v["texture"]["micro"] > 0.95
    assert "raw_lungnorm" not in v  # no PBTSeg lungs given
    lungs = np.ones(images.shape, bool)
    v = bz.map_variants({**arrays, "lung": lungs}, recon, ref_images, ref_images.copy())
    assert v["raw_lungnorm"]["micro"] > v["raw_z"]["micro"]
    assert {"signed_sigma12+raw+texture", "signed_sigma12_lungnorm+raw_lungnorm"} <= set(v)


def test_location_maps_know_only_where_a_pixel_lies_in_its_lungs():
    """``lower`` runs from 0 at the lungs' top row to 1 at their bottom row, ``outer`` from 0 at
    their centre column to 1 at their outermost; ``peripheral`` is highest at the lung edge; an
    image without lungs gets a constant map. A lesion in the lower lung ranks first on ``lower``
    and at chance where it spans the lungs' height."""
    lungs = np.zeros((3, 20, 30), bool)
    lungs[0, 4:16, 5:25] = True
    lungs[1, 2:18, 10:20] = True
    maps = bz.location_maps(lungs)
    assert set(maps) == set(bz.LOCATION_MAPS)
    lower, outer, peripheral = maps["lower"][0], maps["outer"][0], maps["peripheral"][0]
    assert lower[4, 10] == 0.0 and lower[15, 10] == 1.0
    assert outer[10, 5] == outer[10, 24] == 1.0 and outer[10, 14] == outer[10, 15] < 0.06
    assert np.allclose(maps["lower+outer"][0], lower + outer)
    assert peripheral[4, 10] == -1.0 and peripheral[10, 15] < peripheral[5, 15] < 0
    assert all(np.ptp(m[2]) == 0 for m in maps.values())  # no lungs: every pixel ties

    infection = np.zeros(lungs.shape, bool)
    infection[0, 12:16, 5:25] = True  # the bottom rows of image 0
    infection[1, 2:18, 10:12] = True  # a full-height strip of image 1
    per_image = [bz.pixel_auroc(maps["lower"][i][lungs[i]], infection[i][lungs[i]]) for i in (0, 1)]
    assert per_image[0] == 1.0 and per_image[1] == 0.5


def test_map_variants_add_the_location_baselines_when_lungs_are_given():
    """With the test and reference images' lungs, the variants gain the location baselines and the
    two maps plus ``lower``. A lesion along the bottom of the lungs, half of it reconstructed as
    bright as it is (the positive map ties it with the background at 0): ``lower`` ranks that half
    too, so the sum beats the map alone inside each image."""
    rng = np.random.default_rng(5)
    n, size = 4, 64
    recon = rng.uniform(0.3, 0.5, (n, size, size)).astype(np.float32)
    images = recon - 0.01 + rng.normal(0, 0.002, recon.shape).astype(np.float32)  # darker: map 0
    lungs = np.zeros(images.shape, bool)
    lungs[:, 8:56, 8:56] = True
    infection = np.zeros(images.shape, bool)
    infection[:, 44:56, 8:56] = True
    images[:, 44:56, 8:32] = recon[:, 44:56, 8:32] + 0.05  # the half the network shows
    ref_recon = rng.uniform(0.3, 0.5, (8, size, size)).astype(np.float32)
    ref_images = ref_recon - 0.01 + rng.normal(0, 0.002, ref_recon.shape).astype(np.float32)
    arrays = {"image": images, "infection": infection, "lung_gt": lungs, "lung": lungs}
    without = bz.map_variants(arrays, recon, ref_images, ref_recon)
    assert not any(k.startswith("location_") for k in without)
    v = bz.map_variants(arrays, recon, ref_images, ref_recon, ref_lungs=np.ones(ref_images.shape, bool))
    assert {f"location_{m}" for m in bz.LOCATION_MAPS} <= set(v)
    assert v["location_lower"]["mean_per_image"] > 0.95
    alone, both = v["positive_sigma3"]["mean_per_image"], v["positive_sigma3+location_lower"]["mean_per_image"]
    assert both > alone + 0.1, (alone, both)
    assert "signed_sigma12+raw+location_lower" in v


def test_errors_normalised_in_lung_coordinates_follow_lungs_that_move():
    """Every healthy radiograph errs along the top of its lungs (the clavicles), but the lungs sit
    at different heights in different images: normalised per image location (4.1's z-map) that
    error still outranks a weaker lesion; normalised per place in the lungs it does not."""
    rng = np.random.default_rng(6)
    size = 64

    def batch(n, with_lesion):
        images = rng.normal(0, 0.002, (n, size, size)).astype(np.float32)
        lungs = np.zeros(images.shape, bool)
        infection = np.zeros(images.shape, bool)
        for i in range(n):
            top = 4 + (i * 7) % 20  # the lungs move down from image to image
            lungs[i, top : top + 32, 8:56] = True
            images[i, top : top + 4, 8:56] += 0.05  # the clavicles' error, at the lungs' top
            if with_lesion:
                infection[i, top + 20 : top + 28, 16:48] = True
                images[i][infection[i]] += 0.02
        return images, lungs, infection

    images, lungs, infection = batch(6, True)
    ref_images, ref_lungs, _ = batch(12, False)
    recon, ref_recon = np.zeros_like(images), np.zeros_like(ref_images)
    cells = bz.lung_bins(lungs, 8)
    assert cells[0, 4, 8] == 0 and cells[0, 35, 55] == 63  # the lung box's corners
    arrays = {"image": images, "infection": infection, "lung_gt": lungs, "lung": lungs}
    v = bz.map_variants(arrays, recon, ref_images, ref_recon, ref_lungs=ref_lungs)
    assert v["z_signed_sigma6"]["mean_per_image"] < 0.9
    assert v["zlung_signed_sigma6"]["mean_per_image"] > 0.95
    assert v["zlung_signed_sigma6"]["mean_per_image"] > v["z_signed_sigma6"]["mean_per_image"] + 0.05
    assert {"zlung_positive_sigma3", "zlung_signed_sigma12", "zlung_raw", "zlung_signed_sigma12+zlung_raw"} <= set(v)


def test_a_set_id_that_no_config_defines_is_refused_before_training():
    configs = [bz.CONFIGS / n for n in ("train.json", "cpu.json", "lesions.json")]
    bz.refuse_unknown_ids(configs, {"w_local": 8.0, "network_def#dropout": 0.2})  # both take effect
    with pytest.raises(SystemExit, match=r"w_locl \(nearest: w_local"):
        bz.refuse_unknown_ids(configs, {"w_locl": 8.0})


def test_the_fixed_weight_sum_is_the_standardised_sum_at_the_implied_weight():
    """``signed_sigma6+raw`` (each term in units of its healthy spread) ranks pixels exactly as
    the signed error plus ``intensity_weight`` times the intensity; the fixed-weight variants
    are that sum at the weights of ``FIXED_INTENSITY_WEIGHTS``, and a larger weight moves the
    sum towards the intensity's own ranking."""
    arrays, recon, ref_images, ref_recon = _half_reconstructed_lesion(3, 4, 64, 0.02, 0.05, (20, 40, 10, 40, 25), 6)
    images, infection = arrays["image"], arrays["infection"]
    v = bz.map_variants(arrays, recon, ref_images, ref_recon)
    w = bz.intensity_weight(ref_images, ref_recon)
    assert 0 < w < 1
    implied = bz.auroc_inside(bz._signed(images, recon, 6.0) + w * images, infection, arrays["lung_gt"])
    assert implied["micro"] == pytest.approx(v["signed_sigma6+raw"]["micro"], abs=1e-6)
    assert implied["mean_per_image"] == pytest.approx(v["signed_sigma6+raw"]["mean_per_image"], abs=1e-6)
    keys = [f"signed_sigma6+raw_k{k:g}" for k in bz.FIXED_INTENSITY_WEIGHTS]
    assert set(keys) <= set(v)
    raw = bz.auroc_inside(images, infection, arrays["lung_gt"])["micro"]
    gaps = [abs(v[k]["micro"] - raw) for k in keys]
    assert gaps[-1] < gaps[0], gaps


def test_the_lesion_panel_colours_a_signed_map_without_nans():
    """The panel colours a squared map by its square root (the error's scale) and a signed map
    as it is; the signed map's negative values (darker than the reconstruction) show as 0, not
    as the NaN that a square root of them would give."""
    from make_lesion_panel import display_level

    signed = np.array([[-0.02, 0.0], [0.01, 0.04]], np.float32)
    level = display_level(signed, "signed")
    assert np.isfinite(level).all()
    np.testing.assert_allclose(level, [[0.0, 0.0], [0.01, 0.04]], rtol=1e-6)
    squared = np.array([[0.0, 0.0004], [0.01, 0.04]], np.float32)
    for mode in ("squared", "positive"):
        np.testing.assert_allclose(display_level(squared, mode), [[0.0, 0.02], [0.1, 0.2]], rtol=1e-6)
