"""The bundle inside MONAI Label's bundle app (``monailabel.tasks.infer.bundle.BundleInferTask``).

Needs the optional ``label`` extra (``pip install -e .[label]``, in an environment of its own:
``monailabel`` pins numpy < 2); skipped otherwise. What can be tested without a server: the
bundle (``inference.json`` as it is, packaged with its weights by
``bundle/scripts/monailabel_bundle.py``) is accepted as a segmentation task with the label
``opacity``, and its pre-transforms, network and post-transforms turn a radiograph (a 96 x 80
phantom PNG) into a binary mask of the same size. Always tested: ``inference.json`` alone has
every id ``BundleInferTask`` reads, and its post-processing gives ``pred`` in the layout MONAI
Label's writer expects.

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
from bundle_presets import TINY_INFER

from scripts.monailabel_bundle import inference_config, make_monailabel_bundle

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
    from monai.bundle import ConfigParser
    from PIL import Image

    from artasyn.phantom import make_phantom

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "inference.json"))
    for k, v in TINY.items():
        parser[k] = v
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
    from monai.bundle import ConfigParser
    from PIL import Image

    from artasyn.phantom import make_phantom

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "inference.json"))
    for k, v in TINY.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def")
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict()}, ckpt)
    bundle = make_monailabel_bundle(tmp_path / "artasyn_cxr_anomaly_segmentation", ckpt, overrides=TINY)

    task = BundleInferTask(str(bundle), {})
    assert task.is_valid()
    assert str(task.type).lower().endswith("segmentation") and task.labels == {"opacity": 1}

    image = make_phantom(96, diseased=True, seed=3)["image"][:, 8:88]  # 96 rows x 80 columns
    png = tmp_path / "cxr.png"
    Image.fromarray(image).save(png)
    # the call MONAI Label's server makes for /infer: pre-transforms, inferer, post-transforms, writer
    label_file, result = task({"image": str(png), "device": "cpu"})
    assert label_file and Path(label_file).is_file(), result
    pred = np.asarray(Image.open(label_file)) if str(label_file).endswith(".png") else None
    if pred is None:
        import nibabel as nib

        pred = np.squeeze(np.asarray(nib.load(label_file).dataobj))
    assert pred.shape == (96, 80), (label_file, pred.shape)  # rows stay rows
    assert set(np.unique(pred)) <= {0, 1}
    assert result["label_names"] == {"opacity": 1}
    Path(label_file).unlink()  # MONAI Label writes it to the system's temporary folder
    sys.modules.pop("scripts", None)  # MONAI Label imported the copy's scripts: let the tests see ours again


@pytest.mark.integration
def test_live_server_round_trip(tmp_path):
    """``monailabel_demo.py``: a real server, an HTTP client, PNG labels of each radiograph's size in {0, 1}.

    The demo packages a freshly initialised small network (the round trip is checked, not the
    detector), serves two phantoms written here plus its own 200 x 160 one, and exits 0 only when
    every check passed; the server is stopped in any case.
    """
    pytest.importorskip("monailabel", reason="MONAI Label is the optional 'label' extra (its own environment)")
    from PIL import Image

    from artasyn.phantom import make_phantom

    studies = tmp_path / "studies"
    studies.mkdir()
    Image.fromarray(make_phantom(128, diseased=True, seed=1)["image"]).save(studies / "phantom_a.png")
    Image.fromarray(make_phantom(160, seed=2)["image"][16:144, :]).save(studies / "phantom_b.png")  # 128 x 160
    cmd = [sys.executable, str(REPO / "bundle" / "scripts" / "monailabel_demo.py")]
    cmd += ["--studies", str(studies), "--work", str(tmp_path / "work")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "[demo] PASS" in out and "server stopped" in out, out[-6000:]
    assert out.count("-> ok") == 5, out[-6000:]  # /info/, 3 studies by id, 1 upload
