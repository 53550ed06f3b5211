"""Figure: the baseline syntheses beside ART-ASyn on procedural phantoms.

Columns: healthy | AnatPaste | CutPaste | Perlin | A_final (ART-ASyn). Each phantom gives two
rows: the images, then their anomaly masks (white) over the lung map (gray), so that one sees
that every mask lies inside the lungs. Each cell uses the seed ``--seed + phantom index``.

Usage::

    python bench/make_baselines_panel.py --phantom 3 --out bundle/docs/images/baselines_panel.png

The phantoms come from :func:`artasyn.phantom.make_phantom` (their own lung maps); no data is read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "transforms"))
sys.path.insert(0, str(REPO / "bundle"))  # the bundle's own code, imported as ``scripts``

from artasyn.baselines import BASELINES  # noqa: E402
from artasyn.phantom import make_phantom  # noqa: E402
from artasyn.synthesis import RandARTAnomaly  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402

COLUMNS = ("healthy", "anatpaste", "cutpaste", "perlin", "final")
TITLES = {
    "healthy": "healthy (lungs below)",
    "anatpaste": "AnatPaste",
    "cutpaste": "CutPaste",
    "perlin": "Perlin (DRAEM)",
    "final": "A_final (ART-ASyn)",
}


def synthesize(variant: str, img: np.ndarray, lung: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(synthetic image, mask, painted) of one variant under one seed."""
    t = RandARTAnomaly(variant="final") if variant == "final" else BASELINES[variant]()
    out, mask = t.set_random_state(seed)(img[None], lung[None])
    return np.asarray(out[0], np.uint8), np.asarray(mask[0]) > 0, bool(t.last_painted)


def mask_view(lung: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Lungs dark gray, mask white, background black."""
    v = np.where(lung > 0, 70, 0).astype(np.uint8)
    if mask is not None:
        v[mask] = 255
    return v


def panel_rows(img: np.ndarray, lung: np.ndarray, seed: int) -> tuple[list, list, list[bool]]:
    images, masks, painted = [img], [mask_view(lung, None)], [True]
    for variant in COLUMNS[1:]:
        out, mask, ok = synthesize(variant, img, lung, seed)
        images.append(out)
        masks.append(mask_view(lung, mask))
        painted.append(ok)
    return images, masks, painted


def make_panel(pairs: list[tuple[np.ndarray, np.ndarray]], seed: int = 0, tile: int = 256) -> Image.Image:
    header = 18
    canvas = Image.new("L", (tile * len(COLUMNS), header + 2 * tile * len(pairs)), 255)
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(COLUMNS):
        draw.text((j * tile + 4, 3), TITLES[name], fill=0)
    for i, (img, lung) in enumerate(pairs):
        images, masks, painted = panel_rows(img, lung, seed + i)
        for r, row in enumerate((images, masks)):
            y = header + (2 * i + r) * tile
            for j, t in enumerate(row):
                canvas.paste(Image.fromarray(t).resize((tile, tile), Image.BILINEAR), (j * tile, y))
                if r == 1 and not painted[j]:  # an anomaly too faint for its mask is discarded
                    draw.text((j * tile + 4, y + 4), "not painted (too faint): label 0", fill=255)
    return canvas


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description="baseline syntheses panel (healthy | AnatPaste | CutPaste | Perlin | final)"
    )
    ap.add_argument("--out", default=str(REPO / "bundle" / "docs" / "images" / "baselines_panel.png"))
    ap.add_argument("--phantom", type=int, default=3, help="number of procedural phantoms (rows)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    pairs = [
        (p["image"], p["lungs"])
        for p in (make_phantom(size=args.size, seed=args.seed + k) for k in range(args.phantom))
    ]
    panel = make_panel(pairs, seed=args.seed)
    atomic_write(args.out, lambda f: panel.save(f, format="PNG", optimize=True))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
