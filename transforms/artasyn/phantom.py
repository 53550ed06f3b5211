"""Procedural chest X-ray phantoms: the embedded default data set.

So that the bundle trains and evaluates offline with no user data, this module draws
synthetic frontal chest radiographs with the anatomy that PBTSeg (``docs/method.md``
section 1) and the anomaly synthesis (section 2) rely on: two dark lung fields
(image-left is the patient's right lung, label 1; image-right the left lung, label 2)
inside a brighter body, crossed by bright posterior ribs and the clavicles, with the heart
and mediastinum shadows between them, the diaphragm domes below, darker air outside the
body, a smooth intensity variation and noise. Shape, position and contrast vary with the
seed. A "diseased" phantom has the same anatomy as the healthy one of the same seed plus
opacities: brighter, blurry, lumpy blobs (1 to 4, mask radius about 2 to 9 % of the image side)
inside the lungs, with their exact mask (the test set of section 4).

The intensity budget is chosen for PBTSeg's thresholds ``img <= t``, ``t = 50..160``: lung
fields stay below about 150 (ribs included) and the body around them above about 165, so
each lung is one dark component of 8 to 13 % of the image that does not leak into the
body or the air below ``t = 160``. Every length is a fraction of ``size``.

Example::

    >>> from artasyn.phantom import make_phantom
    >>> ph = make_phantom(size=128, diseased=True, seed=3)
    >>> ph["image"].shape, ph["image"].dtype, sorted(set(ph["lungs"].ravel().tolist()))
    ((128, 128), dtype('uint8'), [0, 1, 2])
    >>> bool((ph["lesion"].astype(bool) & (ph["lungs"] == 0)).any())
    False

:func:`generate_phantom_dataset` writes a folder in the authors' layout
(``train/healthy``, ``test/healthy``, ``test/diseased``, ``test/diseased_mask``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["make_phantom", "generate_phantom_dataset", "PHANTOM_VERSION"]

logger = logging.getLogger(__name__)

#: Bump whenever the drawing changes, so that cached data sets are regenerated.
PHANTOM_VERSION = "1"
_MARKER = ".artasyn_phantoms.json"


def _as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _smooth_noise(rng: np.random.Generator, size: int, sigma_frac: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma_frac * size``."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=max(sigma_frac * size, 0.5), mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lung_shape(yy, xx, rng, cx, cy, ax, ay, side):
    """Binary lung field: a lumpy, medially-leaning ellipse with a flattened diaphragm dome.

    ``side`` is -1 for the image-left (right) lung, +1 for the image-right (left) lung.
    """
    lean = rng.uniform(0.15, 0.3)  # apex leans toward the midline
    dy = (yy - cy) / ay
    dx = (xx - cx) / ax + side * lean * np.minimum(dy, 0.0)  # top half bends medially
    theta = np.arctan2(dy, dx * -side)  # theta measured from the lateral side
    radius = np.ones_like(dy)
    for k in (2, 3, 4):
        radius = radius + rng.uniform(-0.04, 0.04) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    inside = np.hypot(dx, dy) < radius
    # diaphragm dome: cut the bottom with a curve highest near the lung's middle
    dome_top = cy + ay * rng.uniform(0.72, 0.85)
    dome = dome_top + 0.05 * ((xx - cx) / ax) ** 2
    return inside & (yy < dome)


def _draw_healthy(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Float image (0..255, before noise) and lung label map of one healthy phantom."""
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    px = 1.0 / size  # one pixel, in fractions

    # --- global geometry
    mid = 0.5 + rng.uniform(-0.02, 0.02)
    cy = rng.uniform(0.44, 0.49)
    ay = rng.uniform(0.26, 0.3)
    ax = rng.uniform(0.12, 0.135)
    med_hw = rng.uniform(0.06, 0.08)  # mediastinum half-width
    chest_hw = rng.uniform(0.43, 0.5)  # body half-width at chest level
    neck_hw = rng.uniform(0.1, 0.14)
    shoulder_top = rng.uniform(0.0, 0.04)
    shoulder_len = rng.uniform(0.08, 0.14)

    # --- body outline and soft tissue
    hw = neck_hw + (chest_hw - neck_hw) * _smoothstep((yy - shoulder_top) / shoulder_len)
    body_soft = ndimage.gaussian_filter((np.abs(xx - mid) < hw).astype(np.float64), 2.0 * size / 256)
    air = rng.uniform(10, 35)
    tissue = rng.uniform(180, 198) + 12.0 * _smoothstep((yy - 0.7) / 0.25)  # abdomen brighter
    tissue = tissue - 8.0 * np.exp(-(((np.abs(xx - mid) - hw) / 0.05) ** 2))  # thinner tissue at the flanks
    img = air + (tissue - air) * body_soft

    # --- mediastinum, spine, heart, trachea (all bright, between the lungs)
    img += 18.0 * np.exp(-(((xx - mid) / (med_hw * 1.2)) ** 4)) * body_soft
    img += 10.0 * np.exp(-(((xx - mid) / 0.03) ** 2)) * body_soft  # spine
    hcx = mid + rng.uniform(0.04, 0.08)
    hcy = cy + ay * rng.uniform(0.42, 0.55)
    hax, hay = rng.uniform(0.12, 0.15), rng.uniform(0.1, 0.13)
    heart = ((xx - hcx) / hax) ** 2 + ((yy - hcy) / hay) ** 2 < 1.0
    img += 12.0 * ndimage.gaussian_filter(heart.astype(np.float64), 3.0 * size / 256) * (1.0 - 0.3 * (yy - hcy) / hay)
    img -= 10.0 * np.exp(-(((xx - mid) / 0.012) ** 2)) * _smoothstep((cy - yy) / 0.2)  # faint trachea

    # --- lungs
    gap = med_hw + ax
    right = _lung_shape(yy, xx, rng, mid - gap - rng.uniform(0.0, 0.02), cy, ax, ay, side=-1)
    left = _lung_shape(
        yy,
        xx,
        rng,
        mid + gap + rng.uniform(0.0, 0.02),
        cy + rng.uniform(0.0, 0.02),
        ax * rng.uniform(0.9, 1.0),
        ay,
        side=+1,
    )
    right &= ~heart
    left &= ~heart
    for lung in (right, left):  # keep one component each (the heart may cut a sliver off)
        lab, n = ndimage.label(lung)
        if n > 1:
            keep = 1 + int(np.argmax(ndimage.sum(lung, lab, index=np.arange(1, n + 1))))
            lung &= lab == keep
    lungs = np.zeros((size, size), np.uint8)
    lungs[right] = 1
    lungs[left] = 2

    # lung density: dark, brighter toward the hilum and the base, vessel-like texture
    lung_any = lungs > 0
    lung_base = rng.uniform(35, 60)
    hilum = np.exp(-(((np.abs(xx - mid) - med_hw - 0.02) / 0.08) ** 2 + ((yy - cy) / 0.15) ** 2))
    lung_val = (
        lung_base
        + rng.uniform(8, 16) * hilum
        + 8.0 * _smoothstep((yy - cy) / (0.8 * ay))
        + 5.0 * _smooth_noise(rng, size, 0.01)
    )
    lung_soft = ndimage.gaussian_filter(lung_any.astype(np.float64), 1.0 * size / 256)
    img = img * (1.0 - lung_soft) + lung_val * lung_soft

    # --- posterior ribs: bright arcs from the spine, rising a little laterally, then
    # curving down along the chest wall; fainter over the soft tissue than over the lungs
    rib_amp = rng.uniform(22, 34)
    rib_field = np.zeros_like(img)
    n_ribs = 10
    spacing = (2.0 * ay * 0.95) / n_ribs
    rib_half = spacing * rng.uniform(0.26, 0.34)
    start = cy - ay + spacing * 0.3
    tilt = rng.uniform(0.1, 0.25)
    for side in (-1.0, 1.0):
        u = np.clip(side * (xx - mid), 0.0, None)  # lateral distance from the midline
        curve = -tilt * u + 2.2 * np.clip(u - 0.18, 0, None) ** 2
        on_side = _smoothstep((u - 0.03) / 0.03) * (1.0 - _smoothstep((u - hw + 0.03) / 0.03))
        for k in range(n_ribs):
            y0 = start + k * spacing + rng.uniform(-0.12, 0.12) * spacing
            d = (yy - y0 - curve) / rib_half
            rib = np.exp(-(d**4)) * (0.8 + 0.2 * np.exp(-(((np.abs(d) - 0.8) / 0.25) ** 2)))
            rib_field = np.maximum(rib_field, rib * on_side)
    rib_field *= _smoothstep((yy - (cy - ay - 0.06)) / 0.05) * (1.0 - _smoothstep((yy - (cy + ay + 0.04)) / 0.05))
    img += rib_amp * rib_field * (0.35 + 0.65 * lung_soft) * body_soft

    # --- clavicles: bright bars across the apices, rising laterally
    clav_y = cy - ay + rng.uniform(0.0, 0.04)
    for side in (-1.0, 1.0):
        u = side * (xx - mid)
        line = clav_y - 0.2 * (u - 0.05)
        bar = (
            np.exp(-(((yy - line) / (0.018 + 2 * px)) ** 2))
            * _smoothstep((u - 0.04) / 0.03)
            * (1.0 - _smoothstep((u - 0.36) / 0.04))
        )
        img += rng.uniform(18, 26) * bar * body_soft

    # keep the lung fields under the PBTSeg leak level, the body above it
    cap = 148.0
    img = np.where(lung_soft > 0.5, np.minimum(img, cap), img)

    # smooth multiplicative variation (exposure, patient thickness)
    img *= 1.0 + 0.03 * _smooth_noise(rng, size, 0.2)
    params = {"mid": mid, "cy": cy, "ay": ay}
    return img, lungs, params


def _draw_lesions(
    size: int, lungs: np.ndarray, rng: np.random.Generator, n_range=(1, 4)
) -> tuple[np.ndarray, np.ndarray]:
    """Opacity intensity field and its exact binary mask, inside the lungs."""
    grid = np.arange(size, dtype=np.float64)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    ys, xs = np.nonzero(lungs)
    lump = _smooth_noise(rng, size, 0.02)
    field = np.zeros((size, size))
    n = int(rng.integers(n_range[0], n_range[1] + 1))
    for _ in range(n):
        i = int(rng.integers(len(ys)))
        r = float(np.exp(rng.uniform(np.log(0.025), np.log(0.11)))) * size  # several sizes, log-uniform
        ry, rx = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.7, 1.3)
        ang = rng.uniform(0, np.pi)
        dy, dx = yy - ys[i], xx - xs[i]
        a = (dy * np.cos(ang) + dx * np.sin(ang)) / ry
        b = (-dy * np.sin(ang) + dx * np.cos(ang)) / rx
        field = np.maximum(field, np.exp(-(a**2 + b**2)) * (1.0 + 0.25 * lump))
    mask = (field > 0.5) & (lungs > 0)
    amp = rng.uniform(45, 85)
    # full density where field > 0.7, fading to nothing at 0.3: the mask (0.5) is the mid-edge
    density = _smoothstep((field - 0.3) / 0.4) * (0.85 + 0.15 * np.clip(field - 0.7, 0, 1))
    soft = ndimage.gaussian_filter(density * (lungs > 0), 1.5 * size / 256)
    return amp * soft, mask


def make_phantom(
    size: int = 256,
    diseased: bool = False,
    seed: int | np.random.Generator | None = None,
    noise_std: float = 3.0,
    n_lesions: tuple[int, int] = (1, 4),
) -> dict[str, np.ndarray]:
    """Draw one synthetic chest X-ray.

    Args:
        size: image side in pixels (H = W = size); every length scales with it.
        diseased: add 1..4 opacities inside the lungs (``n_lesions`` sets the range).
        seed: int, ``numpy.random.Generator`` or None. With an int, the diseased phantom
            of a seed has exactly the anatomy (and noise) of the healthy phantom of that seed.
        noise_std: standard deviation of the additive Gaussian noise, in gray levels.
        n_lesions: inclusive range of the number of opacities of a diseased phantom.

    Returns:
        dict with ``image`` (uint8 H x W, the radiograph), ``lesion`` (uint8 H x W, 1 inside
        an opacity, all 0 when healthy) and ``lungs`` (uint8 H x W, 0 background, 1 right
        lung = image-left, 2 left lung = image-right; the visible lung fields, heart excluded).
    """
    if size < 32:
        raise ValueError(f"make_phantom: size must be >= 32, got {size}")
    rng = _as_rng(seed)
    img, lungs, _ = _draw_healthy(size, rng)
    noise = rng.standard_normal((size, size)) * noise_std
    lesion = np.zeros((size, size), np.uint8)
    if diseased:
        opacity, mask = _draw_lesions(size, lungs, rng, n_lesions)
        img = img + opacity
        lesion[mask] = 1
    img = ndimage.gaussian_filter(img, 0.6 * size / 256) + noise
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return {"image": image, "lesion": lesion, "lungs": lungs}


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def generate_phantom_dataset(
    root: str | os.PathLike,
    n_train: int = 64,
    n_test_healthy: int = 16,
    n_test_diseased: int = 16,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write a phantom data set in the authors' folder layout, once.

    Layout: ``<root>/train/healthy/*.png``, ``<root>/test/healthy/*.png``,
    ``<root>/test/diseased/*.png`` and ``<root>/test/diseased_mask/*.png`` (lesion masks,
    values 0/255, same file name as the image). Files are 8-bit grayscale PNGs named
    ``phantom_00000.png``.

    The folder is built in a temporary sibling and renamed into place, so a reader never
    sees a half-written set. A marker file records the generator version and the
    arguments; an existing ``root`` with a matching marker is reused as is, one with a
    different marker is replaced, and a non-empty ``root`` without a marker is refused.

    Returns:
        ``Path(root)``.
    """
    root = Path(root)
    params = {
        "generator": "artasyn.phantom",
        "version": PHANTOM_VERSION,
        "n_train": int(n_train),
        "n_test_healthy": int(n_test_healthy),
        "n_test_diseased": int(n_test_diseased),
        "size": int(size),
        "seed": int(seed),
    }

    def matches(folder: Path) -> bool:
        try:
            return json.loads((folder / _MARKER).read_text()) == params
        except (OSError, ValueError):
            return False

    if matches(root):
        return root
    if root.exists() and any(root.iterdir()) and not (root / _MARKER).exists():
        raise FileExistsError(f"generate_phantom_dataset: {root} exists, is not empty and is not a phantom data set")

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        # one independent stream per split, so changing one count does not change the others
        streams = np.random.SeedSequence(seed).spawn(3)
        splits = [
            ("train/healthy", n_train, False, streams[0]),
            ("test/healthy", n_test_healthy, False, streams[1]),
            ("test/diseased", n_test_diseased, True, streams[2]),
        ]
        for sub, count, diseased, ss in splits:
            (tmp / sub).mkdir(parents=True)
            if diseased:
                (tmp / "test/diseased_mask").mkdir(parents=True)
            for i, child in enumerate(ss.spawn(count)):
                ph = make_phantom(size=size, diseased=diseased, seed=np.random.default_rng(child))
                name = f"phantom_{i:05d}.png"
                _save_png(tmp / sub / name, ph["image"])
                if diseased:
                    _save_png(tmp / "test/diseased_mask" / name, ph["lesion"] * np.uint8(255))
        (tmp / _MARKER).write_text(json.dumps(params, indent=1))

        if root.exists():  # an outdated phantom set (or an empty folder): move it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / "set")
            shutil.rmtree(old, ignore_errors=True)
            logger.info("generate_phantom_dataset: replaced outdated phantom set at %s", root)
        try:
            os.replace(tmp, root)
        except OSError:
            if matches(root):  # another process finished the same set first
                return root
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
