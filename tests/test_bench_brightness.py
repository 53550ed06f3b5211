"""``bench/zhanglab_brightness.py`` and the ``bright_p995`` trivial statistic."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import trivial_baselines as tb  # noqa: E402
import zhanglab_brightness as zb  # noqa: E402


def test_bright_p995_ignores_a_few_hot_pixels():
    img = np.full((100, 100), 100.0)
    img[:40] = 180.0
    img[0, :10] = 255.0  # a burned-in marker: 0.1 % of the pixels
    stats = tb.image_statistics(img)
    assert set(stats) == set(tb.STATISTICS)
    assert stats["bright_p995"] == pytest.approx(180.0)


def _images_and_runs(root: Path, brightness: list[int], labels: list[int], runs: dict[str, list[float]]):
    files = []
    for i, b in enumerate(brightness):
        f = root / "img" / f"{i:02d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), b, np.uint8)).save(f)
        files.append(f)
    folders = []
    for name, scores in runs.items():
        d = root / name / "eval_last"
        d.mkdir(parents=True)
        rows = ["filename,label,score"] + [f"{f},{y},{s}" for f, y, s in zip(files, labels, scores)]
        (d / "scores.csv").write_text("\n".join(rows) + "\n")
        folders.append(root / name)
    return folders


def test_a_brightness_reader_falls_to_chance_inside_quartiles(tmp_path):
    # 16 images, 4 per brightness level, 2 healthy + 2 diseased in each; darker = more often diseased overall
    brightness = [60] * 4 + [120] * 4 + [180] * 4 + [240] * 4
    labels = [1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    reader = [-float(b) for b in brightness]  # reads brightness only
    oracle = [float(y) + 0.001 * i for i, y in enumerate(labels)]  # knows the label
    folders = _images_and_runs(tmp_path, brightness, labels, {"reader": reader, "oracle": oracle})
    out = tmp_path / "out.json"
    assert zb.main(["--runs", *map(str, folders), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_images"] == 16 and res["n_diseased"] == 7
    assert res["brightness_auc_lower_is_diseased"] > 0.7
    quartiles_with_both = [i for i, q in enumerate(res["quartiles"]) if 0 < q["diseased_fraction"] < 1]
    assert quartiles_with_both
    reader_q = res["runs"]["reader"]["auc_within_brightness_quartiles"]
    oracle_q = res["runs"]["oracle"]["auc_within_brightness_quartiles"]
    for i in quartiles_with_both:
        assert reader_q[i] == pytest.approx(0.5)  # equal brightness inside a quartile: chance
        assert oracle_q[i] == pytest.approx(1.0)
    assert res["runs"]["oracle"]["auc"] == pytest.approx(1.0)
    assert "| reader |" in res["table_markdown"]


def test_runs_on_other_images_are_refused(tmp_path):
    a = _images_and_runs(tmp_path / "a", [50, 200], [1, 0], {"r1": [1.0, 0.0]})[0]
    b = _images_and_runs(tmp_path / "b", [50, 200], [1, 0], {"r2": [1.0, 0.0]})[0]
    with pytest.raises(ValueError, match="r2: not the first run's images"):
        zb.main(["--runs", str(a), str(b), "--out", str(tmp_path / "o.json")])


def test_runs_of_the_same_name_are_kept_apart(tmp_path):
    """Two trainings of one variant and seed (both ``final_seed0``) under different work folders: both reported."""
    good = _images_and_runs(tmp_path, [50, 60, 200, 210], [1, 1, 0, 0], {"a/final_seed0": [1.0, 0.9, 0.1, 0.0]})[0]
    bad_dir = tmp_path / "b" / "final_seed0" / "eval_last"
    bad_dir.mkdir(parents=True)
    rows = (good / "eval_last" / "scores.csv").read_text().splitlines()
    flipped = [rows[0]] + [",".join([*r.split(",")[:2], str(1.0 - float(r.split(",")[2]))]) for r in rows[1:]]
    (bad_dir / "scores.csv").write_text("\n".join(flipped) + "\n")
    out = tmp_path / "o.json"
    assert zb.main(["--runs", str(good), str(bad_dir.parent), "--out", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert runs["a/final_seed0"]["auc"] == pytest.approx(1.0)
    assert runs["b/final_seed0"]["auc"] == pytest.approx(0.0)
    assert zb.run_labels([Path("x/run"), Path("y/other")]) == ["run", "other"]
    with pytest.raises(ValueError, match="cannot be told apart"):
        zb.run_labels([Path("x/a/run"), Path("y/a/run")])


def test_bacterial_and_viral_pneumonia_are_scored_apart_against_all_normals():
    names = ["IM-0001-0001.jpeg", "NORMAL2-IM-0002.jpeg", "person1_bacteria_1.jpeg", "person3_virus_6.jpeg"]
    assert [zb.subtype(n) for n in names] == ["", "", "bacteria", "virus"]
    y = np.array([0, 0, 1, 1, 1, 1])
    kinds = np.array(["", "", "bacteria", "bacteria", "virus", "virus"])
    score = np.array([0.2, 0.4, 0.9, 0.8, 0.3, 0.1])  # finds the bacterial ones, misses the viral ones
    out = zb.by_subtype(score, y, kinds)
    assert out["bacteria"] == pytest.approx(1.0)
    assert out["virus"] == pytest.approx(0.25)  # 0.3 beats the 0.2 normal only
    assert zb.by_subtype(score[:4], y[:4], kinds[:4])["virus"] is None
