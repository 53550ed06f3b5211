"""The image resize of every workflow (``scripts.resize``) against MONAI's anti-aliased ``Resized``.

:class:`scripts.resize.AntialiasResize` computes MONAI 1.6.1's ``Resize(mode="bilinear",
anti_aliasing=True)`` as two sparse matrix products; these tests hold it to MONAI's values
(at most 1e-3 on 0..255) on random images and on real radiographs (NIH ChestX-ray14 1024 x
1024, COVID-QU-Ex 256 x 256, ZhangLab 224 x 224 RGB JPEG), to MONAI's metadata, and show that
the bundle's scores do not move when it replaces MONAI's transform.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_presets import TINY_NET, inference_parser
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Resize, Resized

from scripts.resize import AntialiasResize, AntialiasResized, resize_matrix

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
#: the largest difference allowed from MONAI's resize, on images in 0..255 (float32 rounding is ~1e-4)
TOLERANCE = 1e-3
#: (input H, W) -> (output H, W): downscaling of each kind, non-square, and upscaling (no anti-aliasing)
SIZES = [
    ((1024, 1024), (128, 128)),
    ((1024, 1024), (256, 256)),
    ((256, 256), (128, 128)),
    ((224, 224), (128, 128)),
    ((1700, 1400), (128, 128)),
    ((64, 64), (128, 128)),
    ((300, 90), (128, 128)),  # rows shrink, columns grow
    ((5, 7), (3, 2)),  # tiny: the Gaussian is wider than the image
]


def _monai(img, size):
    return Resize(size, mode="bilinear", anti_aliasing=True)(img)


@pytest.mark.parametrize(("in_size", "out_size"), SIZES)
def test_matches_monai_antialiased_resize_on_random_images(in_size, out_size):
    img = torch.rand(1, *in_size, generator=torch.Generator().manual_seed(0)) * 255
    ours = AntialiasResize(out_size)(img)
    assert ours.shape == (1, *out_size) and ours.dtype == torch.float32
    assert float((ours - _monai(img, out_size)).abs().max()) <= TOLERANCE


def test_upscaling_interpolates_without_smoothing():
    """As MONAI: no axis shrinks, so no Gaussian; a sharp edge keeps plain bilinear values."""
    img = torch.zeros(1, 64, 64)
    img[:, :, 32:] = 255
    ours = AntialiasResize((128, 128))(img)
    plain = Resize((128, 128), mode="bilinear", anti_aliasing=False)(img)
    assert float((ours - plain).abs().max()) <= TOLERANCE
    assert float(ours[0, 0, 0]) == 0.0 and float(ours[0, 0, -1]) == pytest.approx(255.0)


def test_downscaling_smooths_like_monai_and_unlike_plain_bilinear():
    """A 1-pixel grating aliases into stripes under plain bilinear; the anti-aliased resize greys it, as MONAI's."""
    img = torch.zeros(1, 256, 256)
    img[:, :, ::2] = 255
    ours = AntialiasResize((100, 100))(img)
    plain = Resize((100, 100), mode="bilinear", anti_aliasing=False)(img)
    assert float((ours - _monai(img, (100, 100))).abs().max()) <= TOLERANCE
    inner = slice(8, -8)  # away from the zero padding of the borders
    assert float(ours[0, 50, inner].std()) * 10 < float(plain[0, 50, inner].std())


def test_custom_sigma_matches_monai():
    img = torch.rand(2, 200, 160, generator=torch.Generator().manual_seed(1)) * 255
    ours = AntialiasResize((100, 100), anti_aliasing_sigma=0.7)(img)
    theirs = Resize((100, 100), mode="bilinear", anti_aliasing=True, anti_aliasing_sigma=0.7)(img)
    assert ours.shape == (2, 100, 100) and float((ours - theirs).abs().max()) <= TOLERANCE


def test_unchanged_size_returns_the_image_as_float32():
    img = (torch.rand(1, 32, 48) * 255).to(torch.uint8)
    out = AntialiasResize((32, 48))(img)
    assert out.dtype == torch.float32 and torch.equal(out, img.float())
    assert AntialiasResize((-1, 24))(img).shape == (1, 32, 24)  # a non-positive size keeps that axis


def test_matrices_are_cached_and_interpolate_as_torch():
    """The interpolation part is exactly ``interpolate(mode="linear", align_corners=False)``."""
    interp = resize_matrix(224, 128, 0.0).to_dense()
    eye = torch.eye(224)[None]
    torch_interp = torch.nn.functional.interpolate(eye, size=128, mode="linear", align_corners=False)[0].T
    assert float((interp - torch_interp).abs().max()) < 1e-6
    before = resize_matrix.cache_info().hits
    assert resize_matrix(224, 128, 0.0) is resize_matrix(224, 128, 0.0)
    assert resize_matrix.cache_info().hits == before + 2


def test_metadata_follow_monai_resize_and_inverse_restores_the_size():
    img = MetaTensor(torch.rand(1, 120, 100) * 255, affine=torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0])))
    resize = AntialiasResize((64, 48))
    ours, theirs = resize(img), _monai(img, (64, 48))
    assert isinstance(ours, MetaTensor)
    assert torch.allclose(ours.affine, theirs.affine)
    op, their_op = ours.applied_operations[-1], theirs.applied_operations[-1]
    assert op["class"] == "AntialiasResize" and op["orig_size"] == their_op["orig_size"] == (120, 100)
    assert op["extra_info"] == their_op["extra_info"]
    back = resize.inverse(ours)
    assert back.shape == (1, 120, 100) and torch.allclose(back.affine, img.affine)
    assert not back.applied_operations


def test_dictionary_wrapper_names_the_key_of_a_wrong_shape():
    d = AntialiasResized(["image", "other"], (32, 32), allow_missing_keys=True)({"image": torch.rand(1, 64, 64)})
    assert d["image"].shape == (1, 32, 32)
    with pytest.raises(ValueError, match=r"C x H x W, got shape \(64, 64\) \(key 'image'\)"):
        AntialiasResized("image", (32, 32))({"image": torch.rand(64, 64)})


def _load(path):
    from scripts.loading import LoadChestXRayd

    return LoadChestXRayd("image")({"image": str(path)})["image"]


def _real_files(shared_data):
    return [
        sorted((shared_data / "nih_nofinding_normal" / "images").glob("*.png"))[0],
        sorted((shared_data / "covidquex_covid_infection" / "images").glob("*.png"))[0],
        sorted((shared_data / "zhanglab_test_dev" / "pneumonia").glob("*.jpeg"))[0],
    ]


@pytest.mark.parametrize("size", [(128, 128), (256, 256)])
def test_matches_monai_on_a_real_nih_radiograph(shared_data, size):
    """NIH ChestX-ray14, 1024 x 1024, loaded by the bundle's chain (a MetaTensor with the reader's affine)."""
    img = _load(sorted((shared_data / "nih_nofinding_normal" / "images").glob("*.png"))[0])
    assert tuple(img.shape) == (1, 1024, 1024)
    ours, theirs = AntialiasResize(size)(img), _monai(img, size)
    assert float((ours - theirs).abs().max()) <= TOLERANCE
    assert torch.allclose(ours.affine, theirs.affine)


def test_every_workflow_resizes_the_image_with_it_and_masks_by_nearest():
    """Training, validation (and so evaluation) and inference: one image resize; lesion masks stay nearest."""
    train, infer = ConfigParser(), ConfigParser()
    train.read_config(str(CONFIGS / "train.json"))
    infer.read_config(str(CONFIGS / "inference.json"))
    chains = {
        "train": train.get_parsed_content("train#preprocessing_lungs"),
        "validate": train.get_parsed_content("validate#preprocessing_tail"),
        "inference": infer.get_parsed_content("preprocessing_tail"),
    }
    for name, chain in chains.items():
        image_resizes = [t for t in chain if isinstance(t, AntialiasResized)]
        assert [list(t.keys) for t in image_resizes] == [["image"]], name
        monai = [t for t in chain if isinstance(t, Resized)]
        assert all("image" not in t.keys and t.mode == ("nearest",) for t in monai), name
    (mask_resize,) = [t for t in chains["validate"] if isinstance(t, Resized)]
    assert list(mask_resize.keys) == ["mask"]


def test_inference_scores_do_not_move_on_real_radiographs(shared_data):
    """NIH 1024, COVID-QU-Ex 256 and ZhangLab 224: the bundle's scores with MONAI's ``Resized`` and with ours.

    A seeded tiny network and the bundle's own preprocessing and scoring (``inference.json``),
    once as configured and once with MONAI's transform in place of the image resize.
    """
    from artasyn.scoring import AnomalyScored

    def parts(resize_override):
        p = inference_parser({**TINY_NET, "spatial_size": [128, 128], **resize_override})
        torch.manual_seed(0)
        return p.get_parsed_content("preprocessing"), p.get_parsed_content("network_def").eval()

    monai_resize = {
        "preprocessing_tail#2": {
            "_target_": "Resized",
            "keys": "image",
            "spatial_size": "@spatial_size",
            "mode": "bilinear",
            "anti_aliasing": True,
        }
    }
    scorer = AnomalyScored(image_key="image", pred_key="recon", gt_key=None, has_mask_key=None)
    scores = {}
    for name, override in (("ours", {}), ("monai", monai_resize)):
        pre, net = parts(override)
        assert isinstance(pre.transforms[3], AntialiasResized if name == "ours" else Resized)
        with torch.no_grad():
            items = [pre({"image": str(f)}) for f in _real_files(shared_data)]
            outs = [scorer({"image": d["image"], "recon": net(d["image"][None])[0]}) for d in items]
        scores[name] = torch.tensor([float(torch.as_tensor(o["score"]).reshape(-1)[0]) for o in outs])
        scores[name + "_lungs"] = torch.stack([torch.as_tensor(d["lung"]) for d in items])
    rel = ((scores["ours"] - scores["monai"]).abs() / scores["monai"].abs()).max()
    assert float(rel) <= 1e-5, (scores["ours"], scores["monai"])
    assert torch.equal(scores["ours_lungs"], scores["monai_lungs"])  # PBTSeg sees the same image
