"""ART-ASyn synthesis (docs/method.md section 2): the step transforms, the whole chain, the
training twins, and, on real data, the output statistics against the authors' code.

The statistics test uses ``covidquex_normal_lung`` (the 200 images listed in
``reference/summary.json``, with the authors' PBTSeg lung maps of ``reference/pbtseg``).
"""

import json
import logging

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, list_data_collate
from PIL import Image
from scipy import ndimage

from artasyn.anatomy import RibIntensityScale, RibIntensityScaled, soft_lung_mask
from artasyn.brush import StampBank, make_brush_texture, paint_stamps, pil_over_alpha_table
from artasyn.composite import CompositeAnomaly, CompositeAnomalyd
from artasyn.effects import (
    ComposeAnomalyLayers,
    ComposeAnomalyLayersd,
    LayerGaussianBlur,
    LayerGaussianBlurd,
    RandCrystallize,
    RandCrystallized,
)
from artasyn.strokes import RandBrushAnomaly, RandBrushAnomalyd
from artasyn.synthesis import RandARTAnomaly, RandARTAnomalyd, RandARTTwinsd


def toy_pair(size=128, seed=0):
    """A CXR-like toy image (dark lungs, bright ribs) and its lung label map, 1xHxW uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 150 + 40 * np.sin(yy * 40) + rng.normal(0, 5, (size, size))
    lung = np.zeros((size, size), np.uint8)
    lung[(((yy - 0.5) / 0.32) ** 2 + ((xx - 0.3) / 0.13) ** 2) < 1] = 1
    lung[(((yy - 0.5) / 0.32) ** 2 + ((xx - 0.7) / 0.13) ** 2) < 1] = 2
    img[lung > 0] -= 70
    return np.clip(img, 0, 255).astype(np.uint8)[None], lung[None]


# --- the brush --------------------------------------------------------------------------------


def test_procedural_brush_has_the_authors_histogram_character():
    tex = make_brush_texture(seed=3)
    assert tex.shape == (106, 168) and tex.dtype == np.uint8
    assert 13 < tex.mean() < 19
    assert np.percentile(tex, 50) == pytest.approx(2, abs=1)
    assert np.percentile(tex, 90) == pytest.approx(48, abs=3)
    assert np.percentile(tex, 99) == pytest.approx(186, abs=8)
    assert make_brush_texture(seed=3) is tex  # cached
    assert not np.array_equal(make_brush_texture(seed=4), tex)


def test_brush_texture_from_an_image_file(tmp_path):
    path = tmp_path / "tex.png"
    Image.fromarray(make_brush_texture(1)).save(path)
    t = RandBrushAnomaly(brush_texture=str(path))
    assert np.array_equal(t.texture, make_brush_texture(1))


def test_stamps_composite_with_pillows_alpha_arithmetic():
    bank = StampBank(make_brush_texture(0), base_width=40)
    canvas = Image.new("L", (64, 64), 0)
    paint_stamps(canvas, bank, [30.0], [30.0], [30], [0.0], [0.25])
    once = np.asarray(canvas).copy()
    paint_stamps(canvas, bank, [30.0], [30.0], [30], [0.0], [0.25])
    table = pil_over_alpha_table()
    assert np.array_equal(np.asarray(canvas), table[once.astype(int) * 256 + once])


# --- the step transforms --------------------------------------------------------------------


def test_step_transforms_keep_shape_and_type():
    img, lung = toy_pair()
    for cast in (np.asarray, torch.as_tensor, MetaTensor):
        im, lu = cast(img), cast(lung)
        a = RandBrushAnomaly().set_random_state(0)(im, lu)
        assert a.shape == (2, 128, 128) and type(a) is type(im)
        b = LayerGaussianBlur(8)(a)
        c = RandCrystallize(500).set_random_state(0)(a)
        cb = LayerGaussianBlur(3)(c)
        z = ComposeAnomalyLayers()(a, b, c, cb)
        z = RibIntensityScale()(z, im, lu)
        out, mask = CompositeAnomaly()(im, z)
        for x in (b, c, cb, z):
            assert x.shape == (2, 128, 128) and type(x) is type(im)
        assert out.shape == im.shape and type(out) is type(im) and out.dtype == im.dtype
        assert mask.shape == im.shape and type(mask) is type(im)
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0.0, 1.0}


def test_dictionary_steps_chain_like_the_whole_transform():
    img, lung = toy_pair()
    d = {"image": img, "lung": lung}
    d = RandBrushAnomalyd(keys="image", lung_key="lung").set_random_state(0)(d)
    d = LayerGaussianBlurd(keys="anomaly_layer", radius=8, output_keys="anomaly_blur")(d)
    d = RandCrystallized(keys="anomaly_layer").set_random_state(0)(d)
    d = LayerGaussianBlurd(keys="anomaly_cryst", radius=3, output_keys="anomaly_cryst_blur")(d)
    d = ComposeAnomalyLayersd(keys="anomaly_layer")(d)
    d = RibIntensityScaled(keys="anomaly_layer")(d)
    d = CompositeAnomalyd(keys="image")(d)
    assert d["image"].shape == img.shape and d["anomaly_mask"].shape == img.shape
    assert "anomaly_layer" not in d and "anomaly_blur" not in d
    assert (d["image"].astype(int) >= img.astype(int)).all()


def test_soft_lung_mask_is_dilated_then_smoothed():
    lung = np.zeros((64, 64), np.uint8)
    lung[20:40, 20:40] = 1
    s = soft_lung_mask(lung)
    assert s.max() == pytest.approx(1.0, abs=1e-3) and s[0, 0] == 0 and 0 < s[20, 16] < 1


# --- the whole chain ------------------------------------------------------------------------


def test_same_seed_same_anomaly_different_seed_different():
    img, lung = toy_pair()
    a1, m1 = RandARTAnomaly().set_random_state(7)(img, lung)
    a2, m2 = RandARTAnomaly().set_random_state(7)(img, lung)
    a3, _ = RandARTAnomaly().set_random_state(8)(img, lung)
    assert np.array_equal(a1, a2) and np.array_equal(m1, m2)
    assert not np.array_equal(a1, a3)


@pytest.mark.parametrize("variant", ["base", "base_blur_cryst", "final"])
def test_never_darkens_and_mask_stays_in_the_soft_lung(variant):
    img, lung = toy_pair(seed=1)
    t = RandARTAnomaly(variant=variant).set_random_state(0)
    soft = soft_lung_mask(lung[0])
    for _ in range(5):
        out, mask = t(img, lung)
        assert (out.astype(int) >= img.astype(int)).all()
        if variant != "base_blur_cryst":  # that variant has no lung mask by definition
            assert not (mask[0] > 0)[soft == 0].any()
            assert ((out != img)[0] & (soft == 0)).sum() == 0


def test_variants_differ_sensibly():
    img, lung = toy_pair(seed=2)
    res = {v: RandARTAnomaly(variant=v).set_random_state(3)(img, lung) for v in ("base", "base_blur_cryst", "final")}
    # the same strokes: the smoothed variants spread the anomaly, the final one is rib-modulated
    assert res["base"][1].sum() > 0 and res["final"][1].sum() > 0
    assert not np.array_equal(res["base"][0], res["final"][0])
    assert not np.array_equal(res["base_blur_cryst"][0], res["final"][0])
    changed = {v: int((o != img).sum()) for v, (o, m) in res.items()}
    assert changed["base_blur_cryst"] > changed["base"]  # the blur widens the footprint


def test_float_and_torch_inputs_keep_type_and_unpainted_values():
    img, lung = toy_pair()
    f = img.astype(np.float32) + 0.25
    out, mask = RandARTAnomaly().set_random_state(0)(f, lung)
    assert out.dtype == np.float32 and (out >= f).all() and np.array_equal(out[mask == 0][:10], out[mask == 0][:10])
    mt = MetaTensor(torch.as_tensor(img), meta={"filename_or_obj": "toy.png"})
    out_t, mask_t = RandARTAnomaly().set_random_state(0)(mt, torch.as_tensor(lung))
    assert isinstance(out_t, MetaTensor) and out_t.meta["filename_or_obj"] == "toy.png"
    assert out_t.meta["artasyn_variant"] == "final" and mask_t.dtype == torch.float32


def test_no_lung_leaves_image_unchanged_warns_and_counts(caplog):
    img, _ = toy_pair()
    lung = np.zeros_like(img)
    mt = MetaTensor(torch.as_tensor(img), meta={"filename_or_obj": "/data/empty_lungs.png"})
    t = RandARTAnomalyd(keys="image", lung_key="lung").set_random_state(0)
    with caplog.at_level(logging.WARNING):
        d = t({"image": mt, "lung": torch.as_tensor(lung)})
    assert torch.equal(d["image"].as_tensor(), mt.as_tensor())
    assert float(d["anomaly_mask"].sum()) == 0 and float(d["anomaly_label"][0]) == 0.0
    assert d["image"].meta["artasyn_no_lung"] is True and t.no_lung_count == 1
    assert "empty_lungs.png" in caplog.text


@pytest.mark.parametrize("variant", ["final", "anatpaste"])
def test_no_lung_warning_names_the_file_without_metadata(variant, caplog):
    """After ``EnsureTyped(track_meta=False)`` (the bundle's training chain) the image has no
    metadata; the warning then names ``d["image_path"]`` instead of "<unknown>"."""
    img, _ = toy_pair()
    item = {"image": torch.as_tensor(img), "lung": torch.zeros(img.shape), "image_path": "/data/no_lungs_here.png"}
    twins = RandARTTwinsd(keys="image", lung_key="lung", variant=variant, num_twins=1).set_random_state(0)
    with caplog.at_level(logging.WARNING):
        twins(item)
        RandARTAnomalyd(keys="image", lung_key="lung", variant=variant).set_random_state(0)(item)
    assert caplog.text.count("no_lungs_here.png") == 2 and "<unknown>" not in caplog.text


def test_bad_inputs_raise_precise_errors():
    img, lung = toy_pair()
    t = RandARTAnomalyd(keys="image", lung_key="lung")
    with pytest.raises(ValueError, match=r"'image'.*\(3, 128, 128\)"):
        t({"image": np.repeat(img, 3, 0), "lung": lung})
    with pytest.raises(ValueError, match=r"'image'.*\(128, 128\)"):
        t({"image": img[0], "lung": lung})
    with pytest.raises(ValueError, match=r"'lung'.*\(1, 64, 64\).*'image'"):
        t({"image": img, "lung": lung[:, :64, :64]})
    with pytest.raises(ValueError, match="variant"):
        RandARTAnomaly(variant="blur")


def test_dictionary_transform_writes_mask_label_and_variant():
    img, lung = toy_pair()
    d = RandARTAnomalyd(keys="image", lung_key="lung").set_random_state(0)(
        {"image": torch.as_tensor(img), "lung": lung}
    )
    assert isinstance(d["anomaly_mask"], torch.Tensor) and d["anomaly_mask"].dtype == torch.float32
    assert d["anomaly_label"].dtype == torch.float32 and d["anomaly_label"].shape == (1,)
    assert float(d["anomaly_label"][0]) == 1.0 and d["artasyn_variant"] == "final"
    none = RandARTAnomalyd(keys="image", lung_key="lung", variant="none")({"image": img, "lung": lung})
    assert np.array_equal(none["image"], img) and float(none["anomaly_label"][0]) == 0.0


def test_twins_list_structure_and_collation():
    img, lung = toy_pair()
    mt = MetaTensor(torch.as_tensor(img).float(), meta={"filename_or_obj": "toy.png"})
    t = RandARTTwinsd(keys="image", lung_key="lung").set_random_state(0)
    ks = set()
    for _ in range(12):
        items = t({"image": mt, "lung": torch.as_tensor(lung)})
        k = len(items) - 1
        ks.add(k)
        assert 1 <= k <= 3
        assert float(items[0]["anomaly_label"][0]) == 0 and float(items[0]["anomaly_mask"].sum()) == 0
        assert torch.equal(items[0]["image"].as_tensor(), mt.as_tensor())
        for it in items:
            assert torch.equal(it["target"].as_tensor(), mt.as_tensor())
        for it in items[1:]:
            assert float(it["anomaly_label"][0]) == 1.0
        batch = list_data_collate([items, t({"image": mt, "lung": torch.as_tensor(lung)})])
        assert batch["image"].shape[1:] == (1, 128, 128) and batch["anomaly_label"].shape[1] == 1
    assert ks == {1, 2, 3}
    only = RandARTTwinsd(keys="image", lung_key="lung", variant="none")({"image": mt, "lung": lung})
    assert len(only) == 1 and float(only[0]["anomaly_label"][0]) == 0
    assert "image" in list_data_collate([only])


def test_dataloader_workers_draw_different_anomalies():
    img, lung = toy_pair()
    data = [{"image": img.copy(), "lung": lung.copy()} for _ in range(4)]
    ds = Dataset(data, transform=RandARTAnomalyd(keys="image", lung_key="lung"))
    loader = DataLoader(ds, batch_size=1, num_workers=2, shuffle=False)
    masks = [b["anomaly_mask"][0] for b in loader]
    # items 0 and 1 are the first of each worker
    assert not torch.equal(masks[0], masks[1])
    again = [b["anomaly_mask"][0] for b in DataLoader(ds, batch_size=1, num_workers=2, shuffle=False)]
    assert len(again) == 4


def test_large_images_draw_brush_widths_on_the_scaled_grid():
    img, lung = toy_pair(size=128)
    big = np.asarray(Image.fromarray(img[0]).resize((512, 512), Image.BILINEAR))
    big_lung = np.asarray(Image.fromarray(lung[0]).resize((512, 512), Image.NEAREST))
    t = RandBrushAnomaly().set_random_state(0)
    assert t.plan_args(big.shape)["width_step"] == 2 and t.plan_args((256, 256))["width_step"] == 1
    t.randomize(big, big_lung)
    widths = np.concatenate([b[2] for seg in t._plan.segments for b in seg])
    assert (widths % 2 == 0).all() and widths.min() >= int(0.3 * 100)


def test_colour_percentile_from_the_histogram_equals_numpy():
    from artasyn.strokes import _u8_percentile

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000, 65536):
        a = rng.integers(0, 256, n).astype(np.uint8)
        for q in (0.0, 12.5, 85.0, 100.0):
            assert _u8_percentile(a, q) == float(np.percentile(a, q))


def test_sizes_scale_the_look():
    img, lung = toy_pair(size=128)
    big = np.asarray(Image.fromarray(img[0]).resize((512, 512), Image.BILINEAR))[None]
    big_lung = np.asarray(Image.fromarray(lung[0]).resize((512, 512), Image.NEAREST))[None]
    fr = []
    for im, lu in ((img, lung), (big, big_lung)):
        t = RandARTAnomaly().set_random_state(0)
        fr.append(np.median([t(im, lu)[1].mean() for _ in range(6)]))
    assert 0.4 < fr[1] / max(fr[0], 1e-6) < 2.5


# --- real data: the authors' output statistics -------------------------------------------------


def _stats(img, out, mask, lung):
    diff = out.astype(np.float64) - img
    m = mask > 0
    dl = ndimage.binary_dilation(lung > 0, iterations=8)
    return dict(
        mask_frac=m.mean(),
        mask_frac_of_lung=m.sum() / max((lung > 0).sum(), 1),
        mask_outside_dilated_lung=(m & ~dl).sum() / max(m.sum(), 1),
        components=ndimage.label(m)[1],
        mean_brighten_in_mask=diff[m].mean() if m.any() else 0.0,
        max_darken=(-diff).max(),
    )


@pytest.mark.slow
def test_statistics_match_the_authors_on_200_healthy_images(shared_data):
    ref = json.loads((shared_data / "reference" / "summary.json").read_text())["artasyn_synthesis_authors_code"]
    t = RandARTAnomaly(variant="final").set_random_state(0)
    rows = []
    for name in ref["images"]:
        img = np.asarray(Image.open(shared_data / "covidquex_normal_lung" / "images" / f"{name}.png").convert("L"))
        lung = np.asarray(Image.open(shared_data / "reference" / "pbtseg" / "covidquex_normal_lung" / f"{name}.png"))
        out, mask = t(img[None], lung[None])
        rows.append(_stats(img, out[0], mask[0], lung))
    ours = {k: np.array([r[k] for r in rows], float) for k in rows[0]}
    auth = ref["output_statistics"]
    for key in ("mask_frac", "mask_frac_of_lung", "components", "mean_brighten_in_mask"):
        assert np.median(ours[key]) == pytest.approx(auth[key]["median"], rel=0.15), key
    assert ours["max_darken"].max() == 0  # never darkened
    # spill: mask pixels outside the lung dilated by 8, per image, at or below the authors' p90
    # (0.00259, their code at seed 0); ours at seed 0: 0.00196 (seeds 1/2: 0.00259/0.00200 measured
    # with the same brush while it was tuned; the authors' own seeds 1/2 give 0.00234/0.00226).
    assert np.percentile(ours["mask_outside_dilated_lung"], 90) <= auth["mask_outside_dilated_lung"]["p90"]
    assert np.median(ours["mask_outside_dilated_lung"]) <= 0.001
    assert (ours["mask_frac"] > 0).mean() >= 0.99
