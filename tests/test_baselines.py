"""Baseline syntheses (AnatPaste, CutPaste, Perlin noise): the contract they share with
RandARTAnomalyd, on procedural phantoms and on real radiographs.

Real images: the first 24 of ``covidquex_normal_lung`` (sorted by name), with two lung maps
each: the authors' PBTSeg maps (``reference/pbtseg``) and the ground-truth lung masks
(``covidquex_normal_lung/masks``).
"""

import logging

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, list_data_collate
from PIL import Image

from artasyn.anatpaste import RandAnatPaste, RandAnatPasted
from artasyn.baselines import BASELINES
from artasyn.cutpaste import RandCutPaste, RandCutPasted
from artasyn.perlin import RandPerlinAnomaly, RandPerlinAnomalyd, perlin_noise
from artasyn.phantom import make_phantom
from artasyn.synthesis import RandARTAnomalyd, RandARTTwinsd

VARIANTS = ("anatpaste", "cutpaste", "perlin")
DICTS = {"anatpaste": RandAnatPasted, "cutpaste": RandCutPasted, "perlin": RandPerlinAnomalyd}


def phantom(seed=0, size=256):
    p = make_phantom(size=size, seed=seed)
    return p["image"][None], p["lungs"][None]


def check_contract(t, img, lung, calls=6):
    """Mask inside the lungs, binary; the image changes only inside the lungs and only where the
    mask is. Blending aside: AnatPaste's soft edge changes the image outside its mask only within
    the blur's reach of the shape (its box grown by ``3 * radius + 2`` pixels), where its opacity
    is at most the mask threshold (80/255)."""
    lungs = lung[0] > 0
    painted = 0
    for _ in range(calls):
        out, mask = t(img, lung)
        m = np.asarray(mask[0]) > 0
        changed = np.asarray(out[0]) != img[0]
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0.0, 1.0}
        assert not (m & ~lungs).any(), "mask outside the lungs"
        assert not (changed & ~lungs).any(), "image changed outside the lungs"
        if not t.last_painted:
            assert not changed.any() and not m.any()
            continue
        painted += 1
        if isinstance(t, RandAnatPaste):
            alpha, box = t.opacity(img.shape[1:], lung[0])
            reach = np.zeros_like(m)
            reach[box] = True
            assert not (changed & ~reach).any(), "image changed beyond the blur's reach"
            assert (alpha[~m[box]] <= t.threshold).all(), "opacity above the threshold outside the mask"
        else:
            assert not (changed & ~m).any(), "image changed outside the mask"
    return painted


# --- each baseline on phantoms ------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_mask_in_lungs_and_image_changes_only_where_the_mask_is(variant):
    for seed in range(3):
        img, lung = phantom(seed)
        t = BASELINES[variant]().set_random_state(seed)
        assert check_contract(t, img, lung) >= 5


@pytest.mark.parametrize("variant", ["cutpaste", "perlin"])
def test_hard_masks_change_nothing_outside_them(variant):
    img, lung = phantom(1)
    t = BASELINES[variant]().set_random_state(0)
    for _ in range(5):
        out, mask = t(img, lung)
        assert np.array_equal(out[mask == 0], img[mask == 0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_anomaly_different_seed_different(variant):
    img, lung = phantom(2)
    cls = BASELINES[variant]
    a = [cls().set_random_state(7)(img, lung) for _ in range(2)]
    b = cls().set_random_state(8)(img, lung)
    assert np.array_equal(a[0][0], a[1][0]) and np.array_equal(a[0][1], a[1][1])
    assert not np.array_equal(a[0][1], b[1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_types_values_and_metadata_are_kept(variant):
    img, lung = phantom(3)
    cls = BASELINES[variant]
    f = img.astype(np.float32) + 0.25
    out, mask = cls().set_random_state(0)(f, lung)
    assert out.dtype == np.float32 and mask.dtype == np.float32 and out.shape == f.shape
    assert np.array_equal(out[lung == 0], f[lung == 0])  # untouched pixels keep their exact values
    assert out.min() >= 0 and out.max() <= 255.25
    mt = MetaTensor(torch.as_tensor(img), meta={"filename_or_obj": "toy.png"})
    out_t, mask_t = cls().set_random_state(0)(mt, torch.as_tensor(lung))
    assert isinstance(out_t, MetaTensor) and out_t.dtype == torch.uint8 and out_t.meta["filename_or_obj"] == "toy.png"
    assert out_t.meta["artasyn_variant"] == variant and isinstance(mask_t, MetaTensor)
    assert mask_t.dtype == torch.float32 and mask_t.shape == (1, 256, 256)
    out_n, _ = cls().set_random_state(0)(img, lung)
    assert np.array_equal(out_t.numpy(), out_n)  # numpy and torch give the same anomaly


@pytest.mark.parametrize("variant", VARIANTS)
def test_dictionary_transform_matches_the_variant_switch(variant):
    img, lung = phantom(4)
    d1 = DICTS[variant](keys="image", lung_key="lung").set_random_state(5)({"image": img, "lung": lung})
    d2 = RandARTAnomalyd(keys="image", lung_key="lung", variant=variant).set_random_state(5)(
        {"image": img, "lung": lung}
    )
    for k in ("image", "anomaly_mask", "anomaly_label"):
        assert np.array_equal(np.asarray(d1[k]), np.asarray(d2[k])), k
    assert d1["artasyn_variant"] == d2["artasyn_variant"] == variant
    assert float(d1["anomaly_label"][0]) == 1.0 and d1["anomaly_label"].dtype == torch.float32


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_lung_leaves_image_unchanged_warns_and_flags(variant, caplog):
    img, _ = phantom(0)
    mt = MetaTensor(torch.as_tensor(img), meta={"filename_or_obj": "/data/empty_lungs.png"})
    t = DICTS[variant](keys="image", lung_key="lung").set_random_state(0)
    with caplog.at_level(logging.WARNING):
        d = t({"image": mt, "lung": torch.zeros_like(mt.as_tensor())})
    assert torch.equal(d["image"].as_tensor(), mt.as_tensor())
    assert float(d["anomaly_mask"].sum()) == 0 and float(d["anomaly_label"][0]) == 0.0
    assert d["image"].meta["artasyn_no_lung"] is True and d["anomaly_mask"].meta["artasyn_no_lung"] is True
    assert t.no_lung_count == 1 and "empty_lungs.png" in caplog.text
    twins = RandARTTwinsd(keys="image", lung_key="lung", variant=variant, num_twins=2)(
        {"image": mt, "lung": torch.zeros_like(mt.as_tensor())}
    )
    assert [float(x["anomaly_label"][0]) for x in twins] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_prob_zero_adds_an_empty_mask_and_label_zero(variant):
    img, lung = phantom(0)
    d = DICTS[variant](keys="image", lung_key="lung", prob=0.0)({"image": img, "lung": lung})
    assert np.array_equal(d["image"], img) and d["anomaly_mask"].shape == img.shape
    assert not d["anomaly_mask"].any() and float(d["anomaly_label"][0]) == 0.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_twins_of_a_baseline_collate(variant):
    img, lung = phantom(5)
    mt = MetaTensor(torch.as_tensor(img).float(), meta={"filename_or_obj": "toy.png"})
    t = RandARTTwinsd(keys="image", lung_key="lung", variant=variant).set_random_state(0)
    batches = [t({"image": mt, "lung": torch.as_tensor(lung)}) for _ in range(3)]
    for items in batches:
        assert 2 <= len(items) <= 4 and float(items[0]["anomaly_label"][0]) == 0.0
        assert all(float(it["anomaly_label"][0]) == 1.0 for it in items[1:])
        assert all(torch.equal(it["target"].as_tensor(), mt.as_tensor()) for it in items)
    batch = list_data_collate(batches)
    n = sum(len(b) for b in batches)
    assert batch["image"].shape == (n, 1, 256, 256) and batch["anomaly_mask"].shape == (n, 1, 256, 256)
    assert batch["anomaly_label"].shape == (n, 1) and batch["artasyn_variant"] == [variant] * n


@pytest.mark.parametrize("variant", VARIANTS)
def test_dataloader_workers_draw_different_anomalies(variant):
    img, lung = phantom(6)
    data = [{"image": img.copy(), "lung": lung.copy()} for _ in range(4)]
    ds = Dataset(data, transform=DICTS[variant](keys="image", lung_key="lung"))
    loader = DataLoader(ds, batch_size=1, num_workers=2, shuffle=False, generator=torch.Generator().manual_seed(0))
    images = [b["image"][0] for b in loader]
    # items 0 and 1 are the first of each worker: different per-worker seeds, different images
    # (a fixed loader seed, so that a rare faint AnatPaste draw cannot make this flaky)
    assert not torch.equal(images[0], images[1])


def test_docstring_examples_run():
    import doctest

    import artasyn.anatpaste
    import artasyn.baselines
    import artasyn.cutpaste
    import artasyn.perlin

    for module in (artasyn.anatpaste, artasyn.cutpaste, artasyn.perlin, artasyn.baselines):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_variant_errors_are_precise():
    with pytest.raises(ValueError, match="anatpaste"):
        RandARTTwinsd(keys="image", lung_key="lung", variant="anat_paste")
    with pytest.raises(TypeError, match="brush_texture"):
        RandARTAnomalyd(keys="image", lung_key="lung", variant="perlin", brush_texture=3)
    with pytest.raises(TypeError):
        RandARTTwinsd(keys="image", lung_key="lung", variant="cutpaste", control_offset=10)
    with pytest.raises(ValueError, match="texture"):
        RandPerlinAnomaly(texture="dtd")
    img, lung = phantom(0)
    with pytest.raises(ValueError, match=r"'image'.*\(3, 256, 256\)"):
        RandCutPasted(keys="image", lung_key="lung")({"image": np.repeat(img, 3, 0), "lung": lung})


@pytest.mark.parametrize("variant", VARIANTS)
def test_sizes_scale_the_look(variant):
    """Pixel constants scale with the image: the mask covers about the same fraction at 512."""
    fractions = []
    for size in (256, 512):
        img, lung = phantom(0, size=size)
        t = BASELINES[variant]().set_random_state(0)
        fractions.append(np.median([t(img, lung)[1].mean() for _ in range(12)]))
    assert 0.5 < fractions[1] / fractions[0] < 2.0


# --- method details -----------------------------------------------------------------------------


def test_cutpaste_patch_sizes_follow_the_paper():
    img, lung = phantom(0)
    t = RandCutPaste(jitter=None).set_random_state(0)
    areas, aspects = [], []
    for _ in range(300):
        t.randomize(img[0], lung[0])
        _, _, h, w = t._params.source
        areas.append(h * w / 256**2)
        aspects.append(w / h)
    assert 0.019 <= min(areas) and max(areas) <= 0.152 and 0.02 < np.median(areas) < 0.15
    assert 0.28 <= min(aspects) and max(aspects) <= 3.6 and abs(np.median(np.log(aspects))) < 0.25


def test_cutpaste_without_jitter_pastes_a_translated_copy():
    img, lung = phantom(1)
    t = RandCutPaste(jitter=None).set_random_state(3)
    out, mask = t(img, lung)
    (sy, sx, h, w), (cy, cx) = t._params.source, t._params.centre
    rows, cols = np.nonzero(mask[0])
    src = img[0, rows - (cy - h // 2) + sy, cols - (cx - w // 2) + sx]
    assert np.array_equal(out[0, rows, cols], src)


def test_anatpaste_soft_edge_has_no_dark_halo():
    """Ours blends the image around the patch, not black, where the blur reaches past its box."""
    img = np.full((1, 256, 256), 120, np.uint8)
    lung = np.ones((1, 256, 256), np.uint8)
    t = RandAnatPaste(jitter=None, blur_range=(14, 15)).set_random_state(0)
    for _ in range(5):
        out, _ = t(img, lung)
        assert out.min() == 120  # a constant image pasted into itself stays constant


def test_perlin_noise_is_zero_on_the_grid_and_about_unit_range():
    rng = np.random.default_rng(0)
    n = perlin_noise((256, 256), (8, 4), rng.random((9, 5)) * 2 * np.pi)
    assert np.abs(n[::32, ::64]).max() < 1e-6  # gradient noise vanishes at the vertices
    assert 0.3 < np.abs(n).max() <= 1.5
    assert perlin_noise((224, 200), (2, 2), np.zeros((3, 3))).shape == (224, 200)


def test_perlin_texture_from_the_image_is_an_option():
    img, lung = phantom(2)
    out, mask = RandPerlinAnomaly(texture="image").set_random_state(0)(img, lung)
    assert mask.any() and np.array_equal(out[mask == 0], img[mask == 0])


# --- real radiographs ---------------------------------------------------------------------------


def _real_pairs(shared_data, n=24):
    folder = shared_data / "covidquex_normal_lung"
    names = sorted(p.stem for p in (folder / "images").glob("*.png"))[:n]
    pairs = []
    for name in names:
        img = np.asarray(Image.open(folder / "images" / f"{name}.png").convert("L"))[None]
        pbt = np.asarray(Image.open(shared_data / "reference" / "pbtseg" / folder.name / f"{name}.png"))[None]
        gt = (np.asarray(Image.open(folder / "masks" / f"{name}.png").convert("L")) > 127).astype(np.uint8)[None]
        pairs += [(img, pbt), (img, gt)]
    return pairs


@pytest.mark.parametrize("variant", VARIANTS)
def test_real_images_mask_in_lungs_and_changes_only_where_the_mask_is(variant, shared_data):
    t = BASELINES[variant]().set_random_state(0)
    painted = with_lungs = 0
    for img, lung in _real_pairs(shared_data):
        if not (lung > 0).any():  # a few PBTSeg maps are empty: tested above
            continue
        with_lungs += 1
        painted += check_contract(t, img, lung, calls=1)
    assert painted >= 0.9 * with_lungs  # AnatPaste discards a few anomalies too faint for the mask
    assert t.faint_count == with_lungs - painted


@pytest.mark.parametrize("variant", VARIANTS)
def test_bundle_variant_override_reaches_the_synthesis(variant, repo_root):
    """``--variant anatpaste | cutpaste | perlin`` needs no other change of the bundle configs."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(repo_root / "bundle" / "configs" / f) for f in ("train.json", "small.json")])
    parser["variant"] = variant
    twins = parser.get_parsed_content("train#preprocessing_synthesis#0")
    assert isinstance(twins, RandARTTwinsd) and isinstance(twins.synth, BASELINES[variant])


def test_anatpaste_mask_covers_every_visible_change(shared_data):
    """On 96 ``covidquex_normal_lung`` images (PBTSeg lungs), no pixel outside AnatPaste's mask
    changes by more than 10 grey levels; with the opacity rule alone some image had such pixels."""
    from artasyn import PBTSeg

    files = sorted((shared_data / "covidquex_normal_lung" / "images").glob("*.png"))[::4][:96]
    new, old = BASELINES["anatpaste"](), BASELINES["anatpaste"](mask_change=float("inf"))
    new.set_random_state(3), old.set_random_state(3)
    outside_new = outside_old = 0
    for f in files:
        img = np.asarray(Image.open(f).convert("L"))[None]
        lung = PBTSeg()(img)
        if not (lung > 0).any():
            continue
        for t in (new, old):
            out, mask = t(img, lung)
            leak = (np.abs(np.asarray(out, np.float32) - img) > 10) & (np.asarray(mask) == 0)
            if t is new:
                outside_new += int(leak.any())
            else:
                outside_old += int(leak.any())
    assert outside_new == 0
    assert outside_old > 0
