"""The files real folders contain besides good radiographs: the fault battery's inputs.

:func:`write_bad_files` writes the eleven cases of the battery into a folder, each named for what it
is; :data:`EXPECTED` says what the bundle does with each (``rejected`` with a reason that
contains the given text, or ``accepted`` with a conversion note). Good images come from
:func:`write_good_images`: real radiographs when the shared data set is there, otherwise
procedural phantoms (``artasyn.phantom``), so CI without data still runs the battery.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: file name -> (what the bundle does, a fragment of the reason / note it gives)
EXPECTED = {
    "zero_bytes.png": ("rejected", "empty file"),
    "text_named.png": ("rejected", "cannot identify image file"),
    "truncated.png": ("rejected", "runcated"),
    "truncated.jpg": ("rejected", "truncated"),
    "gray_alpha_la.png": ("accepted", "alpha"),
    "palette.png": ("accepted", "palette"),
    "twelve_bit_in_16.png": ("accepted", ""),
    "nan_values.nii.gz": ("rejected", "non-finite"),
    "rgb_hw3.nii.gz": ("rejected", "not a 2-D"),
    "one_pixel.png": ("rejected", "smaller than"),
    "constant.png": ("rejected", "constant"),
}


def _radiograph(size: int, seed: int) -> np.ndarray:
    from artasyn.phantom import make_phantom

    return make_phantom(size, seed=seed)["image"]


def write_bad_files(folder: str | Path, size: int = 64, seed: int = 100) -> dict[str, Path]:
    """Write the eleven cases of :data:`EXPECTED` into ``folder``; returns name -> path."""
    import nibabel as nib
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gray = _radiograph(size, seed)
    paths = {name: folder / name for name in EXPECTED}
    paths["zero_bytes.png"].write_bytes(b"")
    paths["text_named.png"].write_text("this is not an image\n")
    Image.fromarray(gray).save(folder / "_full.png")
    data = (folder / "_full.png").read_bytes()
    paths["truncated.png"].write_bytes(data[: len(data) * 2 // 3])
    (folder / "_full.png").unlink()
    Image.fromarray(np.stack([gray] * 3, -1)).save(folder / "_full.jpg", quality=90)
    data = (folder / "_full.jpg").read_bytes()
    paths["truncated.jpg"].write_bytes(data[: len(data) // 2])
    (folder / "_full.jpg").unlink()
    alpha = np.full_like(gray, 255)
    alpha[: size // 8] = 0
    Image.fromarray(np.stack([gray, alpha], -1), mode="LA").save(paths["gray_alpha_la.png"])
    Image.fromarray(np.stack([gray] * 3, -1)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(
        paths["palette.png"]
    )
    Image.fromarray((gray.astype(np.uint32) * 4095 // 255).astype(np.uint16)).save(paths["twelve_bit_in_16.png"])
    nan = gray.astype(np.float32)
    nan[size // 2, size // 2] = np.nan
    nan[0, 0] = np.inf
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(paths["nan_values.nii.gz"]))
    nib.save(nib.Nifti1Image(np.stack([gray] * 3, -1).astype(np.float32), np.eye(4)), str(paths["rgb_hw3.nii.gz"]))
    Image.fromarray(np.array([[128]], np.uint8)).save(paths["one_pixel.png"])
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(paths["constant.png"])
    return paths


def write_good_images(folder: str | Path, n: int = 10, size: int = 64, real: Path | None = None, offset: int = 0):
    """``n`` good radiographs in ``folder``: real ones from ``real`` (a folder of PNGs) if given, else phantoms."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    if real is not None:
        sources = sorted(Path(real).glob("*.png"))[offset : offset + n]
        for src in sources:
            dst = folder / f"good_{src.stem}.png"
            dst.write_bytes(src.read_bytes())
            out.append(dst)
        return out
    for i in range(n):
        dst = folder / f"good_{offset + i:02d}.png"
        Image.fromarray(_radiograph(size, offset + i)).save(dst)
        out.append(dst)
    return out
