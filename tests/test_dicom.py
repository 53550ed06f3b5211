"""DICOM radiographs in every workflow (``scripts.dicom``, ``scripts.loading``), and files that are not images.

The DICOMs are written here (``scripts.dicom.write_dicom``, checked against plain pydicom): a
96 x 80 phantom as 12-bit values, stored as MONOCHROME2, as MONOCHROME1 (``4095 - x``), with a
rescale intercept, with a window and with a VOI LUT, beside the same values in a 16-bit PNG.
A viewer shows all of them alike; so must the loading chain, and so the scores of inference
and evaluation (a tiny random network, as in ``test_inference.py``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from bundle_presets import TINY_INFER, outputs, random_checkpoint, run_inference

from scripts.datalist import DataReport, build_datalist, find_images
from scripts.dicom import read_dicom, write_dicom
from scripts.loading import LoadChestXRay, check_radiograph

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
TINY = {**TINY_INFER, "inference_batch_size": 2}


def _twelve_bit() -> np.ndarray:
    """A 96 x 80 diseased phantom as 12-bit values (0..4095) in uint16."""
    from artasyn.phantom import make_phantom

    gray = make_phantom(96, diseased=True, seed=5)["image"][:, 8:88]
    return (gray.astype(np.uint32) * 4095 // 255).astype(np.uint16)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The 12-bit phantom as a 16-bit PNG, as MONOCHROME2 and MONOCHROME1 DICOM, and a text file."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("cxr_dicom")
    x = _twelve_bit()
    Image.fromarray(x).save(folder / "cxr12.png")
    write_dicom(folder / "cxr_mono2.dcm", x, "MONOCHROME2", bits_stored=12)
    write_dicom(folder / "cxr_mono1.dcm", 4095 - x, "MONOCHROME1", bits_stored=12)
    (folder / "notes.txt").write_text("radiographs of 2026-12-01\n")
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("models") / "model.pt", TINY)


def _infer(ckpt, out, **override) -> list[dict]:
    return run_inference({"ckpt_path": str(ckpt), "output_dir": str(out), **TINY, **override})


def _windowed(x: np.ndarray, center: float, width: float, top: float = 4095.0) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR) to ``0..top``, then to 0..255."""
    c, w = center - 0.5, width - 1.0
    y = ((x.astype(np.float64) - c) / w + 0.5) * top
    y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, top, y))
    return y * 255.0 / top


def test_written_dicom_holds_the_stored_values_and_tags(images):
    """The writer, read back by pydicom alone: MONOCHROME1 stores ``4095 - x`` in 12 of 16 bits."""
    ds = pydicom.dcmread(str(images / "cxr_mono1.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1" and (ds.BitsAllocated, ds.BitsStored) == (16, 12)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, 4095 - _twelve_bit())


def test_12bit_png_and_its_dicoms_give_the_same_pixels(images, tmp_path):
    """A viewer's reading: MONOCHROME1 inverted, the rescale applied, the 16-bit PNG's bit-depth rule."""
    x = _twelve_bit()
    write_dicom(tmp_path / "rescaled.dcm", x + 1000, bits_stored=13, rescale=(1, -1000))
    load = LoadChestXRay()
    png = load(images / "cxr12.png")
    assert float(png.max()) > 200  # 12 bits at full contrast (divided by 257 it would stay under 16)
    for name in ("cxr_mono2.dcm", "cxr_mono1.dcm"):
        assert torch.equal(load(images / name).as_tensor(), png.as_tensor()), name
    assert torch.equal(load(tmp_path / "rescaled.dcm").as_tensor(), png.as_tensor())
    assert check_radiograph(tmp_path / "rescaled.dcm") == (None, ["DICOM rescale: x * 1 - 1000"])
    assert check_radiograph(images / "cxr_mono1.dcm") == (None, ["DICOM MONOCHROME1: inverted"])


def test_window_maps_its_range_to_black_and_white(tmp_path):
    """WindowCenter / WindowWidth: below the window black, above white, linear between (MONOCHROME1: inverted)."""
    x = _twelve_bit()
    write_dicom(tmp_path / "w2.dcm", x, bits_stored=12, window=(1500, 1000))
    write_dicom(tmp_path / "w1.dcm", 4095 - x, "MONOCHROME1", bits_stored=12, window=(4095 - 1500, 1000))
    expected = _windowed(x, 1500, 1000)
    got2 = LoadChestXRay()(tmp_path / "w2.dcm").numpy()[0]
    assert np.abs(got2 - expected).max() < 1e-3
    assert (got2 == 0).any() and (got2 == 255).any()  # the window clips both ends of this phantom
    got1 = LoadChestXRay()(tmp_path / "w1.dcm").numpy()[0]
    assert np.abs(got1 - (255.0 - _windowed(4095 - x, 4095 - 1500, 1000))).max() < 1e-3  # windowed, then inverted
    assert np.abs(got1 - got2).max() <= 255.0 / 999 + 1e-3  # the same view within one step of the window
    reason, notes = check_radiograph(tmp_path / "w2.dcm")
    assert reason is None and notes == ["DICOM window: center 1500, width 1000 (LINEAR)"]


def test_voi_lut_sequence_is_applied_before_the_window(tmp_path):
    """A VOI LUT Sequence wins over a window (pydicom's and the standard's preference); 8-bit LUT -> 0..255."""
    x = _twelve_bit()
    path = tmp_path / "lut.dcm"
    write_dicom(path, x, bits_stored=12, window=(100, 10))
    ds = pydicom.dcmread(str(path))
    lut = (np.sqrt(np.arange(4096) / 4095.0) * 255).astype(np.uint16)  # a gamma-like 8-bit table
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])  # LUT Descriptor: entries, first value mapped, bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    ds.VOILUTSequence = pydicom.Sequence([item])
    ds.save_as(str(path))
    got = LoadChestXRay()(path).numpy()[0]
    assert np.array_equal(got, lut[x].astype(np.float32))
    assert "DICOM VOI LUT applied" in check_radiograph(path)[1]


def test_compressed_dicom_without_decoder_names_the_file_and_transfer_syntax(tmp_path):
    """JPEG-LS pixel data (no decoder installed here, or data no decoder reads): a clear reason."""
    from pydicom.encaps import encapsulate

    path = tmp_path / "jpegls.dcm"
    write_dicom(path, _twelve_bit(), bits_stored=12)
    ds = pydicom.dcmread(str(path))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not a JPEG-LS stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(str(path))
    reason, _ = check_radiograph(path)
    assert reason is not None and "jpegls.dcm" in reason and "JPEG-LS Lossless" in reason, reason
    assert "decoder" in reason
    with pytest.raises(ValueError, match="transfer syntax JPEG-LS Lossless"):
        read_dicom(path)


def test_dicom_without_suffix_is_found_and_other_files_are_named_as_skipped(images, tmp_path):
    """Folders: DICOM by suffix or by its preamble (``IM0001``); a text file is skipped, by name, once."""
    folder = tmp_path / "train" / "healthy"
    folder.mkdir(parents=True)
    for name in ("cxr12.png", "cxr_mono2.dcm", "notes.txt"):
        (folder / name).write_bytes((images / name).read_bytes())
    (folder / "IM0001").write_bytes((images / "cxr_mono1.dcm").read_bytes())
    (folder / ".DS_Store").write_bytes(b"\0\1")
    report = DataReport()
    found = [Path(p).name for p in find_images(folder, report)]
    assert found == ["IM0001", "cxr12.png", "cxr_mono2.dcm"]
    assert [Path(s["path"]).name for s in report.skipped] == ["notes.txt"]
    assert "'.txt' file" in report.skipped[0]["reason"] and "DICOM" in report.skipped[0]["reason"]
    find_images(folder, report)  # listed again (validation and test share folders): still named once
    assert len(report.skipped) == 1 and report.to_dict()["n_skipped"] == 1
    items = build_datalist(tmp_path, "training", report=report)
    assert sorted(Path(it["image"]).name for it in items) == ["IM0001", "cxr12.png", "cxr_mono2.dcm"]


def test_png_and_dicoms_score_alike_and_the_text_file_is_named(ckpt, images, tmp_path, caplog):
    """A mixed folder: 12-bit PNG, MONOCHROME2 and MONOCHROME1 DICOM, a text file; ``run inference``."""
    import logging

    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        rows = _infer(ckpt, tmp_path / "out", input_dir=str(images))
    by_name = {Path(r["file"]).name: r for r in rows}
    assert set(by_name) == {"cxr12.png", "cxr_mono2.dcm", "cxr_mono1.dcm", "notes.txt"}
    scores = {n: float(by_name[n]["score"]) for n in ("cxr12.png", "cxr_mono2.dcm", "cxr_mono1.dcm")}
    assert all(by_name[n]["status"] == "ok" for n in scores)
    ref = scores["cxr12.png"]
    for name, score in scores.items():
        assert abs(score - ref) <= 1e-3 * ref, (name, scores)
    skipped = by_name["notes.txt"]["status"]
    assert skipped.startswith("skipped: not an image type the bundle reads ('.txt' file)"), skipped
    assert "DICOM" in skipped
    assert by_name["cxr_mono1.dcm"]["notes"] == "DICOM MONOCHROME1: inverted"
    assert (tmp_path / "out" / "cxr_mono1.artasyn-mask.png").is_file()
    assert sum("notes.txt" in r.getMessage() for r in caplog.records) == 1  # named once in the log


def test_explicit_dicom_in_input_files_is_read(ckpt, images, tmp_path):
    """``--input_files x.dcm`` (once read as a text list of paths, a UnicodeDecodeError) is an image."""
    folder_run = _infer(ckpt, tmp_path / "a", input_files=str(images / "cxr12.png"))
    rows = _infer(ckpt, tmp_path / "b", input_files=str(images / "cxr_mono1.dcm"))
    assert [r["status"] for r in rows] == ["ok"]
    assert abs(float(rows[0]["score"]) - float(folder_run[0]["score"])) <= 1e-3 * float(folder_run[0]["score"])


def test_explicit_input_of_unsupported_type_is_an_error_naming_it(ckpt, images, tmp_path):
    """A binary file that is neither an image nor a list stops the run; in a list it is a failed row."""
    from scripts.inference import inference_datalist

    blob = tmp_path / "scan.xyz"
    blob.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"scan\.xyz.*supported images: PNG / JPEG .*DICOM"):
        inference_datalist(input_files=str(blob))
    (tmp_path / "datalist.json").write_text("{}")
    with pytest.raises(ValueError, match="--input_datalist"):
        inference_datalist(input_files=str(tmp_path / "datalist.json"))
    rows = _infer(ckpt, tmp_path / "out", input_files=[str(images / "cxr_mono2.dcm"), str(images / "notes.txt")])
    status = {Path(r["file"]).name: r["status"] for r in rows}
    assert status["cxr_mono2.dcm"] == "ok"
    assert status["notes.txt"].startswith("failed: not an image type the bundle reads ('.txt' file: notes.txt)")
    assert "DICOM (.dcm" in status["notes.txt"]


def test_list_file_of_paths_still_works_with_dicom_in_it(ckpt, images, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"# today's images\n{images / 'cxr_mono1.dcm'}\n{images / 'cxr12.png'}\n")
    rows = _infer(ckpt, tmp_path / "out", input_files=str(lst))
    assert sorted((Path(r["file"]).name, r["status"]) for r in rows) == [("cxr12.png", "ok"), ("cxr_mono1.dcm", "ok")]


def test_dicom_scores_the_same_in_evaluation_and_inference(ckpt, images, tmp_path):
    """``run evaluating`` on a datalist with the MONOCHROME1 DICOM gives the PNG's inference score."""
    from monai.bundle import ConfigWorkflow

    items = [{"image": str(images / "cxr_mono1.dcm"), "label": 1}, {"image": str(images / "cxr12.png"), "label": 0}]
    datalist = tmp_path / "datalist.json"
    train = [{"image": str(images / "cxr12.png")}]
    datalist.write_text(json.dumps({"training": train, "validation": items, "test": items}))
    evaluate = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        workflow_type="infer",
        logging_file=False,
        datalist_file=str(datalist),
        ckpt_path=str(ckpt),
        **outputs(tmp_path / "eval_run"),
        **TINY,
    )
    evaluate.initialize()
    evaluate.run()
    evaluate.finalize()
    with open(tmp_path / "eval_run" / "eval" / "scores.csv") as f:
        scores = {Path(r["filename"]).name: float(r["score"]) for r in csv.DictReader(f)}
    infer = float(_infer(ckpt, tmp_path / "infer", input_files=[str(images / "cxr12.png")])[0]["score"])
    assert abs(scores["cxr_mono1.dcm"] - infer) <= 1e-6 * infer and abs(scores["cxr12.png"] - infer) <= 1e-6 * infer
