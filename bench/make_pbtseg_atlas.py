"""Build the label-free lung atlas of ``PBTSeg(mode="robust")`` (``artasyn/data/pbtseg_atlas.npz``).

The atlas is our own product, made from our own segmentations, never from ground-truth masks:
``robust_lungs(..., atlas=None, refine=False)`` (the robust mode without its atlas steps and
without the edge refinement and clean-up of steps 7 and 8: an atlas from refined maps gave no
gain) runs on the healthy images of the development half (``crc32(stem) % 2 == 0``) of
``covidquex_normal_lung``, ``nih_nofinding_normal`` and ``zhanglab_train_normal``; the images
where both lungs come from the seeds (no mirror, no template) are kept. Each lung mask, in the
frame of :func:`body_box` (the image without its black frame), is resized to 64 x 64; the atlas
is, per pixel and per lung, the fraction of those images where it is lung, stored as uint8
(0..255) with the count of images.

    OMP_NUM_THREADS=1 PYTHONPATH=transforms python bench/make_pbtseg_atlas.py
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from bench_pbtseg import SETS, image_paths, is_dev, read_gray  # noqa: E402

from artasyn.lungs.pbtseg import resize_bilinear_uint8, resize_nearest  # noqa: E402
from artasyn.lungs.robust import body_box, robust_lungs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))  # the bundle's own code, imported as ``scripts``

from scripts.utils import atomic_write  # noqa: E402

ATLAS_SETS = ("covidquex_normal_lung", "nih_nofinding_normal", "zhanglab_train_normal")
ATLAS_SIZE = (64, 64)


def main() -> None:
    data = Path(os.environ.get("ARTASYN_SHARED_DATA", ROOT.parent / "shared" / "data"))
    total = np.zeros((2, *ATLAS_SIZE), np.float64)
    count = 0
    for name in ATLAS_SETS:
        for path in image_paths(data / SETS[name][0]):
            if not is_dev(path.stem):
                continue
            img = resize_bilinear_uint8(read_gray(path)[0], (256, 256))
            right, left, sources = robust_lungs(img, atlas=None, refine=False)
            if sources != ("threshold", "threshold"):
                continue
            top, bottom, lo, hi = body_box(img)
            for i, m in enumerate((right, left)):
                total[i] += resize_nearest(m[top:bottom, lo:hi].astype(np.uint8), ATLAS_SIZE)
            count += 1
    atlas = np.rint(255.0 * total / count).astype(np.uint8)
    out = ROOT / "transforms" / "artasyn" / "data" / "pbtseg_atlas.npz"
    atomic_write(
        out, lambda f: np.savez_compressed(f, atlas=atlas, n_images=np.int64(count), sets=np.array(ATLAS_SETS))
    )
    print(f"{count} images -> {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
