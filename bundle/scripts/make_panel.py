"""Figure: ART-ASyn synthesis steps side by side (``docs/method.md`` section 2).

One row per image: healthy | lungs | A_base | A_base + T_blur + T_cryst | A_final | mask,
titled with the image's name and the seed of its strokes; a title over each column. All three
variants use the same seed, so they show the same strokes.

Usage::

    python bundle/scripts/make_panel.py --out panel.png --images a.png b.png --lungs a_lung.png b_lung.png
    python bundle/scripts/make_panel.py --out panel.png --phantom 3

Lung maps: ``--lungs`` (label PNGs: 0, 1 right, 2 left), else :class:`artasyn.lungs.pbtseg.PBTSeg`.
``--phantom N`` draws N procedural phantoms with :mod:`artasyn.phantom` (their own lung maps).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "transforms"))
if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: the bundle's ``scripts``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from artasyn.synthesis import RandARTAnomaly  # noqa: E402
from scripts.figures import titled_grid  # noqa: E402

COLUMNS = ("healthy", "lungs", "A_base", "A_base+blur+cryst", "A_final", "mask")


def _lung_view(img: np.ndarray, lung: np.ndarray) -> np.ndarray:
    rgb = np.repeat(img[..., None], 3, axis=2).astype(np.float32)
    for label, colour in ((1, (255, 80, 80)), (2, (80, 160, 255))):
        m = lung == label
        rgb[m] = 0.6 * rgb[m] + 0.4 * np.array(colour, np.float32)
    return rgb.astype(np.uint8)


def panel_row(img: np.ndarray, lung: np.ndarray, seed: int) -> list[np.ndarray]:
    tiles = [np.repeat(img[..., None], 3, 2), _lung_view(img, lung)]
    mask = None
    for variant in ("base", "base_blur_cryst", "final"):
        out, mask = RandARTAnomaly(variant=variant).set_random_state(seed)(img[None], lung[None])
        tiles.append(np.repeat(np.asarray(out[0], np.uint8)[..., None], 3, 2))
    tiles.append(np.repeat((np.asarray(mask[0]) * 255).astype(np.uint8)[..., None], 3, 2))
    return tiles


def make_panel(
    pairs: list[tuple[np.ndarray, np.ndarray]], seed: int = 0, tile: int = 256, names: list[str] | None = None
) -> Image.Image:
    """The panel image for (image, lung map) pairs (H x W uint8 each), a title over each column and row.

    A row's title: its name (``names``, e.g. the file; default ``image k``) and the seed of its strokes.
    """
    names = list(names) if names is not None else [f"image {k}" for k in range(len(pairs))]
    if len(names) != len(pairs):
        raise ValueError(f"make_panel: {len(names)} names for {len(pairs)} images")
    rows = [
        [np.asarray(Image.fromarray(t).resize((tile, tile), Image.BILINEAR)) for t in panel_row(img, lung, seed + i)]
        for i, (img, lung) in enumerate(pairs)
    ]
    titles = [f"{name} | seed {seed + i}" for i, name in enumerate(names)]
    return titled_grid(rows, titles, COLUMNS)


def row_names(args) -> list[str]:
    """The row titles: the image files' names, or the phantoms' seeds."""
    if args.phantom:
        return [f"phantom (seed {args.seed + k})" for k in range(args.phantom)]
    return [Path(p).name for p in args.images]


def load_pairs(args) -> list[tuple[np.ndarray, np.ndarray]]:
    if args.phantom:
        try:
            from artasyn.phantom import make_phantom
        except ImportError as e:
            raise SystemExit(f"--phantom needs the module artasyn.phantom, which is not available: {e}") from e
        return [
            (p["image"], p["lungs"])
            for p in (make_phantom(size=args.size, seed=args.seed + k) for k in range(args.phantom))
        ]
    if not args.images:
        raise SystemExit("give --images PATH ... or --phantom N")
    if args.lungs and len(args.lungs) != len(args.images):
        raise SystemExit(f"--lungs needs one map per image: {len(args.lungs)} maps for {len(args.images)} images")
    seg = None
    pairs = []
    for k, path in enumerate(args.images):
        img = np.asarray(Image.open(path).convert("L").resize((args.size, args.size), Image.BILINEAR))
        if args.lungs:
            lung = np.asarray(Image.open(args.lungs[k]).resize((args.size, args.size), Image.NEAREST))
        else:
            if seg is None:
                from artasyn.lungs.pbtseg import PBTSeg

                seg = PBTSeg()
            lung = np.asarray(seg(img[None]))[0]
        pairs.append((img, lung))
    return pairs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description="ART-ASyn synthesis panel (healthy | lungs | A_base | +blur+cryst | A_final | mask)"
    )
    ap.add_argument("--out", default="artasyn_panel.png")
    ap.add_argument("--images", nargs="*", default=[])
    ap.add_argument("--lungs", nargs="*", default=[])
    ap.add_argument("--phantom", type=int, default=0, help="use N procedural phantoms (artasyn.phantom)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    make_panel(load_pairs(args), seed=args.seed, names=row_names(args)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
