"""``bench/zhanglab_ensemble.py``: seed ensembles from saved per-image scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import zhanglab_ensemble as ze  # noqa: E402


def _run(root: Path, name: str, scores: dict[str, tuple[int, float]]) -> Path:
    d = root / name / "eval_last"
    d.mkdir(parents=True)
    rows = ["filename,label,score,has_mask"] + [f"{f},{y},{s},0" for f, (y, s) in scores.items()]
    (d / "scores.csv").write_text("\n".join(rows) + "\n")
    return root / name


def test_every_subset_and_a_complementary_pair(tmp_path):
    # run a ranks 'b' wrong, run b ranks 'a' wrong; their geometric mean ranks both right
    a = _run(tmp_path, "a", {"n1": (0, 1.0), "n2": (0, 4.0), "p1": (1, 3.0), "p2": (1, 8.0)})
    b = _run(tmp_path, "b", {"n1": (0, 4.0), "n2": (0, 1.0), "p1": (1, 8.0), "p2": (1, 3.0)})
    out = tmp_path / "ens.json"
    assert ze.main(["--runs", str(a), str(b), "--out", str(out)]) == 0
    rows = {"+".join(r["runs"]): r for r in json.loads(out.read_text())["ensembles"]}
    assert set(rows) == {"a", "b", "a+b"}
    assert rows["a"]["auc"] == pytest.approx(0.75) and rows["b"]["auc"] == pytest.approx(0.75)
    assert rows["a+b"]["auc"] == pytest.approx(1.0)
    assert rows["a+b"]["n_images"] == 4 and rows["a+b"]["n_positive"] == 2


def test_evaluations_of_one_run_are_members_too(tmp_path):
    # one run scored under two test-time settings (bench_zhanglab --rescore TAG): eval_last_TAG
    a = _run(tmp_path, "r", {"n1": (0, 1.0), "n2": (0, 4.0), "p1": (1, 3.0), "p2": (1, 8.0)})
    (a / "eval_last").rename(a / "eval_last_m1")
    _run(tmp_path / "x", "r", {"n1": (0, 4.0), "n2": (0, 1.0), "p1": (1, 8.0), "p2": (1, 3.0)})
    (tmp_path / "x" / "r" / "eval_last").rename(a / "eval_last_m2")
    out = tmp_path / "m.json"
    assert ze.main(["--runs", str(a), "--which", "eval_last_m1", "eval_last_m2", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    rows = {"+".join(r["runs"]): r for r in got["ensembles"]}
    assert set(rows) == {"eval_last_m1", "eval_last_m2", "eval_last_m1+eval_last_m2"}
    assert rows["eval_last_m1+eval_last_m2"]["auc"] == pytest.approx(1.0)
    assert got["runs"]["eval_last_m2"].endswith("r/eval_last_m2/scores.csv")
    # several runs and several evaluations: every (run, evaluation) is a member, named run/which
    b = _run(tmp_path, "s", {"n1": (0, 1.0), "n2": (0, 2.0), "p1": (1, 3.0), "p2": (1, 4.0)})
    (b / "eval_last").rename(b / "eval_last_m1")
    _run(tmp_path / "y", "s", {"n1": (0, 2.0), "n2": (0, 1.0), "p1": (1, 4.0), "p2": (1, 3.0)})
    (tmp_path / "y" / "s" / "eval_last").rename(b / "eval_last_m2")
    assert ze.main(["--runs", str(a), str(b), "--which", "eval_last_m1", "eval_last_m2", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got["runs"]) == {"r/eval_last_m1", "r/eval_last_m2", "s/eval_last_m1", "s/eval_last_m2"}
    assert len(got["ensembles"]) == 15  # every non-empty subset of four members
    # two runs of the same folder name would overwrite each other: refused
    with pytest.raises(SystemExit, match="share a name"):
        ze.main(["--runs", str(a), str(tmp_path / "x" / "r"), "--out", str(out)])
    with pytest.raises(SystemExit, match="given twice"):
        ze.main(["--runs", str(a), "--which", "eval_last_m1", "eval_last_m1", "--out", str(out)])


def test_labels_that_disagree_and_a_missing_evaluation_are_named(tmp_path):
    a = _run(tmp_path, "a", {"x": (0, 1.0), "y": (1, 2.0)})
    b = _run(tmp_path, "b", {"x": (1, 1.0), "y": (1, 2.0)})
    with pytest.raises(ValueError, match="b: labels differ"):
        ze.ensembles({"a": ze.read_scores(a), "b": ze.read_scores(b)})
    with pytest.raises(FileNotFoundError, match="c/eval_last/scores.csv"):
        ze.read_scores(tmp_path / "c")


def test_probe_table_gathers_every_run_with_its_settings(tmp_path):
    import zhanglab_testdev_table as zt

    res = {
        "settings": {"overrides": {"network_def#channels": 16}, "max_iterations": None},
        "runs": {
            "final_seed0": {
                "variant": "final",
                "seed": 0,
                "metrics_last": {"auc": 0.75, "ap": 0.8},
                "metrics_last_val": {"auc": 0.9, "ap": 0.91},
                "iterations_logged": 1600,
                "train_wall_s": 100.0,
                "load_avg_end": [1.5, 1.0, 1.0],
            },
            "none_seed1": {"variant": "none", "seed": 1, "metrics_last": {"auc": 0.6, "ap": 0.7}},
        },
    }
    src = tmp_path / "r.json"
    src.write_text(json.dumps(res))
    out = tmp_path / "t.json"
    assert zt.main([str(src), "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert [r["run"] for r in got["rows"]] == ["final_seed0", "none_seed1"]
    assert got["rows"][0]["settings"] == "network_def#channels=16" and got["rows"][1]["val_auc"] is None
    assert got["rows"][0]["iterations"] == 1600 and got["rows"][1]["iterations"] is None
    assert "| final_seed0 | network_def#channels=16 | 0.750 / 0.800 |" in got["table_markdown"]
    assert "| 0.900 / 0.910 | 1600 | 100 | 1.5 |" in got["table_markdown"]
    # a file that records its preset's version names it: "as is" then means that version
    res["preset_version"], res["settings"]["overrides"] = "0.10.0", {"lung_box_margin": 0.15}
    src.write_text(json.dumps(res))
    assert zt.main([str(src), "--out", str(out)]) == 0
    got = json.loads(out.read_text())["rows"]
    assert got[0]["settings"] == "`cpu.json` 0.10.0; lung_box_margin=0.15" and got[0]["preset_version"] == "0.10.0"
