"""Procedural chest X-ray phantoms, the embedded default data set (artasyn.phantom)."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from artasyn.phantom import PHANTOM_VERSION, generate_phantom_dataset, make_phantom


def test_output_types_shapes_and_labels():
    ph = make_phantom(size=128, seed=1)
    assert set(ph) == {"image", "lesion", "lungs"}
    for v in ph.values():
        assert v.shape == (128, 128) and v.dtype == np.uint8
    assert set(np.unique(ph["lungs"])) == {0, 1, 2}
    assert not ph["lesion"].any()


def test_same_seed_same_phantom_and_different_seeds_differ():
    a, b, c = make_phantom(seed=5), make_phantom(seed=5), make_phantom(seed=6)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["image"], c["image"])
    rng = np.random.default_rng(5)
    assert make_phantom(seed=rng)["image"].shape == (256, 256)


def test_right_lung_is_image_left_and_lungs_are_sized_like_real_ones():
    for seed in range(5):
        lungs = make_phantom(seed=seed)["lungs"]
        cols = np.arange(256)
        assert cols[(lungs == 1).any(0)].mean() < 128 < cols[(lungs == 2).any(0)].mean()
        for k in (1, 2):
            assert 0.05 < (lungs == k).mean() < 0.14


def test_lungs_dark_body_bright_air_dark():
    ph = make_phantom(seed=2)
    img, lungs = ph["image"].astype(float), ph["lungs"]
    assert img[lungs > 0].mean() < 100
    # body just around the lungs, 6 to 10 pixels away
    ring = ndimage.binary_dilation(lungs > 0, iterations=10) & ~ndimage.binary_dilation(lungs > 0, iterations=6)
    assert np.percentile(img[ring], 1) > 160  # PBTSeg thresholds up to 160 must not leak
    assert img[:8, :8].mean() < 60  # air at the top corner, above the shoulder


def test_diseased_has_lesions_inside_lungs_and_brighter_than_healthy_twin():
    for seed in range(5):
        healthy = make_phantom(seed=seed)
        sick = make_phantom(seed=seed, diseased=True)
        lesion = sick["lesion"].astype(bool)
        assert lesion.any() and set(np.unique(sick["lesion"])) <= {0, 1}
        assert not (lesion & (sick["lungs"] == 0)).any()
        np.testing.assert_array_equal(sick["lungs"], healthy["lungs"])
        diff = sick["image"].astype(float) - healthy["image"].astype(float)
        assert diff[lesion].mean() > 20
        far = ~ndimage.binary_dilation(lesion, iterations=20)
        assert np.abs(diff[far]).max() <= 2  # the same anatomy elsewhere, opacities fade out


def test_other_sizes_scale():
    ph = make_phantom(size=512, seed=0, diseased=True)
    assert ph["image"].shape == (512, 512) and 0.05 < (ph["lungs"] == 1).mean() < 0.14


def test_pbtseg_finds_both_lungs_on_healthy_phantoms():
    pbtseg = pytest.importorskip("artasyn.pbtseg")
    seg = pbtseg.PBTSeg()
    found, dices = 0, []
    for seed in range(50):
        ph = make_phantom(seed=seed)
        lab = np.asarray(seg(ph["image"][None]))[0]
        found += bool((lab == 1).any() and (lab == 2).any())
        for k in (1, 2):
            a, b = lab == k, ph["lungs"] == k
            if a.any():
                dices.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert found >= 45, f"PBTSeg found both lungs on only {found}/50 phantoms"
    assert np.median(dices) > 0.8 and np.mean(np.array(dices) > 0.8) >= 0.9


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_dataset_layout(tmp_path):
    root = generate_phantom_dataset(tmp_path / "ph", n_train=3, n_test_healthy=2, n_test_diseased=2, size=64, seed=1)
    assert len(list((root / "train/healthy").glob("*.png"))) == 3
    assert len(list((root / "test/healthy").glob("*.png"))) == 2
    imgs = sorted(p.name for p in (root / "test/diseased").glob("*.png"))
    masks = sorted(p.name for p in (root / "test/diseased_mask").glob("*.png"))
    assert imgs == masks and len(imgs) == 2
    img = np.asarray(Image.open(root / "test/diseased" / imgs[0]))
    mask = np.asarray(Image.open(root / "test/diseased_mask" / imgs[0]))
    assert img.shape == mask.shape == (64, 64) and img.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255} and mask.any()
    marker = json.loads(next(root.glob(".*.json")).read_text())
    assert marker["version"] == PHANTOM_VERSION and marker["n_train"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ph"]  # no temporary folder left behind


def test_dataset_is_reused_when_parameters_match_and_rebuilt_otherwise(tmp_path):
    kw = dict(n_train=2, n_test_healthy=1, n_test_diseased=1, size=64, seed=0)
    root = generate_phantom_dataset(tmp_path / "ph", **kw)
    first = root / "train/healthy/phantom_00000.png"
    stamp = first.stat().st_mtime_ns
    assert generate_phantom_dataset(tmp_path / "ph", **kw) == root
    assert first.stat().st_mtime_ns == stamp
    generate_phantom_dataset(tmp_path / "ph", **{**kw, "n_train": 4})
    assert len(list((root / "train/healthy").glob("*.png"))) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["ph"]


def test_dataset_is_deterministic(tmp_path):
    kw = dict(n_train=2, n_test_healthy=1, n_test_diseased=1, size=64, seed=3)
    a = generate_phantom_dataset(tmp_path / "a", **kw)
    b = generate_phantom_dataset(tmp_path / "b", **kw)
    assert _listing(a) == _listing(b)
    for rel in _listing(a):
        if rel.endswith(".png"):
            np.testing.assert_array_equal(np.asarray(Image.open(a / rel)), np.asarray(Image.open(b / rel)))


def test_dataset_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_phantom_dataset(tmp_path / "mine", n_train=1, n_test_healthy=1, n_test_diseased=1, size=64)
    assert (tmp_path / "mine" / "precious.txt").exists()
