"""Panel: PBTSeg paper mode vs robust mode on the same hard real images.

Picks, from ``../shared/data``, the images where the paper's PBTSeg misses a lung or has the
lowest Dice against the ground-truth lungs: two of ``covidquex_noncovid_lung``, two of
``covidquex_covid_infection``, one of ``covidquex_normal_lung``, one of
``nih_nofinding_normal`` and two of ``zhanglab_train_normal`` (a deterministic choice: the
lowest Dice where ground truth exists, else the first images by sorted name with a lung missing).
Each row: the image, the paper's map, the robust map (right lung red, left lung green; the
ground-truth lung outline in blue, the COVID infection outline in yellow where they exist),
with the Dice in the corner; for the robust mode the caption says which step gave each lung
(``thresh``: found by the seeds; ``mirror``: the other lung mirrored; ``templa``: template).
Written to ``bundle/docs/images/pbtseg_modes_panel.png``.

    OMP_NUM_THREADS=1 python bench/make_pbtseg_panel.py
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.data import MetaTensor  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from artasyn.intensity import ToGrayscale  # noqa: E402
from artasyn.lungs.pbtseg import PBTSeg, resize_bilinear_uint8, resize_nearest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))  # the bundle's own code, imported as ``scripts``

from scripts.utils import atomic_write  # noqa: E402

TILE = 256
#: set, image folder, lung-mask folder, infection-mask folder, how many images
PICKS = (
    ("covidquex_noncovid_lung", "covidquex_noncovid_lung/images", "covidquex_noncovid_lung/masks", None, 2),
    (
        "covidquex_covid_infection",
        "covidquex_covid_infection/images",
        "covidquex_covid_infection/masks_lung",
        "covidquex_covid_infection/masks",
        2,
    ),
    ("covidquex_normal_lung", "covidquex_normal_lung/images", "covidquex_normal_lung/masks", None, 1),
    ("nih_nofinding_normal", "nih_nofinding_normal/images", None, None, 1),
    ("zhanglab_train_normal", "zhanglab_train_normal", None, None, 2),
)


def read_gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode == "RGB":
            return np.asarray(ToGrayscale()(np.asarray(im)))
        return np.asarray(im.convert("L"))[None]


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask)


def tile(img: np.ndarray, lung: np.ndarray | None, gt: np.ndarray | None, inf: np.ndarray | None, text: str):
    """One 256 x 256 RGB tile: the image, the lung map as a tint, outlines, a caption."""
    gray = resize_bilinear_uint8(img, (TILE, TILE)).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if lung is not None:
        lung = resize_nearest(lung, (TILE, TILE))
        for value, colour in ((1, (255, 60, 60)), (2, (60, 220, 60))):
            m = lung == value
            rgb[m] = 0.55 * rgb[m] + 0.45 * np.array(colour, np.float32)
    for mask, colour in ((gt, (60, 120, 255)), (inf, (255, 230, 0))):
        if mask is not None:
            rgb[outline(resize_nearest(mask.astype(np.uint8), (TILE, TILE)) > 0)] = colour
    out = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, 8 + 6 * len(text), 14), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return out


def hard_images(data: Path, paper: PBTSeg) -> list[tuple]:
    rows = []
    for name, images, lungs, infection, count in PICKS:
        scored = []
        for path in sorted(p for p in (data / images).iterdir() if p.suffix.lower() in (".png", ".jpeg", ".jpg")):
            img = read_gray(path)
            lung, found = paper.segment(img)
            gt = read_mask(data / lungs / f"{path.stem}.png") if lungs else None
            score = dice(lung[0] > 0, gt) if gt is not None else float(sum(found))
            scored.append((score, path.name, path, img, gt))
            if gt is None and sum(s[0] < 2 for s in scored) == count:
                break  # no ground truth: the first images with a lung missing
        scored.sort(key=lambda s: (s[0], s[1]))
        for _score, _name, path, img, gt in scored[:count]:
            inf = read_mask(data / infection / f"{path.stem}.png") if infection else None
            rows.append((name, path, img[0], gt, inf))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("ARTASYN_SHARED_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--out", type=Path, default=ROOT / "bundle" / "docs" / "images" / "pbtseg_modes_panel.png")
    args = parser.parse_args()
    import logging

    logging.getLogger("artasyn.lungs.pbtseg").setLevel(logging.ERROR)
    paper, robust = PBTSeg(mode="paper"), PBTSeg(mode="robust")
    header = Image.new("RGB", (3 * TILE, 18), (0, 0, 0))
    draw = ImageDraw.Draw(header)
    for i, title in enumerate(("image (set)", "PBTSeg mode='paper'", "PBTSeg mode='robust'")):
        draw.text((i * TILE + 4, 3), title, fill=(255, 255, 255))
    tiles = [header]
    for name, _path, img, gt, inf in hard_images(args.data, paper):
        row = Image.new("RGB", (3 * TILE, TILE))
        row.paste(tile(img, None, None, None, name.replace("covidquex_", "cqx_")), (0, 0))
        for i, seg in enumerate((paper, robust), start=1):
            out = seg(MetaTensor(torch.as_tensor(img[None].copy())))
            lung = out[0].numpy()
            caption = "both lungs" if {1, 2} <= set(np.unique(lung).tolist()) else "lung missing"
            if seg.mode == "robust":  # which step gave each side (threshold, mirror, template)
                caption = f"R {out.meta['pbtseg_right_lung_source'][:6]}, L {out.meta['pbtseg_left_lung_source'][:6]}"
            if gt is not None:
                caption += f", Dice {dice(lung > 0, gt):.2f}"
            row.paste(tile(img, lung, gt, inf, caption), (i * TILE, 0))
        tiles.append(row)
    panel = Image.new("RGB", (3 * TILE, sum(t.height for t in tiles)))
    y = 0
    for t in tiles:
        panel.paste(t, (0, y))
        y += t.height
    atomic_write(args.out, lambda f: panel.save(f, format="PNG", optimize=True))
    print(f"saved {args.out} ({panel.width} x {panel.height})")


if __name__ == "__main__":
    main()
