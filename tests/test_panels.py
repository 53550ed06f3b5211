"""Readable pictures: the evaluation panel and the synthesis figure carry a title per row and per column."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

TILE = 32


def _item(name: str, label: int, score: float, decision: int | None, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    item = {
        "image": torch.rand(1, TILE, TILE, generator=g),
        "pred": torch.rand(1, TILE, TILE, generator=g),
        "anomaly_map": torch.rand(1, TILE, TILE, generator=g),
        "pred_mask": (torch.rand(4, TILE, TILE, generator=g) > 0.5).float(),
        "gt_mask": (torch.rand(1, TILE, TILE, generator=g) > 0.8).float() if label else None,
        "label": torch.tensor([float(label)]),
        "score": torch.tensor([score, score]),
        "image_path": f"/data/{name}",
    }
    if decision is not None:
        item["pred_label"] = torch.tensor([float(decision)])
        item["abs_mask"] = (torch.rand(1, TILE, TILE, generator=g) > 0.9).float()
    return item


def test_row_title_names_file_true_label_score_and_decision():
    from scripts.handlers import panel_row_title

    assert (
        panel_row_title(_item("covid_17.png", 1, 0.0123456, 1, 0))
        == "data/covid_17.png | true: diseased | score 0.01235 | decision: abnormal"
    )
    assert (
        panel_row_title(_item("normal_3.png", 0, 0.002, 0, 1))
        == "data/normal_3.png | true: healthy | score 0.002 | decision: normal"
    )
    assert panel_row_title(_item("n.png", 0, 0.5, None, 2)).endswith("decision: none (no threshold applied)")
    assert panel_row_title(_item("x.png", 0, 0.5, None, 2), "/other/y.png").startswith("other/y.png | ")


def _run_handler(items, tmp_path):
    from scripts.handlers import AnomalyPanelHandler

    written = {}

    class Writer:
        def add_image(self, tag, img, step, dataformats):
            written[tag] = np.asarray(img)

        def flush(self):
            pass

    handler = AnomalyPanelHandler(summary_writer=Writer(), tag="t", max_items=4, png_path=str(tmp_path / "p.png"))
    engine = SimpleNamespace(state=SimpleNamespace(output=items, batch=[{} for _ in items], epoch=1))
    handler._reset(engine)
    handler._collect(engine)
    handler._write(engine)
    return np.asarray(Image.open(tmp_path / "p.png")), written["t"]


def test_evaluation_panel_has_a_title_band_per_row_and_one_for_the_columns(tmp_path):
    items = [_item("healthy_a.png", 0, 0.001, 0, 0), _item("diseased_b.png", 1, 0.02, 1, 1)]
    png, board = _run_handler(items, tmp_path)
    assert board.shape == (1, *png.shape) and np.allclose(board[0], png / 255.0)
    assert png.shape[1] == 5 * TILE + 4 * 2  # five columns, 2 px apart
    assert png.shape[0] > 2 * TILE + 2 + 3 * 10  # the tiles, and three title bands of text
    # find the tiles: the input tile of each row is the item's image, under its title band
    tops = []
    for item in items:
        tile = (item["image"][0].numpy() * 255).round().astype(np.uint8)
        found = [y for y in range(png.shape[0] - TILE + 1) if np.array_equal(png[y : y + TILE, :TILE], tile)]
        assert len(found) == 1
        tops.append(found[0])
    column_band, row0_band = png[: tops[0] - 12], png[tops[0] - 12 : tops[0]]
    assert (column_band < 128).any() and (row0_band < 128).any()  # text drawn (black on white)
    for j in range(5):  # every column has its title
        assert (column_band[:, j * (TILE + 2) : (j + 1) * (TILE + 2) - 2] < 128).any(), j
    row1_band = png[tops[1] - 12 : tops[1]]
    assert not np.array_equal(row0_band, row1_band)  # each row its own text


def test_panel_mask_column_says_which_mask_it_shows(tmp_path):
    from scripts.handlers import anomaly_panel

    decided = [_item("a.png", 0, 0.1, 0, 0), _item("b.png", 1, 0.2, 1, 1)]
    undecided = [_item("a.png", 0, 0.1, None, 0), _item("b.png", 1, 0.2, None, 1)]
    a, b = np.asarray(anomaly_panel(decided)), np.asarray(anomaly_panel(undecided, tau=0.4))
    assert a.shape[1] == b.shape[1] and not np.array_equal(a, b)
    mask_col = slice(3 * (TILE + 2), 4 * (TILE + 2) - 2)
    top = min(a.shape[0], b.shape[0]) // 8
    assert not np.array_equal(a[:top, mask_col], b[:top, mask_col])


def test_long_titles_wrap_within_the_grid():
    from scripts.figures import GAP, titled_grid, wrap_text

    text = "a_very_long_file_name_of_a_radiograph_0001.png | true: diseased | score 0.01235 | decision: abnormal"
    lines = wrap_text(text, 60)
    assert len(lines) > 2 and all(len(line) > 0 for line in lines)
    one = titled_grid([[np.zeros((20, 30))] * 2], ["short"], ["a", "b"])
    many = titled_grid([[np.zeros((20, 30))] * 2], [text], ["a", "b"])
    assert one.width == many.width == 2 * 30 + GAP and many.height > one.height


def test_synthesis_figure_titles_rows_and_columns(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle" / "scripts"))
    from make_panel import COLUMNS, make_panel

    from artasyn.phantom import make_phantom

    pairs = [(p["image"], p["lungs"]) for p in (make_phantom(size=64, seed=s) for s in (0, 1))]
    picture = np.asarray(make_panel(pairs, seed=0, tile=64, names=["first.png", "second.png"]).convert("L"))
    assert picture.shape[1] == len(COLUMNS) * 64 + (len(COLUMNS) - 1) * 2
    assert picture.shape[0] > 2 * 64 + 2 + 3 * 10
    assert (picture[:10] < 128).any()  # the column titles
