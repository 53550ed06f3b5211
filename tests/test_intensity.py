"""Input helpers: grayscale conversion like PIL "L" and the 0..255 scaling rule."""

import logging
import re

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from artasyn.intensity import (
    PercentileStretch,
    PercentileStretchd,
    ReflectGaussianSmooth,
    ReflectGaussianSmoothd,
    ScaleTo8Bit,
    ScaleTo8Bitd,
    ToGrayscale,
    ToGrayscaled,
)


@pytest.fixture
def rgb_hwc() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)


def test_rgb_to_gray_matches_pil_convert_L(rgb_hwc):
    expected = np.asarray(Image.fromarray(rgb_hwc, "RGB").convert("L"))
    gray = ToGrayscale()(np.moveaxis(rgb_hwc, -1, 0))
    assert gray.shape == (1, 32, 40) and gray.dtype == np.uint8
    assert np.abs(gray[0].astype(int) - expected).max() <= 1


def test_float_rgb_is_within_one_grey_level_of_pil(rgb_hwc):
    expected = np.asarray(Image.fromarray(rgb_hwc, "RGB").convert("L")).astype(float)
    gray = ToGrayscale()(torch.as_tensor(np.moveaxis(rgb_hwc, -1, 0)).float())
    assert isinstance(gray, torch.Tensor) and gray.dtype == torch.float32
    assert np.abs(gray[0].numpy() - expected).max() <= 1


def test_channel_last_rgba_is_detected_and_alpha_ignored(rgb_hwc):
    rgba = np.concatenate([rgb_hwc, np.zeros((32, 40, 1), np.uint8)], axis=-1)
    expected = np.asarray(Image.fromarray(rgba, "RGBA").convert("L"))
    assert np.abs(ToGrayscale()(rgba)[0].astype(int) - expected).max() <= 1


def test_channel_first_wins_when_ambiguous():
    img = np.zeros((3, 16, 3), np.uint8)
    img[0] = 255
    assert ToGrayscale()(img).shape == (1, 16, 3)
    assert ToGrayscale(channel_last=True)(img).shape == (1, 3, 16)


def test_single_channel_and_2d_inputs_become_1xHxW():
    assert ToGrayscale()(np.ones((1, 5, 6), np.uint8)).shape == (1, 5, 6)
    assert ToGrayscale()(np.ones((5, 6), np.uint8)).shape == (1, 5, 6)


def test_metatensor_keeps_meta():
    img = MetaTensor(torch.rand(3, 8, 8) * 255, meta={"filename_or_obj": "x.png"})
    out = ToGrayscale()(img)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.png" and out.shape == (1, 8, 8)


@pytest.mark.parametrize("shape", [(2, 8, 8), (8, 8, 5), (1, 2, 8, 8)])
def test_gray_bad_shape_names_key_and_shape(shape):
    with pytest.raises(ValueError, match=r"key 'image' with shape " + re.escape(str(shape))):
        ToGrayscaled(keys="image")({"image": np.zeros(shape, np.uint8)})


def test_uint8_unchanged():
    img = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    out = ScaleTo8Bit()(img)
    assert out.dtype == np.float32 and np.array_equal(out, img)


def test_uint16_divided_by_257():
    img = np.array([[[0, 257, 65535]]], np.uint16)
    assert ScaleTo8Bit()(img).tolist() == [[[0.0, 1.0, 255.0]]]


def test_float_in_unit_range_times_255_and_0_255_unchanged():
    assert ScaleTo8Bit()(np.array([[[0.0, 0.5, 1.0]]], np.float32)).tolist() == [[[0.0, 127.5, 255.0]]]
    assert ScaleTo8Bit()(torch.tensor([[[0.0, 12.0, 255.0]]])).tolist() == [[[0.0, 12.0, 255.0]]]


def test_other_ranges_are_min_max_scaled_with_a_warning(caplog):
    img = MetaTensor(torch.tensor([[[-100.0, 0.0, 1100.0]]]), meta={"filename_or_obj": "ct.nii"})
    with caplog.at_level(logging.WARNING, logger="artasyn.intensity"):
        out = ScaleTo8Bitd(keys="image")({"image": img})["image"]
    assert out.tolist() == [[[0.0, 21.25, 255.0]]] and isinstance(out, MetaTensor)
    assert any("ct.nii" in r.getMessage() and "min-max" in r.getMessage() for r in caplog.records)


def test_uint8_output_rounds():
    out = ScaleTo8Bit(dtype=np.uint8)(np.array([[[0.0, 0.5, 1.0]]], np.float32))
    assert out.dtype == np.uint8 and out.tolist() == [[[0, 128, 255]]]


def test_scale_nan_raises_naming_the_key():
    with pytest.raises(ValueError, match="key 'image'"):
        ScaleTo8Bitd(keys="image")({"image": np.array([[[np.nan, 1.0]]])})


# ---- PercentileStretch -----------------------------------------------------------------------


def test_percentile_stretch_none_is_the_identity():
    img = torch.rand(1, 8, 8) * 200
    assert PercentileStretch(None)(img) is img
    d = {"image": img}
    assert PercentileStretchd("image")(d)["image"] is img


def test_percentile_stretch_equals_monai_on_a_real_radiograph(shared_data):
    from monai.transforms import ScaleIntensityRangePercentilesd

    from scripts.loading import LoadChestXRayd

    path = sorted((shared_data / "zhanglab_test_dev" / "normal").iterdir())[0]
    img = LoadChestXRayd("image")({"image": str(path)})["image"]
    ours = PercentileStretchd("image", (0.5, 99.5))({"image": img})["image"]
    monai = ScaleIntensityRangePercentilesd("image", 0.5, 99.5, b_min=0.0, b_max=255.0, clip=True)({"image": img})
    assert isinstance(ours, MetaTensor) and ours.meta["filename_or_obj"] == img.meta["filename_or_obj"]
    assert torch.equal(torch.as_tensor(ours), torch.as_tensor(monai["image"]))
    lo, hi = np.percentile(np.asarray(img), [0.5, 99.5])
    assert hi - lo < 255  # the stretch did something on this image
    assert float(ours.min()) == 0.0 and float(ours.max()) == 255.0
    assert float((ours >= 255).float().mean()) == pytest.approx(0.005, abs=0.004)


def test_percentile_stretch_leaves_a_constant_image_and_checks_its_percentiles():
    flat = np.full((1, 4, 4), 77.0, np.float32)
    np.testing.assert_array_equal(PercentileStretch((1, 99))(flat), flat)
    for bad in ((99, 1), (5, 5), (-1, 50), (0, 101), (1, 2, 3)):
        with pytest.raises(ValueError, match="0 <= lower < upper <= 100"):
            PercentileStretch(bad)


def test_percentile_stretch_removes_a_global_exposure_difference():
    """The same anatomy at another exposure (gain and black level) reaches the network the same way."""
    rng = np.random.default_rng(3)
    img = rng.uniform(20, 230, (1, 32, 32)).astype(np.float32)
    dull = 40 + 0.7 * img  # brighter blacks, duller whites
    a, b = PercentileStretch((0.5, 99.5))(img), PercentileStretch((0.5, 99.5))(dull)
    np.testing.assert_allclose(a, b, atol=1e-3)


# ---- ReflectGaussianSmooth and the scoring inferer ---------------------------------------------


def test_reflect_gaussian_smooth_keeps_a_flat_image_flat_to_its_edge_where_monai_darkens_it():
    from monai.transforms import GaussianSmooth

    img = np.full((1, 32, 32), 200.0, np.float32)
    out = ReflectGaussianSmooth(1.5)(img)
    assert np.allclose(out, 200.0, atol=0.05)
    assert float(GaussianSmooth(1.5)(img)[0, 0, 0]) < 150  # zero padding: the dark frame avoided here


def test_reflect_gaussian_smooth_is_scipys_gaussian_inside_the_image():
    from scipy import ndimage

    img = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    out = ReflectGaussianSmooth(1.5)(img)
    assert out.shape == img.shape and out.dtype == np.float32
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(out[0][inner] - ndimage.gaussian_filter(img[0], 1.5)[inner]).max() < 0.01
    assert out.std() < 0.5 * img.std()  # white noise loses most of its variance
    assert ReflectGaussianSmooth(0.0)(img) is img


def test_reflect_gaussian_smoothd_keeps_metadata_and_names_bad_input():
    img = MetaTensor(torch.rand(1, 16, 16), meta={"filename_or_obj": "a.png"})
    out = ReflectGaussianSmoothd("image", sigma=1.0)({"image": img})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.png"
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        ReflectGaussianSmooth(-1.0)
    with pytest.raises(ValueError, match="larger than 6 pixels.*shape \\(1, 1, 5, 40\\)"):
        ReflectGaussianSmooth(1.5)(np.zeros((1, 5, 40), np.float32))


def test_smoothed_input_inferer_runs_the_network_on_the_smoothed_batch_only():
    from artasyn.intensity import reflect_gaussian_smooth
    from artasyn.scoring import SmoothedInputInferer

    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(SmoothedInputInferer(0.0)(x, net), net(x))
        assert torch.allclose(SmoothedInputInferer(1.5)(x, net), net(reflect_gaussian_smooth(x, 1.5)))
        assert not torch.allclose(SmoothedInputInferer(1.5)(x, net), net(x))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        SmoothedInputInferer(-0.5)
