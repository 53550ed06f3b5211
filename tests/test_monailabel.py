"""The bundle inside MONAI Label's bundle app (``monailabel.tasks.infer.bundle.BundleInferTask``).

Needs the optional ``label`` extra (``pip install -e .[label]``, in an environment of its own:
``monailabel`` pins numpy < 2); skipped otherwise. What can be tested without a server: the
bundle (``inference.json`` as it is, packaged with its weights by
``bundle/scripts/monailabel_bundle.py``) is accepted as a segmentation task with the label
``opacity``, and its pre-transforms, network and post-transforms turn a radiograph (a 96 x 80
phantom PNG) into a binary mask of the same size. Always tested: ``inference.json`` alone has
every id ``BundleInferTask`` reads, and its post-processing gives ``pred`` in the layout MONAI
Label's writer expects; DICOM studies: the datastore setting that lists ``*.dcm``, the studies
folder the demo fills (DICOM under ``.dcm`` names, other files named as skipped) and the mask
of a DICOM study, equal to that of the same image as a PNG.

With a server (``integration`` marker, also needs ``monailabel``):
``bundle/scripts/monailabel_demo.py`` starts a real ``monailabel start_server`` with the
packaged bundle and a client sends radiographs to ``/infer`` over HTTP.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_presets import TINY_INFER, inference_parser

from scripts.monailabel_bundle import (
    DATASTORE_FILE_EXT,
    MONAI_LABEL_DEFAULT_FILE_EXT,
    datastore_env,
    inference_config,
    make_monailabel_bundle,
)

REPO = Path(__file__).resolve().parents[1]
TINY = {**TINY_INFER, "device": "$torch.device('cpu')"}


def test_inference_config_alone_has_what_bundle_infer_task_reads():
    """No MONAI Label needed: inference.json itself (no merge) has every id BundleInferTask reads."""
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_file(str(REPO / "bundle" / "configs" / "inference.json"))
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "bundle_root", "device"):
        assert key in config, key
    assert inference_config() == config  # the packaged copy is the file itself when no preset is given


def test_pred_is_the_mask_in_the_layout_of_monai_writers(tmp_path):
    """Pre-processing, a network, post-processing: ``pred`` is a uint8 {0, 1} W x H array of the input's size."""
    from PIL import Image

    from artasyn.phantom import make_phantom

    parser = inference_parser(TINY)
    png = tmp_path / "cxr.png"
    Image.fromarray(make_phantom(96, diseased=True, seed=3)["image"][:, 8:88]).save(png)  # 96 rows x 80 columns
    item = parser.get_parsed_content("preprocessing")({"image": str(png)})
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        item["pred"] = net(torch.as_tensor(item["image"])[None])[0]
    out = parser.get_parsed_content("postprocessing")(item)
    pred = np.asarray(out["pred"])
    assert pred.dtype == np.uint8 and pred.shape == (80, 96) and set(np.unique(pred)) <= {0, 1}
    assert np.array_equal(pred.T, np.asarray(out["anomaly_mask"])[0] > 0.5)


def test_packaged_copy_carries_scripts_weights_and_preset(tmp_path):
    from monai.bundle import ConfigParser

    ckpt = tmp_path / "model.pt"
    torch.save({"model": {}}, ckpt)
    out = make_monailabel_bundle(
        tmp_path / "app" / "artasyn_cxr_anomaly_segmentation",
        ckpt,
        presets=[str(REPO / "bundle" / "configs" / "small.json")],
    )
    assert (out / "scripts" / "loading.py").is_file() and (out / "models" / "model.pt").is_file()
    config = ConfigParser.load_config_file(str(out / "configs" / "inference.json"))
    assert config["network_def"]["channels"] == 8 and config["spatial_size"] == [128, 128]
    assert "max_iterations" not in config  # training-only ids of the preset are not copied
    with pytest.raises(ValueError, match="task type"):
        make_monailabel_bundle(tmp_path / "cxr_classification", ckpt)


def test_bundle_infer_task_runs_the_inference_config(tmp_path):
    pytest.importorskip("monailabel", reason="MONAI Label is the optional 'label' extra (its own environment)")
    try:
        from monailabel.tasks.infer.bundle import BundleInferTask
    except Exception as e:  # e.g. a torchvision build that does not match torch
        pytest.skip(f"monailabel is installed but its bundle task cannot be imported: {type(e).__name__}: {e}")
    from PIL import Image

    from artasyn.phantom import make_phantom

    parser = inference_parser(TINY)
    net = parser.get_parsed_content("network_def")
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict()}, ckpt)
    bundle = make_monailabel_bundle(tmp_path / "artasyn_cxr_anomaly_segmentation", ckpt, overrides=TINY)

    task = BundleInferTask(str(bundle), {})
    assert task.is_valid()
    assert str(task.type).lower().endswith("segmentation") and task.labels == {"opacity": 1}

    from scripts.dicom import write_dicom

    image = make_phantom(96, diseased=True, seed=3)["image"][:, 8:88]  # 96 rows x 80 columns
    png = tmp_path / "cxr.png"
    Image.fromarray(image).save(png)
    # the same image in 12 bits, as a 16-bit PNG and as a MONOCHROME1 DICOM study
    Image.fromarray(_twelve_bit()).save(tmp_path / "cxr12.png")
    write_dicom(tmp_path / "cxr12.dcm", 4095 - _twelve_bit(), "MONOCHROME1", bits_stored=12)
    preds = {}
    for study in (png, tmp_path / "cxr12.png", tmp_path / "cxr12.dcm"):
        # the call MONAI Label's server makes for /infer: pre-transforms, inferer, post-transforms, writer
        # (a DICOM study's label is asked for as PNG, as the demo's client does)
        label_file, result = task({"image": str(study), "device": "cpu", "result_extension": ".png"})
        assert label_file and Path(label_file).is_file(), result
        pred = np.asarray(Image.open(label_file))
        assert pred.shape == (96, 80), (label_file, pred.shape)  # rows stay rows
        assert set(np.unique(pred)) <= {0, 1}
        assert result["label_names"] == {"opacity": 1}
        Path(label_file).unlink()  # MONAI Label writes it to the system's temporary folder
        preds[study.name] = pred
    assert np.array_equal(preds["cxr12.dcm"], preds["cxr12.png"])
    sys.modules.pop("scripts", None)  # MONAI Label imported the copy's scripts: let the tests see ours again


def _twelve_bit(seed: int = 3) -> np.ndarray:
    from artasyn.phantom import make_phantom

    gray = make_phantom(96, diseased=True, seed=seed)["image"][:, 8:88]  # 96 rows x 80 columns
    return (gray.astype(np.uint32) * 4095 // 255).astype(np.uint16)


def test_datastore_setting_lists_dicom_studies(tmp_path):
    """MONAI Label's default extensions have no ``*.dcm``; the server's environment adds it (a JSON list).

    The file matching is MONAI Label's own (``LocalDatastore._list_files``: ``fnmatch`` of each
    pattern over the folder's names), checked against the real class where MONAI Label is installed.
    """
    import fnmatch
    import json

    assert "*.dcm" not in MONAI_LABEL_DEFAULT_FILE_EXT
    assert set(DATASTORE_FILE_EXT) == {*MONAI_LABEL_DEFAULT_FILE_EXT, "*.dcm"}
    assert json.loads(datastore_env()["MONAI_LABEL_DATASTORE_FILE_EXT"]) == list(DATASTORE_FILE_EXT)
    names = ["a.png", "b.dcm", "c.jpg", "notes.txt"]
    listed = {n for pattern in DATASTORE_FILE_EXT for n in fnmatch.filter(names, pattern)}
    assert listed == {"a.png", "b.dcm", "c.jpg"}
    assert "b.dcm" not in {n for pattern in MONAI_LABEL_DEFAULT_FILE_EXT for n in fnmatch.filter(names, pattern)}


def test_monai_label_reads_the_datastore_setting(tmp_path, monkeypatch):
    """With MONAI Label installed: its default list is the one named here, and the environment extends it."""
    pytest.importorskip("monailabel", reason="MONAI Label is the optional 'label' extra (its own environment)")
    from monailabel.config import Settings
    from monailabel.datastore.local import LocalDatastore

    monkeypatch.delenv("MONAI_LABEL_DATASTORE_FILE_EXT", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file of the working folder
    assert Settings().MONAI_LABEL_DATASTORE_FILE_EXT == list(MONAI_LABEL_DEFAULT_FILE_EXT)
    for key, value in datastore_env().items():
        monkeypatch.setenv(key, value)
    extensions = Settings().MONAI_LABEL_DATASTORE_FILE_EXT
    assert extensions == list(DATASTORE_FILE_EXT)
    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("a.png", "b.dcm", "notes.txt"):
        (studies / name).write_bytes(b"0")
    store = LocalDatastore(str(studies), extensions=extensions, auto_reload=False)
    assert sorted(store.list_images()) == ["a", "b"]


def test_demo_studies_keep_dicom_under_names_the_datastore_lists(tmp_path, capsys):
    """``--studies``: DICOM (``.DCM``, no suffix) copied as ``.dcm``, ``.jpeg`` as ``.jpg``; a text file named."""
    from PIL import Image

    from scripts.dicom import write_dicom
    from scripts.loading import LoadChestXRay
    from scripts.monailabel_demo import make_studies, study_id

    src = tmp_path / "src"
    src.mkdir()
    x = _twelve_bit()
    Image.fromarray(x).save(src / "a.png")
    write_dicom(src / "b.DCM", x, bits_stored=12)
    write_dicom(src / "IM0001", 4095 - x, "MONOCHROME1", bits_stored=12)
    Image.fromarray((x // 16).astype(np.uint8)).save(src / "c.jpeg")
    (src / "notes.txt").write_text("not a radiograph")
    written = make_studies(tmp_path / "studies", str(src))
    names = sorted(p.name for p in written)
    assert names == ["IM0001.dcm", "a.png", "b.dcm", "c.jpg", "phantom_200x160.png", "phantom_200x160_mono1.dcm"]
    said = [line for line in capsys.readouterr().out.splitlines() if "notes.txt" in line]
    assert len(said) == 1 and "skipped" in said[0] and "DICOM" in said[0], said
    assert sorted(study_id(n) for n in names) == ["IM0001", "a", "b", "c", "phantom_200x160", "phantom_200x160_mono1"]
    load = LoadChestXRay()
    studies = tmp_path / "studies"
    assert torch.equal(load(studies / "IM0001.dcm").as_tensor(), load(studies / "a.png").as_tensor())
    png, dcm = load(studies / "phantom_200x160.png"), load(studies / "phantom_200x160_mono1.dcm")
    assert dcm.shape == png.shape == (1, 200, 160) and float((dcm - png).abs().max()) <= 1.0  # 8 -> 12 bits


def test_dicom_study_gives_the_mask_of_the_same_png(tmp_path):
    """What MONAI Label runs on a study (pre, network, post): a MONOCHROME1 DICOM gives its PNG's ``pred``."""
    from PIL import Image

    from scripts.dicom import write_dicom
    from scripts.monailabel_demo import check_label

    parser = inference_parser(TINY)
    x = _twelve_bit()
    Image.fromarray(x).save(tmp_path / "cxr.png")
    write_dicom(tmp_path / "cxr.dcm", 4095 - x, "MONOCHROME1", bits_stored=12)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
    preds = {}
    for name in ("cxr.png", "cxr.dcm"):
        item = pre({"image": str(tmp_path / name)})
        with torch.no_grad():
            item["pred"] = net(torch.as_tensor(item["image"])[None])[0]
        preds[name] = np.asarray(post(item)["pred"])
    assert preds["cxr.dcm"].shape == (80, 96) and np.array_equal(preds["cxr.dcm"], preds["cxr.png"])
    # the demo's client check of a returned label, for a DICOM study (rows x columns from the DICOM)
    import io

    label = io.BytesIO()
    Image.fromarray(preds["cxr.dcm"].T).save(label, format="PNG")
    ok, info = check_label("cxr.png", label.getvalue(), tmp_path / "cxr.dcm", preds["cxr.dcm"].T)
    assert ok and info["image_rows_cols"] == [96, 80], info


@pytest.mark.integration
def test_live_server_round_trip(tmp_path):
    """``monailabel_demo.py``: a real server, an HTTP client, PNG labels of each radiograph's size in {0, 1}.

    The demo packages a freshly initialised small network (the round trip is checked, not the
    detector), serves two phantom PNGs and a windowed MONOCHROME2 DICOM written here plus its
    own 200 x 160 phantom as PNG and as MONOCHROME1 DICOM (the datastore must list the DICOMs),
    and exits 0 only when every check passed; the server is stopped in any case.
    """
    pytest.importorskip("monailabel", reason="MONAI Label is the optional 'label' extra (its own environment)")
    from PIL import Image

    from artasyn.phantom import make_phantom

    studies = tmp_path / "studies"
    studies.mkdir()
    Image.fromarray(make_phantom(128, diseased=True, seed=1)["image"]).save(studies / "phantom_a.png")
    Image.fromarray(make_phantom(160, seed=2)["image"][16:144, :]).save(studies / "phantom_b.png")  # 128 x 160
    from scripts.dicom import write_dicom

    write_dicom(studies / "phantom_c.dcm", _twelve_bit(4), bits_stored=12, window=(2048, 3000))
    cmd = [sys.executable, str(REPO / "bundle" / "scripts" / "monailabel_demo.py")]
    cmd += ["--studies", str(studies), "--work", str(tmp_path / "work")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "[demo] PASS" in out and "server stopped" in out, out[-6000:]
    assert out.count("-> ok") == 8, out[-6000:]  # /info/, 5 studies by id (2 DICOM), 2 uploads (PNG, DICOM)
