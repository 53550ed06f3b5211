"""Command-line overrides that name no setting: warned about by every workflow's ``initialize``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from scripts.overrides import bundle_run_overrides, unknown_overrides, warn_unknown_overrides

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
MAIN = "/env/lib/python3.11/site-packages/monai/bundle/__main__.py"


def _argv(*overrides, config=None):
    files = config or [str(CONFIGS / "train.json"), str(CONFIGS / "cpu.json")]
    return [MAIN, "run", "training", "--config_file", str(files), *overrides]


def test_the_command_line_forms_of_fire_are_read():
    files, over = bundle_run_overrides(
        [MAIN, "run", "training", "--config_file", "['a.json','b.json']", "--seed=3", "--max-iterations", "5", "--amp"]
    )
    assert files == ["a.json", "b.json"]
    assert over == {"seed": "3", "max_iterations": "5", "amp": True}
    assert bundle_run_overrides(["pytest", "-q", "--seed", "1"]) == ([], {})
    assert bundle_run_overrides([MAIN, "verify_metadata", "--seed", "1"]) == ([], {})


def test_unknown_ids_are_found_with_their_nearest_settings():
    unknown = unknown_overrides(_argv("--max_iteration", "5", "--learning_rate", "1e-3", "--lr", "1", "--tau", "0.4"))
    assert set(unknown) == {"max_iteration", "lr"}
    assert unknown["max_iteration"][0] == "max_iterations"


def test_a_new_key_in_a_plain_grouping_of_settings_is_found():
    unknown = unknown_overrides(_argv("--train#datalst", "a.json", "--validate#datalist", "b.json"))
    assert list(unknown) == ["train#datalst"] and unknown["train#datalst"][0] == "train#datalist"
    inference = [str(CONFIGS / "inference.json")]
    unknown = unknown_overrides(_argv("--default_settings#spatial_sise", "128", config=inference))
    assert unknown == {"default_settings#spatial_sise": ["default_settings#spatial_size"]}


@pytest.mark.parametrize(
    "override",
    [
        ("--network_def#dropout", "0.2"),  # a new argument of a component
        ("--checkpoint_config#network#width", "8"),  # a dict argument of a component
        ("--validate#handlers#7#info#note", "x"),  # inside a list of components
        ("--train#dataloader#prefetch_factor", "2"),  # a component inside a grouping
        ("--my_width", "4", "--network_def#channels", "@my_width"),  # a new id another override uses
        ("--_meta_#version", "1"),
        ("--run_id", "training", "--logging_file", "x.conf", "--workflow_type", "train"),
    ],
)
def test_overrides_that_take_effect_are_not_warned_about(override):
    assert unknown_overrides(_argv(*override)) == {}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_args_file_overrides_are_checked_and_the_command_line_wins(tmp_path, suffix):
    args = tmp_path / f"args{suffix}"
    args.write_text(json.dumps({"config_file": str(CONFIGS / "train.json"), "batchsize": 2, "seed": 1}))  # YAML too
    argv = [MAIN, "run", "training", "--args_file", str(args), "--seed", "4"]
    assert bundle_run_overrides(argv) == ([str(CONFIGS / "train.json")], {"batchsize": 2, "seed": "4"})
    unknown = unknown_overrides(argv)
    assert list(unknown) == ["batchsize"] and unknown["batchsize"][0] == "batch_size"


def test_each_unknown_override_is_logged_once_with_a_hint(caplog):
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        warn_unknown_overrides(_argv("--max_iteration", "5", "--learning_rate", "1e-3"))
    lines = [r.getMessage() for r in caplog.records if "names no setting" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("--max_iteration names no setting of these configs, so it has no effect")
    assert "did you mean --max_iterations" in lines[0]


@pytest.mark.parametrize("name", ["train.json", "evaluate.json", "multi_gpu_train.json", "inference.json"])
def test_every_workflow_checks_its_overrides_first(name):
    init = json.loads((CONFIGS / name).read_text())["initialize"]
    assert init[:2] == ["$sys.path.append(@bundle_root)", "$@override_check"]


def test_only_rank_0_warns(monkeypatch):
    argv = _argv("--max_iteration", "5")
    monkeypatch.setenv("RANK", "1")
    assert warn_unknown_overrides(argv) == {}
    monkeypatch.setenv("RANK", "0")
    assert list(warn_unknown_overrides(argv)) == ["max_iteration"]


def test_a_failing_check_never_stops_the_run(tmp_path, caplog):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="artasyn.bundle"):
        assert warn_unknown_overrides(_argv("--seed", "1", config=[str(broken)])) == {}
    assert any("were not checked" in r.getMessage() for r in caplog.records)
