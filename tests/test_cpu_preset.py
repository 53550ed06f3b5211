"""``bundle/configs/cpu.json``: overrides only, and its learning-rate schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"


def _parser(*presets):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), *(str(CONFIGS / p) for p in presets)])
    return parser


def test_cpu_preset_only_overrides():
    cpu = json.loads((CONFIGS / "cpu.json").read_text())
    train = json.loads((CONFIGS / "train.json").read_text())
    for key in cpu:
        assert key.split("#")[0] in train, f"cpu.json adds {key!r}, which train.json does not have"


def test_cpu_json_weighs_down_only_the_dice_term():
    """Measured on zhanglab_test_dev over seeds 0-2 (docs/experiments.md 2.49): the Dice term at 0.01
    rather than 1 (or 0); the other weights of eq. 1 stay the paper's, and train.json keeps all four."""
    paper = _parser().get_parsed_content("loss")
    cpu = _parser("cpu.json").get_parsed_content("loss")
    assert (paper.w_global, paper.w_local, paper.w_feat, paper.w_dice) == (1.0, 2.0, 1.0, 1.0)
    assert (cpu.w_global, cpu.w_local, cpu.w_feat, cpu.w_dice) == (1.0, 2.0, 1.0, 0.01)


def _lrs(parser, n):
    sched = parser.get_parsed_content("lr_scheduler")
    opt = parser.get_parsed_content("optimizer")
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_train_json_learning_rate_constant():
    parser = _parser()
    parser["network_def"]["channels"] = 8  # the schedule does not depend on the network
    lrs = _lrs(parser, 5)
    assert lrs == [pytest.approx(parser.get_parsed_content("learning_rate"))] * 5


def test_cpu_json_warmup_then_cosine_to_near_zero():
    """Every iteration of the run has a step of the schedule; it rises, peaks at learning_rate, ends ~0."""
    parser = _parser("cpu.json")
    total = parser.get_parsed_content("total_iterations")
    assert total == parser.get_parsed_content("max_epochs") * parser.get_parsed_content("epoch_length") == 1600
    lr = parser.get_parsed_content("learning_rate")
    lrs = _lrs(parser, total)  # OneCycleLR raises if stepped past its total
    assert lrs[0] < 0.2 * lr
    assert max(lrs) == pytest.approx(lr, rel=1e-3)
    assert lrs[-1] < 0.01 * lr
    peak = lrs.index(max(lrs))
    assert all(b <= a + 1e-12 for a, b in zip(lrs[peak:], lrs[peak + 1 :]))


def _train_item(parser, tmp_path, seed: int = 0):
    """The training chain's output for one phantom image (lungs computed, twins synthesised)."""
    import numpy as np
    from monai.utils import set_determinism
    from PIL import Image

    from artasyn.phantom import make_phantom

    path = tmp_path / "healthy.png"
    if not path.exists():
        Image.fromarray(np.asarray(make_phantom(size=128, seed=5)["image"], np.uint8)).save(path)
    chain = parser.get_parsed_content("train#preprocessing", instantiate=True)
    set_determinism(seed)
    chain.set_random_state(seed)
    return chain, chain({"image": str(path), "label": 0})


def test_train_augment_is_empty_by_default_and_runs_before_the_synthesis(tmp_path):
    """``train_augment``: transforms of the healthy image after its lungs and before the synthesis
    (so the twins and the target inherit them); train.json and cpu.json add none."""
    from monai.transforms import RandGaussianSmoothd

    for presets in ((), ("cpu.json",)):
        assert _parser(*presets).get_parsed_content("train_augment") == []
    parser = _parser("cpu.json")
    parser["cache_dir"] = str(tmp_path / "cache")
    plain_chain, plain = _train_item(parser, tmp_path)
    parser = _parser("cpu.json")
    parser["cache_dir"] = str(tmp_path / "cache")
    parser["train_augment"] = [
        {"_target_": "RandGaussianSmoothd", "keys": "image", "sigma_x": [3, 3], "sigma_y": [3, 3], "prob": 1.0}
    ]
    chain, item = _train_item(parser, tmp_path)
    names = [type(t).__name__ for t in chain.transforms]
    assert names.index("RandGaussianSmoothd") == names.index("EnsureTyped") + 1  # after the lungs (and their stretch)
    assert names.index("PBTSegd") < names.index("PercentileStretchd") < names.index("EnsureTyped")
    assert names.index("RandGaussianSmoothd") < names.index("RandARTTwinsd")
    assert len(chain.transforms) == len(plain_chain.transforms) + 1
    assert isinstance(chain.transforms[names.index("RandGaussianSmoothd")], RandGaussianSmoothd)
    # the healthy row (first of the twins list): its image is its target, both smoothed
    a, b = plain[0]["target"], item[0]["target"]
    assert (item[0]["image"] == b).all() and (plain[0]["image"] == a).all()
    assert len(item) >= 2 and all((t["target"] == b).all() for t in item)  # the twins inherit it
    hf = lambda x: float((x[..., 1:, :] - x[..., :-1, :]).abs().mean())  # noqa: E731
    assert hf(b) < 0.8 * hf(a)


def test_intensity_percentiles_stretch_the_image_after_pbtseg_in_training_and_validation(tmp_path):
    """``intensity_percentiles``: PBTSeg reads the loaded grey levels (its thresholds are 8-bit
    levels); the image the synthesis and the network see is stretched, in training and validation."""
    import numpy as np
    from PIL import Image

    from artasyn.phantom import make_phantom

    path = tmp_path / "dull.png"
    img = np.asarray(make_phantom(size=128, seed=5)["image"], np.float32)
    Image.fromarray(np.rint(40 + 0.6 * img).astype(np.uint8)).save(path)  # duller, brighter blacks
    outputs = {}
    for pct in (None, [0.5, 99.5]):
        parser = _parser("cpu.json")
        parser["intensity_percentiles"] = pct
        train = parser.get_parsed_content("train#preprocessing", instantiate=True)
        upto = [type(t).__name__ for t in train.transforms].index("RandARTTwinsd")
        lungs = train.transforms[:upto]
        item = {"image": str(path), "label": 0}
        for t in lungs:
            item = t(item)
        val = parser.get_parsed_content("validate#preprocessing", instantiate=True)
        outputs[str(pct)] = (item, val({"image": str(path), "mask": "", "label": 0}))
    (plain, plain_val), (stretched, stretched_val) = outputs["None"], outputs["[0.5, 99.5]"]
    assert (plain["lung"] == stretched["lung"]).all() and (plain_val["lung"] == stretched_val["lung"]).all()
    assert float(plain["image"].max()) < 200 and float(stretched["image"].max()) == 255.0
    assert float(plain_val["image"].max()) < 0.8 and float(stretched_val["image"].max()) == 1.0
    ratio = float(stretched["image"].std()) / float(plain["image"].std())
    assert 1.5 < ratio < 2.5  # the 0.6 gain undone (and the phantom's tails clipped)


def test_the_signed_map_reaches_the_scorer_the_thresholds_and_the_checkpoint():
    """``lesions.json``'s signed map (``score_map_mode signed``, ``score_map_intensity`` 0.015)
    reaches the validation's map, the options its thresholds are calibrated and saved with, and
    the ``config`` the checkpoints record; ``cpu.json`` alone keeps an intensity weight of 0."""
    assert _parser("cpu.json").get_parsed_content("validate#scoring").map_intensity == 0.0
    parser = _parser("cpu.json", "lesions.json")
    scoring = parser.get_parsed_content("validate#scoring")
    assert (scoring.map_mode, scoring.map_sigma, scoring.map_intensity) == ("signed", 6.0, 0.015)
    calibrators = [
        h for h in parser.get_parsed_content("validate#handlers") if type(h).__name__ == "ThresholdCalibrator"
    ]
    assert len(calibrators) == 1
    options = calibrators[0].options
    assert (options["score_map_mode"], options["score_map_sigma"], options["score_map_intensity"]) == (
        "signed",
        6.0,
        0.015,
    )
    config = parser.get_parsed_content("checkpoint_config")
    assert (config["score_map_mode"], config["score_map_intensity"]) == ("signed", 0.015)
    parser["score_map_intensity"] = 0.03  # a command-line override still reaches all three
    assert parser.get_parsed_content("validate#scoring").map_intensity == 0.03
    assert parser.get_parsed_content("checkpoint_config")["score_map_intensity"] == 0.03
