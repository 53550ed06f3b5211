"""Figures with titles: a grid of image tiles, a title over each column and over each row.

The bundle's pictures (the evaluation panel of :mod:`scripts.handlers`, the synthesis figure
of ``make_panel.py``) are grids of tiles; :func:`titled_grid` draws them with PIL, in PIL's
default font, black on white: a band of column titles on top, and above each row a band with
its title (wrapped to the grid's width). Tiles are 2-D floats in [0, 1] (gray) or
``H x W x 3`` ``uint8`` (colour); the picture is ``L`` when every tile is gray, else ``RGB``.

Example::

    >>> import numpy as np
    >>> from scripts.figures import titled_grid
    >>> picture = titled_grid([[np.zeros((32, 32)), np.ones((32, 32))]], ["a.png | healthy"], ["input", "recon"])
    >>> picture.mode, picture.width, picture.height > 32
    ('L', 66, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["titled_grid", "wrap_text"]

#: pixels between tiles, and around a title's text
GAP, PAD = 2, 2


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag|")
    return int(bottom - min(top, 0)) + 2


def wrap_text(text: str, width: int, font=None) -> list[str]:
    """``text`` cut into lines of at most ``width`` pixels in ``font`` (at spaces, else within a word)."""
    font = font or _font()
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:  # a word wider than the line: cut it
                if line and font.getlength(line + ch) > width:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return lines


def _tile_image(tile) -> Image.Image:
    arr = np.asarray(tile)
    if arr.ndim == 2:
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return Image.fromarray(arr.astype(np.uint8), mode="RGB")
    raise ValueError(f"titled_grid: a tile must be H x W or H x W x 3, got shape {arr.shape}")


def titled_grid(
    rows: Sequence[Sequence],
    row_titles: Sequence[str] | None = None,
    column_titles: Sequence[str] | None = None,
) -> Image.Image:
    """The picture of ``rows`` of tiles, with ``column_titles`` on top and ``row_titles`` above each row.

    Args:
        rows: one sequence of tiles a row, the same number in every row; a column's tiles have
            its first row's width.
        row_titles: one text a row (``None``: no row bands).
        column_titles: one text a column (``None``: no column band).
    """
    tiles = [[_tile_image(t) for t in row] for row in rows]
    if not tiles or not tiles[0]:
        raise ValueError("titled_grid: no tile to draw")
    n_cols = len(tiles[0])
    if any(len(r) != n_cols for r in tiles):
        raise ValueError(f"titled_grid: every row needs {n_cols} tiles, got {[len(r) for r in tiles]}")
    if row_titles is not None and len(row_titles) != len(tiles):
        raise ValueError(f"titled_grid: {len(row_titles)} row titles for {len(tiles)} rows")
    if column_titles is not None and len(column_titles) != n_cols:
        raise ValueError(f"titled_grid: {len(column_titles)} column titles for {n_cols} columns")
    mode = "L" if all(t.mode == "L" for r in tiles for t in r) else "RGB"
    white, black = (255, 0) if mode == "L" else ((255, 255, 255), (0, 0, 0))
    font, line_h = _font(), _line_height(_font())
    widths = [t.width for t in tiles[0]]
    width = sum(widths) + GAP * (n_cols - 1)
    lefts = [sum(widths[:j]) + GAP * j for j in range(n_cols)]
    col_lines = [wrap_text(t, max(widths[j] - PAD, 1), font) for j, t in enumerate(column_titles or ())]
    col_band = max((len(c) for c in col_lines), default=0) * line_h + (2 * PAD if column_titles else 0)
    row_lines = [wrap_text(t, max(width - 2 * PAD, 1), font) for t in (row_titles or ())]
    row_bands = [len(lines) * line_h + 2 * PAD for lines in row_lines] or [0] * len(tiles)
    heights = [max(t.height for t in r) for r in tiles]
    height = col_band + sum(row_bands) + sum(heights) + GAP * (len(tiles) - 1)
    canvas = Image.new(mode, (width, height), white)
    draw = ImageDraw.Draw(canvas)
    for j, lines in enumerate(col_lines):
        for k, line in enumerate(lines):
            draw.text((lefts[j] + PAD, PAD + k * line_h), line, fill=black, font=font)
    y = col_band
    for i, row in enumerate(tiles):
        for k, line in enumerate(row_lines[i] if row_lines else ()):
            draw.text((PAD, y + PAD + k * line_h), line, fill=black, font=font)
        y += row_bands[i]
        for j, tile in enumerate(row):
            canvas.paste(tile.convert(mode), (lefts[j], y))
        y += heights[i] + GAP
    return canvas
