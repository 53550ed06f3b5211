"""PBTSeg (docs/method.md section 1): behaviour on small phantoms, and parity with the authors'
implementation on the real COVID-QU-Ex images (``../shared/data``, reference label maps made by
the authors' PBTSeg.py)."""

import logging
import re

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from artasyn.pbtseg import PBTSeg, PBTSegd, brighten_border, resize_nearest

COVIDQUEX_SETS = ("covidquex_normal_lung", "covidquex_noncovid_lung", "covidquex_covid_infection")


def phantom(size: int = 256) -> np.ndarray:
    """A 1 x size x size chest phantom: bright body, two dark upright lung fields."""
    img = np.full((1, size, size), 200, np.uint8)
    s = size / 256
    img[0, int(60 * s) : int(180 * s), int(50 * s) : int(100 * s)] = 30  # image-left: right lung
    img[0, int(60 * s) : int(180 * s), int(156 * s) : int(206 * s)] = 40  # image-right: left lung
    return img


def test_labels_right_lung_1_left_lung_2_on_a_phantom():
    lung = PBTSeg()(phantom())
    assert isinstance(lung, np.ndarray) and lung.dtype == np.uint8 and lung.shape == (1, 256, 256)
    assert np.array_equal(lung[0] == 1, phantom()[0] == 30)
    assert np.array_equal(lung[0] == 2, phantom()[0] == 40)


def test_torch_in_torch_uint8_out():
    lung = PBTSeg()(torch.as_tensor(phantom()).float())
    assert isinstance(lung, torch.Tensor) and not isinstance(lung, MetaTensor)
    assert lung.dtype == torch.uint8 and set(lung.unique().tolist()) == {0, 1, 2}


def test_metatensor_keeps_its_meta_and_says_which_lungs_were_found():
    img = MetaTensor(torch.as_tensor(phantom()).float(), meta={"filename_or_obj": "phantom.png"})
    lung = PBTSeg()(img)
    assert isinstance(lung, MetaTensor) and lung.meta["filename_or_obj"] == "phantom.png"
    assert lung.meta["pbtseg_right_lung_found"] and lung.meta["pbtseg_left_lung_found"]
    assert "pbtseg_right_lung_found" not in img.meta  # the input is not modified


def test_512_input_is_segmented_at_256_and_mapped_back_with_nearest():
    small = phantom(256)
    big = small.repeat(2, axis=1).repeat(2, axis=2)  # exact 2x: the bilinear 256 version is `small`
    lung = PBTSeg()(big)
    assert lung.shape == (1, 512, 512)
    assert np.array_equal(lung[0], resize_nearest(PBTSeg()(small)[0], (512, 512)))


def test_native_size_scales_every_constant():
    big = phantom(512)
    lung = PBTSeg(spatial_size=None)(big)
    assert np.array_equal(lung[0] == 1, big[0] == 30) and np.array_equal(lung[0] == 2, big[0] == 40)
    # the paper's 2000..10000 pixel range is of a 256 image: 4x as many pixels at 512
    assert PBTSeg(spatial_size=None)(phantom(256)).tolist() == PBTSeg()(phantom(256)).tolist()


@pytest.mark.parametrize("shape", [(3, 512, 512), (512, 512), (1, 8, 8, 8)])
def test_bad_shapes_raise_naming_the_shape(shape):
    with pytest.raises(ValueError, match=r"1xHxW image, got shape " + re.escape(str(shape))):
        PBTSeg()(np.zeros(shape, np.uint8))


def test_bad_shape_in_dict_names_the_key():
    with pytest.raises(ValueError, match=r"got key 'image' with shape \(3, 512, 512\)"):
        PBTSegd(keys="image")({"image": np.zeros((3, 512, 512), np.uint8)})


def test_nan_raises():
    img = phantom().astype(np.float32)
    img[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PBTSeg()(img)


def test_no_lung_gives_an_empty_map_and_one_warning_per_file(caplog):
    seg = PBTSeg()
    img = MetaTensor(torch.full((1, 256, 256), 100.0), meta={"filename_or_obj": "constant.png"})
    with caplog.at_level(logging.WARNING, logger="artasyn.pbtseg"):
        first, second = seg(img), seg(img)
    assert int(first.max()) == 0 and int(second.max()) == 0
    assert not first.meta["pbtseg_right_lung_found"] and not first.meta["pbtseg_left_lung_found"]
    warnings = [r for r in caplog.records if "no lung" in r.getMessage()]
    assert len(warnings) == 1 and "constant.png" in warnings[0].getMessage()


def test_dict_version_writes_the_lung_key_and_the_found_flags():
    out = PBTSegd(keys="image", lung_keys="lung")({"image": phantom()})
    assert out["lung"].shape == (1, 256, 256) and out["lung"].dtype == np.uint8
    assert out["image_lungs_found"].tolist() == [True, True]


def test_brighten_border_keeps_the_centre_and_brightens_the_corners():
    img = np.full((1, 256, 256), 100, np.uint8)
    out = brighten_border(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert abs(int(out[0, 150, 128]) - 100) <= 1 and out[0, 0, 0] > 150


def test_brighten_border_option_runs_before_segmentation():
    lung = PBTSeg(brighten_border=True)(phantom())
    assert lung.shape == (1, 256, 256)


def test_rows_are_vertical_when_loading_a_real_png(shared_data):
    """covidquex_normal_lung: loaded with MONAI's PIL reader, reverse_indexing=False (section 7)."""
    from monai.transforms import LoadImage

    stem = "Normal (10234)"
    path = shared_data / "covidquex_normal_lung" / "images" / f"{stem}.png"
    img = LoadImage(reader="PILReader", reverse_indexing=False, image_only=True, ensure_channel_first=True)(str(path))
    lung = PBTSeg()(img)
    ref = np.array(Image.open(shared_data / "reference" / "pbtseg" / "covidquex_normal_lung" / f"{stem}.png"))
    assert np.array_equal(lung[0].numpy(), ref)
    cols = np.arange(256)
    assert (lung[0].numpy() == 1).sum(0) @ cols / (lung[0].numpy() == 1).sum() < 128  # right lung: image-left
    assert (lung[0].numpy() == 2).sum(0) @ cols / (lung[0].numpy() == 2).sum() > 128


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def test_parity_with_the_authors_on_all_covidquex_images(shared_data):
    """All 920 images of the three covidquex_* sets against reference/pbtseg: every label map
    identical."""
    seg = PBTSeg()
    different, n = [], 0
    for name in COVIDQUEX_SETS:
        for path in sorted((shared_data / name / "images").glob("*.png")):
            img = np.asarray(Image.open(path).convert("L"))[None]
            ref = np.asarray(Image.open(shared_data / "reference" / "pbtseg" / name / f"{path.stem}.png"))
            out = seg(img)[0]
            n += 1
            if not np.array_equal(out, ref):
                dice = min(_dice(out == k, ref == k) for k in (1, 2))
                different.append(f"{name}/{path.name} (Dice {dice:.4f})")
    assert n == 920
    assert not different, f"{len(different)}/{n} differ: {different[:5]}"
