"""The lung-box crop (:mod:`artasyn.lungs.crop`): the box and its margin, the crop of every key,
MONAI's inverse, the no-lung fallback, and on real radiographs that the crop keeps the lungs."""

import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from artasyn.lungs import PBTSeg
from artasyn.lungs.crop import LungBoxCrop, LungBoxCropd, lung_box


def two_lungs(height: int = 200, width: int = 160) -> np.ndarray:
    """A bright body with two dark upright lung fields, rows 50-149."""
    img = np.full((1, height, width), 220.0, np.float32)
    img[0, 50:150, 30:70] = 40.0
    img[0, 50:150, 90:130] = 40.0
    return img


def test_lung_box_adds_the_margin_of_the_box_and_clips_to_the_image():
    lungs = np.zeros((100, 80), np.uint8)
    lungs[20:70, 10:50] = 1  # 50 rows, 40 columns
    start, end = lung_box(lungs, 0.1)
    assert start.tolist() == [15, 6] and end.tolist() == [75, 54]
    start, end = lung_box(lungs, 0.5)  # 25 rows above reach row -5, clipped to 0
    assert start.tolist() == [0, 0] and end.tolist() == [95, 70]
    assert lung_box(np.zeros((4, 4)), 0.1) is None


def test_crop_holds_both_lungs_and_little_else():
    img = two_lungs()
    start, end = LungBoxCrop(margin=0.0, pbtseg_size=None).compute_bounding_box(img)
    rows, cols = slice(start[0], end[0]), slice(start[1], end[1])
    dark = img[0] < 100
    assert dark[rows, cols].sum() == dark.sum()  # every lung pixel inside
    assert (end - start).prod() < 0.5 * dark.size  # and a box much smaller than the image
    wider = LungBoxCrop(margin=0.1, pbtseg_size=None).compute_bounding_box(img)
    assert (wider[0] < start).all() and (wider[1] > end).all()


def test_dictionary_crop_crops_every_key_alike_records_the_box_and_inverts():
    img = two_lungs()
    mask = np.zeros_like(img)
    mask[0, 60:80, 40:60] = 1.0
    crop = LungBoxCropd(["image", "mask"], margin=0.1, pbtseg_size=None)
    out = crop({"image": MetaTensor(torch.as_tensor(img)), "mask": MetaTensor(torch.as_tensor(mask))})
    start, end = out["lung_box_start"], out["lung_box_end"]
    assert out["image"].shape == out["mask"].shape == (1, *(end - start))
    assert np.array_equal(out["image"].numpy(), img[:, start[0] : end[0], start[1] : end[1]])
    assert out["mask"].sum() == mask.sum()  # the lesion is inside the lungs, so inside the box
    back = crop.inverse(out)
    assert back["mask"].shape == mask.shape and np.array_equal(back["mask"].numpy(), mask)


def test_a_flat_image_gets_robust_pbtsegs_template_lungs():
    flat = torch.full((1, 64, 48), 128.0)
    start, end = LungBoxCrop(pbtseg_size=None).compute_bounding_box(flat)
    assert (end - start).prod() >= 0.5 * 64 * 48  # a box around template lungs, not an empty one


def test_no_lungs_keeps_the_whole_image_and_names_the_file(caplog):
    """Robust PBTSeg always returns lungs; with a segmenter that can find none (paper mode on a
    flat image) the crop keeps the whole image and says so."""
    flat = MetaTensor(torch.full((1, 64, 48), 128.0), meta={"filename_or_obj": "flat.png"})
    crop = LungBoxCrop(pbtseg_size=None)
    crop.pbtseg = PBTSeg(spatial_size=None, mode="paper")
    with caplog.at_level(logging.WARNING):
        start, end = crop.compute_bounding_box(flat)
    assert start.tolist() == [0, 0] and end.tolist() == [64, 48]
    assert any("flat.png" in r.getMessage() and "whole image" in r.getMessage() for r in caplog.records)


def test_negative_margin_is_refused():
    with pytest.raises(ValueError, match="margin"):
        LungBoxCrop(margin=-0.1)


@pytest.mark.parametrize("name", ["covidquex_normal_lung", "zhanglab_train_normal"])
def test_on_real_radiographs_the_crop_keeps_the_lungs(shared_data, name):
    """Healthy images: the crop keeps at least 97 % of the ground-truth lung on every image
    (COVID-QU-Ex; measured minimum 0.970 over all 400), and on ZhangLab (no lung masks) it
    keeps the framing's spread small: the lungs' box fills most of every crop."""
    crop = LungBoxCrop()
    if name == "covidquex_normal_lung":
        images = sorted((shared_data / name / "images").glob("*.png"))[::8]
        for path in images:
            img = np.asarray(Image.open(path).convert("L"), np.float32)[None]
            gt = np.asarray(Image.open(shared_data / name / "masks" / path.name)) > 127
            start, end = crop.compute_bounding_box(img)
            kept = gt[start[0] : end[0], start[1] : end[1]].sum() / gt.sum()
            assert kept >= 0.97, (path.name, kept)
    else:
        images = sorted((shared_data / name).glob("*.jp*g"))[::40]
        for path in images:
            img = np.asarray(Image.open(path).convert("L"), np.float32)[None]
            start, end = crop.compute_bounding_box(img)
            lungs = np.asarray(crop.pbtseg(img))[0, start[0] : end[0], start[1] : end[1]] > 0
            rows, cols = np.nonzero(lungs)
            fill = (rows.max() + 1 - rows.min()) / lungs.shape[0], (cols.max() + 1 - cols.min()) / lungs.shape[1]
            assert min(fill) >= 0.8, (path.name, fill)  # 1 / (1 + 2 * 0.08) = 0.86 unless clipped


def test_no_margin_is_no_crop():
    """``margin=None`` (the bundle's ``lung_box_margin`` in every preset): the data pass unchanged."""
    img = MetaTensor(torch.as_tensor(two_lungs()))
    crop = LungBoxCropd("image", margin=None)
    out = crop({"image": img})
    assert out["image"] is img and "lung_box_start" not in out
    assert crop.inverse(out)["image"] is img
