"""Robust PBTSeg: a label-free lung segmentation in PBTSeg's spirit (``ALGORITHM.md`` sections 1, 8).

The paper's PBTSeg (:func:`artasyn.lungs.paper.pbtseg_lungs`) thresholds raw grey levels, so its
result depends on exposure and on dark air at the border; it keeps only the dark part of a lung
(bright consolidations fall outside), and it leaves a lung out when no dark component passes its
shape test. ``PBTSeg(mode="robust")`` runs :func:`robust_lungs`, which keeps PBTSeg's
progressive thresholding and shape test as the seed finder and adds, step by step:

0. **Body box.** The black frame around some radiographs (padding, collimation) is cut off
   (:func:`body_box`), so that the fractions below are of the body, not of the frame.
1. **Exposure normalisation.** The image is histogram-equalised with the grey-level
   distribution of the body box less a thin margin (``equalize_margin``, 5% of each side,
   so that borders and labels count little): the same anatomy gets the same grey levels
   whatever the exposure, window or pediatric/adult contrast.
2. **Reduced working size.** Everything below runs at ``work_fraction`` of the working size
   (128 x 128 for 256 x 256); the label map is brought back with nearest neighbours.
3. **Seeds: PBTSeg's thresholding on the equalised, border-brightened image.** The paper's
   border pre-step (:func:`artasyn.lungs.paper.brighten_border`) keeps dark air outside the body
   from passing as lung; then :func:`pbtseg_lungs` with the thresholds
   :data:`ROBUST_THRESHOLDS` (20, 30, ..., 140 on the equalised scale) and the paper's shape
   test (area, upright box, solidity, central centroid, border touch, side of the image). A
   side that this pass does not find gets a second pass with a relaxed shape test
   (:data:`RELAXED_TEST`: larger area, lower solidity, more border contact, wider band) on
   the image whitened outside the atlas region of step 3c (either lung ``>= atlas_pass``, 0.3
   of the healthy images) and in the outside air of step 3b: the dark components left lie
   where healthy lungs lie, and the shape test still applies. A side still not found gets a
   third pass, with the relaxed test, on the whole image with only its dark regions connected
   to the border (air around the body) whitened (:func:`blank_outside`). The second pass
   comes first because the third one, free to take soft tissue, leaks into the shoulders and
   axillae of diseased images (all three passes: source ``"threshold"``).
3b. **Outside air out of the seeds.** The air around the body is the darkest part of the
   equalised image (``<= air_level``, 30 of 255) connected to its border (before the border
   pre-step); it is removed from each seed, and the seed's largest 8-connected component
   kept: a seed that leaked into the air at a corner or above a shoulder loses the leak.
3c. **Growth inside a label-free lung atlas.** The atlas (:func:`load_atlas`, 64 x 64 per
   lung, made by ``bench/make_pbtseg_atlas.py`` from our own robust maps, without this step,
   of the healthy development images; no ground truth) gives, in the frame of the body box,
   the fraction of healthy images where a pixel is lung. Each seed takes in the components
   of ``equalised <= grow_level`` (140 of 255; outside air excluded) inside its side's atlas
   region (``>= atlas_min``, 0.4) that it touches (:func:`grow_in_atlas`): hazy lower and
   lateral zones that the seed's threshold left out come in, and a seed can only grow where
   healthy lungs lie. The level is 140 rather than 120 so that hazy opacities (COVID
   ground glass) come in too (measured on the development halves: non-COVID Dice 0.853 to
   0.860, COVID infection pixels inside 81.7% to 83.7%, healthy Dice 0.930 to 0.928).
4. **Lung field envelope.** Each seed is closed with a disk of radius ``closing_fraction`` of
   the width and its holes are filled: ribs, vessels and bright opacities enclosed by dark lung
   join the lung; the concavity of the heart border (wider than the disk) is kept. Then the
   seed's convex hull is added on the lateral side of that envelope (:func:`lateral_hull`, a
   convex prior cut at the envelope's medial edge row by row): opacities that bite into the
   lateral or lower lung come in, the heart does not.
5. **Symmetry completion.** A lung whose envelope is less than ``completion_ratio`` of its
   mirrored partner's area (typical of a consolidated lower lobe that PBTSeg leaves out) is
   completed with the mirror image of the other lung, on its own side of the midline and,
   in the rows it already spans, only lateral of its medial edge (the mirrored right lung
   would otherwise cover the heart beside a narrow left lung).
6. **Per-side fallbacks.** A side with no seed gets the mirror image of the other lung across
   the midline (the midpoint of the two lungs' centroids when both are found, else the brightest
   column of the mediastinum); with no seed at all both sides get a template lung: the
   atlas's half-probability region (step 3c), or without an atlas an ellipse at fixed
   fractions of the image.
7. **Edge refinement.** Each row of each lung becomes one interval whose ends move onto the
   image's own edges (:func:`refine_edges`): the lateral end to the strongest bright-to-dark
   step of the (lightly smoothed) equalised image within a few pixels outward (6 of 128: the
   seeds stop short of the rib cage's inner edge, by more where the periphery is opaque),
   the medial end to the strongest dark-to-bright step within a few pixels inward (the seeds
   spill over the heart and mediastinum), or outward in the top quarter of the lung (the
   apex reaches up beside the trachea); a lateral end moves
   further in, onto a much stronger step, when the seed leaked along the chest wall or into an
   axilla or arm. The ends are median-filtered over a few rows. Then each column's top end moves up to the strongest
   dark-to-bright step within a few pixels (the apex rises above the clavicle) and its bottom
   end up or down onto the strongest dark-to-bright step going down (the diaphragm: the
   seeds take in the stomach bubble and the dark recesses below the dome)
   (:func:`refine_top_bottom`).
8. **Clean-up.** The black frame left inside the body box (collimated corners, padding:
   ``<= dark_level`` in the raw image, connected to its border) is cut out of each lung, and
   each lung keeps its largest 8-connected component.
9. **Convex lateral edge.** On the component that step 8 keeps (the frame still cut out),
   each row's lateral end moves out onto the lung's convex hull, by at most ``hull_reach`` (1 of 128)
   (:func:`convex_lateral_edge`): the notches that consolidations against the chest wall
   leave in a dark-tissue segmentation close, while a leak cannot drag rows far out
   (measured on the development halves: COVID infection pixels inside 84.5% to 85.8%, Dice
   unchanged within 0.002 on the three covidquex sets).

The label map has PBTSeg's format: 0 background, 1 right lung (image-left), 2 left lung
(image-right, wins where they overlap). Every lung is present in a robust map; which step
produced each side is returned as its *source* (``"threshold"``, ``"mirror"``, ``"template"``).

Measured on ``../shared/data`` (``bench/bench_pbtseg.py``): see ``bench/results/pbtseg_modes.json``.

Example::

    >>> import numpy as np
    >>> from artasyn.lungs.robust import robust_lungs
    >>> img = np.full((256, 256), 200, np.uint8)      # bright body
    >>> img[60:180, 50:100] = 30                      # dark image-left lung field
    >>> right, left, sources = robust_lungs(img)
    >>> right.shape, bool(right[120, 75]), bool(left[120, 180]), sources
    ((256, 256), True, True, ('threshold', 'mirror'))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .paper import _convex_hull_rows, brighten_border, pbtseg_lungs
from .resample import resize_bilinear_uint8, resize_nearest

__all__ = [
    "ATLAS_PATH",
    "LUNG_SOURCES",
    "RELAXED_TEST",
    "ROBUST_THRESHOLDS",
    "blank_outside",
    "body_box",
    "close_and_fill",
    "convex_lateral_edge",
    "equalize_central",
    "grow_in_atlas",
    "outside_dark",
    "lateral_hull",
    "load_atlas",
    "refine_edges",
    "refine_top_bottom",
    "robust_lungs",
]

#: seed thresholds on the equalised scale: 20, 30, ..., 140 (inclusive)
ROBUST_THRESHOLDS: tuple[int, ...] = tuple(range(20, 141, 10))

#: the shape test of the second seed pass, for a side the first pass did not find
RELAXED_TEST: dict[str, float] = {
    "max_area_fraction": 0.2,
    "min_solidity": 0.5,
    "max_border_fraction": 0.3,
    "centroid_band_divisor": 8,
}

#: how each side of a robust map was obtained
LUNG_SOURCES = ("threshold", "mirror", "template")


def equalize_central(image: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Histogram equalisation of a 2-D uint8 image by the grey levels of its central box.

    The box leaves out ``margin`` of the height and of the width on each side. Each grey level
    ``g`` becomes ``round(255 * F(g))``, ``F`` the box's cumulative distribution.
    """
    height, width = image.shape
    r, c = int(height * margin), int(width * margin)
    box = image[r : height - r, c : width - c]
    cdf = np.cumsum(np.bincount(box.ravel(), minlength=256)).astype(np.float64)
    lut = np.rint(255.0 * cdf / max(cdf[-1], 1.0)).astype(np.uint8)
    return lut[image]


def body_box(image: np.ndarray, dark_level: int = 16, min_fraction: float = 0.1) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the image without its black frame (exclusive ends).

    The frame's rows and columns have fewer than ``min_fraction`` of their pixels above
    ``dark_level`` (a padded or collimated border; the body always has bright pixels). A box
    under a quarter of the image along either axis is not believed: the whole image is used.
    """
    height, width = image.shape
    bright = image > dark_level
    rows = np.flatnonzero(bright.mean(axis=1) >= min_fraction)
    cols = np.flatnonzero(bright.mean(axis=0) >= min_fraction)
    if rows.size == 0 or cols.size == 0:
        return 0, height, 0, width
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if bottom - top < height // 4 or right - left < width // 4:
        return 0, height, 0, width
    return top, bottom, left, right


def blank_outside(image: np.ndarray, level: int | None = 35) -> np.ndarray:
    """``image`` with its dark regions connected to the image border set to 255.

    The air around the body (and dark labels or padding at the edge) is the part of the
    ``image <= level`` mask 8-connected to the outermost rows and columns; whitening it keeps
    a relaxed shape test from taking it for a lung. ``level=None`` returns ``image``.
    """
    if level is None:
        return image
    outside = outside_dark(image, level)
    if not outside.any():
        return image
    out = image.copy()
    out[outside] = 255
    return out


def outside_dark(image: np.ndarray, level: int) -> np.ndarray:
    """The part of ``image <= level`` 8-connected to the outermost rows and columns (bool)."""
    labels, n = ndi.label(image <= level, structure=np.ones((3, 3), dtype=bool))
    edge = np.zeros(n + 1, dtype=bool)
    edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    edge[0] = False
    return edge[labels]


def close_and_fill(mask: np.ndarray, radius: float) -> np.ndarray:
    """Morphological closing of a 2-D bool mask with a disk of ``radius`` pixels, holes filled.

    The dilation and erosion are thresholds of Euclidean distance transforms (one pass each,
    whatever the radius), computed on the mask's bounding box padded by the radius (so that
    neither the box nor the image border erodes it).
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask.copy()
    pad = int(np.ceil(radius)) + 1
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    padded = np.pad(mask[top:bottom, left:right], pad)
    dilated = ndi.distance_transform_edt(~padded) <= radius
    closed = ndi.binary_fill_holes(ndi.distance_transform_edt(dilated) > radius)
    out = np.zeros_like(mask, dtype=bool)
    # the closing stays in the box: it only adds pixels between pixels of the mask
    out[top:bottom, left:right] = closed[pad:-pad, pad:-pad]
    return out


def lateral_hull(seed: np.ndarray, envelope: np.ndarray, side: int) -> np.ndarray:
    """``envelope`` plus the convex hull of ``seed`` on its lateral side (step 4).

    The hull (scikit-image ``convex_hull_image`` semantics, row by row) of the seed, one
    8-connected component, is cut in each row at the envelope's medial edge (its right-most
    column for the image-left lung, ``side`` 0; its left-most for ``side`` 1): concavities
    that opacities bite into the lateral and lower lung come in, the heart border stays out.
    """
    width = seed.shape[1]
    rows = np.flatnonzero(seed.any(axis=1))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    crop = seed[top:bottom]
    first = np.argmax(crop, axis=1)
    last = width - 1 - np.argmax(crop[:, ::-1], axis=1)
    lo, hi = _convex_hull_rows(first, last)
    env = envelope[top:bottom]
    has = env.any(axis=1)
    if side == 0:
        hi = np.minimum(hi, np.where(has, width - 1 - np.argmax(env[:, ::-1], axis=1), -1))
    else:
        lo = np.maximum(lo, np.where(has, np.argmax(env, axis=1), width))
    cols = np.arange(width)[None, :]
    out = envelope.copy()
    out[top:bottom] |= (cols >= lo[:, None]) & (cols <= hi[:, None])
    return out


def convex_lateral_edge(lung: np.ndarray, side: int, reach: int) -> np.ndarray:
    """``lung`` with each row's lateral end moved out onto the lung's convex hull, by at most
    ``reach`` pixels (step 9).

    The hull is scikit-image's ``convex_hull_image``, row by row, of the lung's row extents.
    A consolidation that sits against the chest wall leaves a notch in the lateral edge of a
    dark-tissue segmentation; the notch comes in, and (``reach`` bounding the move) a leak
    above the apex or into an axilla cannot drag whole rows out with it. The medial side is
    not touched (the heart's concavity is real).

    Args:
        lung: 2-D bool mask of one lung, one 8-connected component (a pixel in every row of its
            bounding box).
        side: 0 for the image-left lung (lateral end on the left), 1 for the image-right one.
        reach: the largest outward move, in pixels (``0``: ``lung`` unchanged).
    """
    rows = np.flatnonzero(lung.any(axis=1))
    if rows.size == 0 or reach <= 0:
        return lung
    width = lung.shape[1]
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    crop = lung[top:bottom]
    has = crop.any(axis=1)
    first = np.argmax(crop, axis=1)
    last = width - 1 - np.argmax(crop[:, ::-1], axis=1)
    lo, hi = _convex_hull_rows(first, last)
    cols = np.arange(width)[None, :]
    if side == 0:
        add = (cols >= np.maximum(lo, first - reach)[:, None]) & (cols < first[:, None])
    else:
        add = (cols <= np.minimum(hi, last + reach)[:, None]) & (cols > last[:, None])
    out = lung.copy()
    out[top:bottom] |= add & has[:, None]
    return out


def refine_edges(
    lung: np.ndarray,
    gradient: np.ndarray,
    side: int,
    lateral_reach: tuple[int, int] = (4, 1),
    medial_reach: tuple[int, int] = (6, 0),
    apex_medial_reach: tuple[int, int] = (2, 4),
    apex_fraction: float = 0.25,
    smooth_rows: int = 7,
    lateral_trim: int = 12,
    trim_ratio: float = 3.0,
) -> np.ndarray:
    """``lung`` with each row's lateral and medial end moved onto the image's edge (step 7).

    Each row of the lung becomes one interval. Its lateral end moves to the strongest
    bright-to-dark step (entering the lung from outside) within ``lateral_reach`` =
    ``(outward, inward)`` pixels of where it was; its medial end to the strongest
    dark-to-bright step (leaving the lung toward the mediastinum) within ``medial_reach`` =
    ``(inward, outward)`` pixels, or ``apex_medial_reach`` in the top ``apex_fraction`` of the
    lung's rows (the apex reaches up beside the trachea, the heart is lower down). A lateral end
    whose row holds, further in (up to ``lateral_trim`` pixels), a bright-to-dark step more than
    ``trim_ratio`` times as strong as the one found moves there instead: a seed that leaked
    along the chest wall, into an axilla or an arm, is cut back to the rib cage's strong inner
    edge. The new ends are median-filtered over ``smooth_rows`` rows.

    Args:
        lung: 2-D bool mask of one lung.
        gradient: horizontal derivative of the image (positive where it gets brighter to the
            right), same shape.
        side: 0 for the image-left lung (lateral end on the left), 1 for the image-right one.
    """
    width = lung.shape[1]
    rows = np.flatnonzero(lung.any(axis=1))
    if rows.size == 0:
        return lung
    crop = lung[rows]
    first = np.argmax(crop, axis=1)
    last = width - 1 - np.argmax(crop[:, ::-1], axis=1)
    out_dir = -1 if side == 0 else 1  # the lateral direction
    lateral, medial = (first, last) if side == 0 else (last, first)
    # the image gets brighter going laterally at the lateral end, medially at the medial one
    new_lateral = _strongest_step(lateral, gradient, rows, out_dir, lateral_reach, out_dir)
    if lateral_trim > lateral_reach[1]:
        deep = _strongest_step(lateral, gradient, rows, out_dir, (-lateral_reach[1] - 1, lateral_trim), out_dir)
        strong = out_dir * gradient[rows, deep] > trim_ratio * np.maximum(out_dir * gradient[rows, new_lateral], 0)
        new_lateral = np.where(strong, deep, new_lateral)
    new_medial = _strongest_step(medial, gradient, rows, -out_dir, medial_reach[::-1], -out_dir)
    apex = int(apex_fraction * rows.size)
    if apex > 0:
        new_medial[:apex] = _strongest_step(
            medial[:apex], gradient, rows[:apex], -out_dir, apex_medial_reach[::-1], -out_dir
        )
    size = max(1, int(smooth_rows))
    new_lateral = ndi.median_filter(new_lateral, size, mode="nearest")
    new_medial = ndi.median_filter(new_medial, size, mode="nearest")
    lo, hi = np.minimum(new_lateral, new_medial), np.maximum(new_lateral, new_medial)
    cols = np.arange(width)[None, :]
    out = lung.copy()
    out[rows] = (cols >= lo[:, None]) & (cols <= hi[:, None])
    return out


def refine_top_bottom(
    lung: np.ndarray,
    gradient: np.ndarray,
    top_reach: tuple[int, int] = (6, 0),
    bottom_reach: tuple[int, int] = (1, 4),
    smooth_cols: int = 5,
) -> np.ndarray:
    """``lung`` with each column's top and bottom end moved onto the image's edge (step 7).

    Unlike :func:`refine_edges`, the columns are not filled: only the pixels between a
    column's old and new end are added or removed. The top end moves to the strongest
    dark-to-bright step going up (into the neck and shoulder above the apex) within
    ``top_reach`` = ``(up, down)`` pixels, the bottom end to the strongest dark-to-bright step
    going down (onto the diaphragm) within ``bottom_reach`` = ``(down, up)`` pixels; the new
    ends are median-filtered over ``smooth_cols`` columns.

    Args:
        lung: 2-D bool mask of one lung.
        gradient: vertical derivative of the image (positive where it gets brighter
            downwards), same shape.
    """
    height = lung.shape[0]
    cols = np.flatnonzero(lung.any(axis=0))
    if cols.size == 0:
        return lung
    size = max(1, int(smooth_cols))
    rows = np.arange(height)[None, :]
    crop = lung[:, cols].T  # one row per column of the lung
    along = gradient.T
    last = height - 1 - np.argmax(crop[:, ::-1], axis=1)
    bottom = ndi.median_filter(_strongest_step(last, along, cols, 1, bottom_reach, 1), size, mode="nearest")
    crop = (crop & ~((rows > bottom[:, None]) & (rows <= last[:, None]))) | (
        (rows > last[:, None]) & (rows <= bottom[:, None])
    )
    first = np.argmax(crop, axis=1)
    top = ndi.median_filter(_strongest_step(first, along, cols, -1, top_reach, -1), size, mode="nearest")
    crop = (crop & ~((rows < top[:, None]) & (rows >= first[:, None]))) | (
        (rows < first[:, None]) & (rows >= top[:, None])
    )
    out = lung.copy()
    out[:, cols] = crop.T
    return out


def _strongest_step(
    ends: np.ndarray, gradient: np.ndarray, rows: np.ndarray, outward: int, reach: tuple[int, int], sign: int
) -> np.ndarray:
    """Per row, the column within ``reach`` = ``(outward, inward)`` pixels of ``ends`` (moving
    ``outward`` = -1 or +1 counts as outward) where ``sign * gradient`` is largest (ties: the
    column nearest the outermost)."""
    offsets = np.arange(reach[0], -reach[1] - 1, -1)
    cols = np.clip(ends[:, None] + outward * offsets[None, :], 0, gradient.shape[1] - 1)
    best = np.argmax(sign * gradient[rows[:, None], cols], axis=1)
    return cols[np.arange(rows.size), best]


#: the packaged lung atlas (``bench/make_pbtseg_atlas.py``)
ATLAS_PATH = Path(__file__).resolve().parents[1] / "data" / "pbtseg_atlas.npz"


@lru_cache(maxsize=1)
def load_atlas() -> np.ndarray:
    """The packaged atlas: ``2 x 64 x 64`` uint8, per lung the fraction (of 255) of healthy
    images where the pixel is lung, in the frame of :func:`body_box` (read once, cached)."""
    with np.load(ATLAS_PATH) as f:
        atlas = f["atlas"]
    atlas.setflags(write=False)
    return atlas


@lru_cache(maxsize=8)
def _packaged_atlas_at(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The packaged atlas resized to ``shape`` (bilinear), cached per shape."""
    out = tuple(resize_bilinear_uint8(a, shape) for a in load_atlas())
    for a in out:
        a.setflags(write=False)
    return out


def grow_in_atlas(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``seed`` plus the 8-connected components of ``allowed`` that it touches."""
    labels, n = ndi.label(allowed | seed, structure=np.ones((3, 3), dtype=bool))
    hit = np.zeros(n + 1, dtype=bool)
    hit[labels[seed]] = True
    hit[0] = False
    return hit[labels]


def _largest(mask: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected component of ``mask`` (``None`` when empty)."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return None
    return labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)


def _lateral_of(mask: np.ndarray, side: int) -> np.ndarray:
    """Per row, the columns on the lateral side of ``mask``'s medial edge, that edge included
    (``side`` 0: image-left lung, medial edge on the right); every column in a row ``mask``
    does not reach."""
    width = mask.shape[1]
    has = mask.any(axis=1)
    cols = np.arange(width)[None, :]
    if side == 0:
        edge = np.where(has, width - 1 - np.argmax(mask[:, ::-1], axis=1), width)
        return cols <= edge[:, None]
    edge = np.where(has, np.argmax(mask, axis=1), -1)
    return cols >= edge[:, None]


def _mediastinum_column(image: np.ndarray) -> float:
    """The brightest column of the central third (rows 1/4..3/4, smoothed): the midline.

    Ties (a flat profile) go to the column nearest the image centre."""
    height, width = image.shape
    profile = ndi.uniform_filter1d(image[height // 4 : 3 * height // 4].mean(axis=0), max(3, width // 16))
    cols = np.arange(width // 3, 2 * (width // 3))
    score = profile[cols] - 1e-3 * np.abs(cols + 0.5 - width / 2)
    return float(cols[int(np.argmax(score))])


def _template(shape: tuple[int, int], side: int, centre: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    """An elliptic template lung (``side`` 0: image-left, 1: image-right), fractions of the image."""
    height, width = shape
    rows = (np.arange(height)[:, None] + 0.5) / height
    cols = (np.arange(width)[None, :] + 0.5) / width
    cx = centre[1] if side == 0 else 1.0 - centre[1]
    return ((rows - centre[0]) / axes[0]) ** 2 + ((cols - cx) / axes[1]) ** 2 <= 1.0


def robust_lungs(
    image: np.ndarray,
    thresholds: Sequence[float] = ROBUST_THRESHOLDS,
    equalize_margin: float = 0.05,
    work_fraction: float = 0.5,
    max_area_fraction: float = 10000 / 65536,
    closing_fraction: float = 0.05,
    completion_ratio: float = 0.6,
    brighten: bool = True,
    crop_to_body: bool = True,
    dark_level: int = 16,
    min_body_fraction: float = 0.1,
    relaxed_test: Mapping[str, float] | None = RELAXED_TEST,
    outside_level: int | None = 35,
    template_centre: tuple[float, float] = (0.47, 0.29),
    template_axes: tuple[float, float] = (0.30, 0.14),
    air_level: int | None = 30,
    atlas: np.ndarray | None | str = "packaged",
    atlas_min: float = 0.4,
    grow_level: int = 140,
    atlas_clip: float | None = None,
    atlas_pass: float | None = 0.3,
    refine: bool = True,
    edge_sigma: float = 0.7 / 128,
    lateral_reach: tuple[float, float] = (6 / 128, 1 / 128),
    medial_reach: tuple[float, float] = (6 / 128, 0.0),
    apex_medial_reach: tuple[float, float] = (2 / 128, 4 / 128),
    apex_fraction: float = 0.25,
    edge_rows: float = 7 / 128,
    lateral_trim: float = 12 / 128,
    trim_ratio: float = 3.0,
    top_reach: tuple[float, float] = (6 / 128, 0.0),
    bottom_reach: tuple[float, float] = (1 / 128, 4 / 128),
    edge_cols: float = 5 / 128,
    hull_reach: float = 1 / 128,
) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """Robust lung fields of one 2-D uint8 image (steps 1 to 6 of the module docstring).

    Args:
        image: 2-D uint8 image, rows the vertical axis (the working size, e.g. 256 x 256).
        thresholds: seed thresholds on the equalised scale (increasing).
        equalize_margin: fraction of each side left out of the equalisation's box.
        work_fraction: the seeds and envelopes are computed at this fraction of the size.
        max_area_fraction: largest seed, as a fraction of the image (the paper's 10000 / 65536).
        relaxed_test: :func:`pbtseg_lungs` arguments of the second and third passes, for a side
            the first pass did not find (``None``: neither).
        outside_level: before the third pass, the dark regions (``<=`` this, equalised
            scale) connected to the border are whitened (:func:`blank_outside`; ``None``: not).
        closing_fraction: radius of the closing disk, as a fraction of the width.
        completion_ratio: a lung smaller than this fraction of its mirrored partner is
            completed with the partner's mirror image.
        brighten: apply the paper's border pre-step before the seed passes.
        crop_to_body, dark_level, min_body_fraction: work on :func:`body_box` (the image
            without its black frame) rather than the whole image; ``dark_level`` also bounds
            the black frame cut out of the lungs in step 8.
        air_level: step 3b: equalised grey level of the outside air removed from the seeds
            (``None``: not removed).
        atlas: step 3c: ``2 x h x w`` uint8 lung atlas (right, left; 255 = lung in every
            healthy image) in the body box's frame; ``"packaged"``: :func:`load_atlas`;
            ``None``: no atlas step.
        atlas_min: the atlas region of a lung is where the atlas is at least this fraction.
        grow_level: equalised grey level up to which a seed grows inside its atlas region.
        atlas_pass: the second seed pass (step 3) keeps the image where the atlas (either lung)
            is at least this fraction (``None``: no such pass).
        atlas_clip: if set, the final lungs are cut to where the atlas (either lung) exceeds
            this fraction (``None``: not cut).
        refine: steps 7 and 8 (:func:`refine_edges`, :func:`refine_top_bottom`, the clean-up):
            each lung's ends move onto the strongest step of the equalised image, smoothed by a
            Gaussian of ``edge_sigma`` (a fraction of the working width).
        lateral_reach, medial_reach, apex_medial_reach, apex_fraction, edge_rows: the reaches of
            :func:`refine_edges` as fractions of the working width, the median filter's length
            as a fraction of its height.
        lateral_trim, trim_ratio: how far in (a fraction of the working width) a lateral end
            looks for a step ``trim_ratio`` times stronger than the one it found
            (:func:`refine_edges`; ``0``: not).
        top_reach, bottom_reach: the reaches of :func:`refine_top_bottom` (after
            :func:`refine_edges`) as fractions of the working height, its median filter's
            length as a fraction of the working width.
        hull_reach: step 9 (:func:`convex_lateral_edge`, with ``refine``): how far (a fraction of
            the working width) each row's lateral end may move out onto the lung's convex hull.
        template_centre, template_axes: the template ellipse of the right lung (rows, columns),
            as fractions of the image; the left lung's is its mirror image.

    Returns:
        ``(right, left, sources)``: bool masks of the image's size (the right lung is
        image-left) and how each side was obtained, from :data:`LUNG_SOURCES`.
    """
    height, width = image.shape
    top, bottom, left, right = body_box(image, dark_level, min_body_fraction) if crop_to_body else (0, height, 0, width)
    work = (max(16, int(round(height * work_fraction))), max(16, int(round(width * work_fraction))))
    small = resize_bilinear_uint8(equalize_central(image[top:bottom, left:right], equalize_margin), work)
    plain = small
    if brighten:
        small = brighten_border(small)
    seeds = list(pbtseg_lungs(small, thresholds=thresholds, max_area_fraction=max_area_fraction))
    air = None if air_level is None else outside_dark(plain, air_level)
    if isinstance(atlas, str):
        atlas = _packaged_atlas_at(work)
    elif atlas is not None:
        atlas = [resize_bilinear_uint8(np.asarray(a, dtype=np.uint8), work) for a in atlas]
    # a side the first pass missed: first where healthy lungs lie, then anywhere but the outside air
    if atlas is not None and atlas_pass is not None and relaxed_test and (seeds[0] is None or seeds[1] is None):
        where = np.maximum(atlas[0], atlas[1]) >= 255.0 * atlas_pass
        masked = np.where(where if air is None else where & ~air, small, np.uint8(255))
        again = pbtseg_lungs(masked, thresholds=thresholds, **relaxed_test)
        seeds = [s if s is not None else a for s, a in zip(seeds, again)]
    if relaxed_test and (seeds[0] is None or seeds[1] is None):
        again = pbtseg_lungs(blank_outside(small, outside_level), thresholds=thresholds, **relaxed_test)
        seeds = [s if s is not None else a for s, a in zip(seeds, again)]
    if air is not None:
        seeds = [s if s is None or not (s & air).any() else _largest(s & ~air) for s in seeds]
    if atlas is not None:
        prob = [a >= 255.0 * atlas_min for a in atlas]
        dark = small <= grow_level
        if air is not None:
            dark &= ~air
        seeds = [s if s is None else grow_in_atlas(s, dark & prob[i]) for i, s in enumerate(seeds)]
    radius = closing_fraction * work[1]
    lungs = [None if s is None else lateral_hull(s, close_and_fill(s, radius), i) for i, s in enumerate(seeds)]
    sources = ["threshold" if s is not None else "" for s in seeds]
    cols = np.arange(work[1])
    if lungs[0] is not None and lungs[1] is not None:
        centroids = [float(m.sum(axis=0) @ cols) / max(int(m.sum()), 1) for m in lungs]
        midline = 0.5 * (centroids[0] + centroids[1])
    else:
        midline = _mediastinum_column(small)
    mirror_cols = np.clip(np.rint(2.0 * midline - cols).astype(np.int64), 0, work[1] - 1)
    if lungs[0] is not None and lungs[1] is not None:
        mirrored = [m[:, mirror_cols] for m in lungs]
        own_side = [cols[None, :] < midline, cols[None, :] >= midline]
        areas = [int(m.sum()) for m in lungs]
        for i in (0, 1):
            if areas[i] < completion_ratio * areas[1 - i]:
                add = mirrored[1 - i] & own_side[i] & _lateral_of(lungs[i], i)
                lungs[i] = close_and_fill(lungs[i] | add, radius)
    for i in (0, 1):
        if lungs[i] is None and lungs[1 - i] is not None and sources[1 - i] == "threshold":
            lungs[i], sources[i] = lungs[1 - i][:, mirror_cols], "mirror"
    for i in (0, 1):
        if lungs[i] is None:
            template = _template(work, i, template_centre, template_axes) if atlas is None else atlas[i] >= 128
            lungs[i], sources[i] = template, "template"
    if refine:
        smooth = ndi.gaussian_filter(plain.astype(np.float32), edge_sigma * work[1])
        gradient = ndi.sobel(smooth, axis=1)
        px = [tuple(int(round(f * work[1])) for f in r) for r in (lateral_reach, medial_reach, apex_medial_reach)]
        rows = int(round(edge_rows * work[0]))
        trim = int(round(lateral_trim * work[1]))
        lungs = [refine_edges(m, gradient, i, *px, apex_fraction, rows, trim, trim_ratio) for i, m in enumerate(lungs)]
        gradient = ndi.sobel(smooth, axis=0)
        px = [tuple(int(round(f * work[0])) for f in r) for r in (top_reach, bottom_reach)]
        lungs = [refine_top_bottom(m, gradient, *px, int(round(edge_cols * work[1]))) for m in lungs]
    if refine:  # step 8: the black frame left inside the body box is never lung; one piece per lung
        frame = outside_dark(resize_bilinear_uint8(image[top:bottom, left:right], work), dark_level)
        reach = int(round(hull_reach * work[1]))
        for i, m in enumerate(lungs):
            kept = _largest(m & ~frame)
            # step 9 on the one component kept (the hull wants every row of its box)
            lungs[i] = m if kept is None else convex_lateral_edge(kept, i, reach) & ~frame
    if atlas is not None and atlas_clip is not None:
        inside = np.maximum(atlas[0], atlas[1]) > 255.0 * atlas_clip
        lungs = [m & inside if (m & inside).any() else m for m in lungs]
    out = []
    for m in lungs:
        full = np.zeros((height, width), dtype=bool)
        full[top:bottom, left:right] = resize_nearest(m.astype(np.uint8), (bottom - top, right - left)) > 0
        out.append(full)
    return out[0], out[1], (sources[0], sources[1])
