"""The bundle inside MONAI Label's bundle app (``monailabel.tasks.infer.bundle.BundleInferTask``).

Needs the optional ``label`` extra (``pip install -e .[label]``, in an environment of its own:
``monailabel`` pins numpy < 2); skipped otherwise. What can be tested without a server: the
self-contained bundle written by ``bundle/scripts/monailabel_bundle.py`` is accepted as a
segmentation task with the label ``opacity``, and its pre-transforms, network and
post-transforms turn a radiograph (a 96 x 80 phantom PNG) into a binary mask of the same size.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_presets import TINY_INFER

REPO = Path(__file__).resolve().parents[1]
TINY = {**TINY_INFER, "device": "$torch.device('cpu')"}


def _helper():
    spec = importlib.util.spec_from_file_location(
        "monailabel_bundle", REPO / "bundle" / "scripts" / "monailabel_bundle.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_merged_config_is_self_contained():
    """No MONAI Label needed: the merged config has every id BundleInferTask reads."""
    config = _helper().merged_inference_config(overrides=TINY)
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "bundle_root", "device"):
        assert key in config, key


def test_bundle_infer_task_runs_the_inference_config(tmp_path):
    pytest.importorskip("monailabel", reason="MONAI Label is the optional 'label' extra (its own environment)")
    try:
        from monailabel.tasks.infer.bundle import BundleInferTask
    except Exception as e:  # e.g. a torchvision build that does not match torch
        pytest.skip(f"monailabel is installed but its bundle task cannot be imported: {type(e).__name__}: {e}")
    from PIL import Image

    from artasyn.phantom import make_phantom

    helper = _helper()
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "train.json"))
    for k, v in TINY.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def")
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict()}, ckpt)
    bundle = helper.make_monailabel_bundle(tmp_path / "artasyn_cxr_anomaly_segmentation", ckpt, overrides=TINY)

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
    sys.modules.pop("monailabel_bundle", None)
