"""The inference writer's fast paths give the files of the plain ones (``scripts.inference``).

The PNG encoder (filter "Up" + zlib) round-trips grey and RGB arrays through PIL, the overlay
is the documented blend, the heat map ``.nii.gz`` reads back the same at every gzip level,
background writing gives the same rows and files as writing in the engine's thread, and the
automatic torch thread count leaves a core to the DataLoader workers.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from bundle_presets import TINY_INFER, random_checkpoint, run_inference

from scripts import inference as inf


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Inference sets torch's thread count: give other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (300, 257), (2, 2, 3), (64, 33, 3)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_bytes_round_trip_through_pil(shape, level):
    from PIL import Image

    a = np.random.default_rng(sum(shape) + level).integers(0, 256, shape, dtype=np.uint8)
    data = inf._png_bytes(a, level)
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs
    im = Image.open(io.BytesIO(data))
    assert im.mode == ("RGB" if a.ndim == 3 else "L") and np.array_equal(np.asarray(im), a)


def test_png_bytes_refuses_what_it_cannot_store():
    with pytest.raises(ValueError, match=r"float32 \(4, 4\)"):
        inf._png_bytes(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 4, 2\)"):
        inf._png_bytes(np.zeros((4, 4, 2), np.uint8))


def _reference_overlay(gray, heat, max_alpha=0.7, scale=None):
    """The overlay as first written (all channels at once): the fast version must give these pixels."""
    anchors = inf._CMAP_ANCHORS
    gray = np.clip(np.asarray(gray, dtype=np.float32), 0, 255)
    heat = np.asarray(heat, dtype=np.float32)
    peak = float(scale) if scale else float(heat.max())
    norm = np.clip(heat / peak if peak > 0 else np.zeros_like(heat), 0.0, 1.0)
    v = np.clip(np.nan_to_num(norm), 0.0, 1.0) * (len(anchors) - 1)
    lo = np.minimum(v.astype(np.int64), len(anchors) - 2)
    frac = (v - lo)[..., None]
    colour = np.clip(np.rint(anchors[lo] * (1.0 - frac) + anchors[lo + 1] * frac), 0, 255).astype(np.uint8)
    alpha = (max_alpha * norm)[..., None]
    out = np.repeat(gray[..., None], 3, axis=-1) * (1.0 - alpha) + colour.astype(np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("case", ["smooth", "zeros", "nan", "flat", "scale"])
def test_overlay_is_the_documented_blend(case):
    rng = np.random.default_rng(3)
    small = torch.rand(1, 1, 24, 20, generator=torch.Generator().manual_seed(3)) ** 4 * 0.02
    heat = torch.nn.functional.interpolate(small, size=(97, 80), mode="bilinear")[0, 0].numpy()
    gray = rng.uniform(-5, 260, heat.shape).astype(np.float32)  # out-of-range grey is clipped
    scale = None
    if case == "zeros":
        heat = np.where(heat < np.median(heat), 0, heat).astype(np.float32)
    elif case == "nan":
        heat[:3, :4] = np.nan
    elif case == "flat":
        heat = np.zeros_like(heat)
    elif case == "scale":
        scale = float(heat.max()) / 2
    got = inf.overlay_heatmap(gray, heat, scale=scale)
    assert got.dtype == np.uint8 and got.shape == (*heat.shape, 3)
    assert np.array_equal(got, _reference_overlay(gray, heat, scale=scale))


@pytest.mark.parametrize("level", [0, 1, 6])
def test_heatmap_nifti_reads_back_at_every_gzip_level(level, tmp_path):
    import gzip

    import nibabel as nib

    heat = np.random.default_rng(1).random((33, 20)).astype(np.float32)
    affine = np.diag([0.5, 0.25, 1.0, 1.0])
    data = inf._nifti_gz_bytes(heat, affine, level)
    assert data[:2] == b"\x1f\x8b" and len(gzip.decompress(data)) == 352 + heat.nbytes
    path = tmp_path / "h.nii.gz"
    path.write_bytes(data)
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.float32 and np.allclose(img.affine, affine)
    assert np.array_equal(np.asarray(img.dataobj), heat)


@pytest.mark.parametrize(("key", "value"), [("png_compress_level", 10), ("heatmap_gzip_level", -1)])
def test_writer_refuses_levels_outside_0_to_9(key, value, tmp_path):
    with pytest.raises(ValueError, match=key):
        inf.AnomalyOutputWriter(tmp_path, **{key: value})


def test_writer_overlay_scale_is_twice_the_healthy_level_a_number_or_each_image(tmp_path, caplog):
    from types import SimpleNamespace

    level = SimpleNamespace(healthy_peak=0.01)
    assert inf.AnomalyOutputWriter(tmp_path, thresholds=level).overlay_peak == 0.02
    assert inf.AnomalyOutputWriter(tmp_path, thresholds=level, overlay_scale="image").overlay_peak is None
    assert inf.AnomalyOutputWriter(tmp_path, thresholds=level, overlay_scale=0.5).overlay_peak == 0.5
    with caplog.at_level(logging.WARNING):
        unknown = inf.AnomalyOutputWriter(tmp_path, thresholds=SimpleNamespace(healthy_peak=None))
    assert unknown.overlay_peak is None and "scaled to its own maximum" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        inf.AnomalyOutputWriter(tmp_path, thresholds=SimpleNamespace(healthy_peak=None), save_overlay=False)
    assert "scaled" not in caplog.text  # no overlay, nothing to say
    for bad in ("max", 0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="overlay_scale"):
            inf.AnomalyOutputWriter(tmp_path, overlay_scale=bad)
    # a map under the healthy level stays in the lower half of the colours; per image it fills them
    gray = np.full((8, 8), 100.0, np.float32)
    heat = np.linspace(0, 0.009, 64, dtype=np.float32).reshape(8, 8)
    quiet, loud = inf.overlay_heatmap(gray, heat, scale=0.02), inf.overlay_heatmap(gray, heat)
    assert np.abs(quiet.astype(int) - 100).max() < np.abs(loud.astype(int) - 100).max()
    assert np.array_equal(loud[-1, -1], inf.overlay_heatmap(gray, np.ones_like(heat))[0, 0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Five 64 x 64 phantoms (two with one stem in sub-folders) and a truncated PNG."""
    from PIL import Image

    from artasyn.phantom import make_phantom

    root = tmp_path_factory.mktemp("cxr")
    paths = []
    for i in range(5):
        sub = root / ("a" if i == 3 else "b" if i == 4 else "")
        sub.mkdir(exist_ok=True)
        path = sub / ("same.png" if i >= 3 else f"ph{i}.png")
        Image.fromarray(make_phantom(64, diseased=i % 2 == 1, seed=i)["image"]).save(path)
        paths.append(str(path))
    data = (root / "ph0.png").read_bytes()
    (root / "broken.png").write_bytes(data[: len(data) // 2])
    return paths[:2] + [str(root / "broken.png")] + paths[2:]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("models") / "model.pt", TINY_INFER)


def _run(ckpt, files, out, **override):
    over = {"ckpt_path": str(ckpt), "output_dir": str(out), "input_files": files, **TINY_INFER}
    rows = run_inference({**over, "inference_batch_size": 2, **override})
    return [{k: v for k, v in r.items() if k != "run_id"} for r in rows]


def test_background_writing_gives_the_rows_and_files_of_writing_in_line(ckpt, folder, tmp_path):
    """Same rows (input order: stems ``same``, ``same_1``; the file the pre-check refused last), same bytes."""
    inline = _run(ckpt, folder, tmp_path / "inline", writer_threads=0)
    threaded = _run(ckpt, folder, tmp_path / "threads", writer_threads=3)
    assert threaded == inline
    assert [r["file"] for r in inline] == folder[:2] + folder[3:] + folder[2:3]
    assert [r["mask"] for r in inline[3:5]] == ["same.artasyn-mask.png", "same_1.artasyn-mask.png"]
    assert inline[5]["status"].startswith("failed")
    for r in inline:
        for kind in ("heatmap", "overlay", "mask"):
            if r[kind]:
                a, b = (tmp_path / d / r[kind] for d in ("inline", "threads"))
                assert a.read_bytes() == b.read_bytes(), r[kind]


def test_set_torch_threads(monkeypatch):
    assert inf.set_torch_threads(3, num_workers=4) == 3 and torch.get_num_threads() == 3
    for cores, workers, expected in [(2, 4, 1), (2, 0, 1), (1, 4, 1), (4, 4, 2), (16, 4, 11), (16, 0, 15)]:
        monkeypatch.setattr(inf.os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert inf.set_torch_threads(0, num_workers=workers) == expected, (cores, workers)
        assert torch.get_num_threads() == expected
