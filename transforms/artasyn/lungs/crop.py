"""Cropping a radiograph to its lungs, so that every image reaches the network framed alike.

Collections frame the chest differently: in ZhangLab, the lungs of the official test split fill
80 % of the image's height, those of the training normals 71 % (``bench/zhanglab_shift.py``).
A detector trained on healthy images of one framing flags the other, healthy or not.
:class:`LungBoxCrop` crops a ``1 x H x W`` radiograph to the box around the lungs that robust
PBTSeg finds (it always returns both lungs), widened by ``margin`` of the box's height above
and below and of its width left and right, and clipped to the image. Put it right after loading,
before the resize to the working size.

Both transforms are MONAI's :class:`~monai.transforms.CropForeground` /
:class:`~monai.transforms.CropForegroundd` with the lungs as the foreground, so they trace
themselves on a ``MetaTensor`` and ``Invertd`` puts a map or a mask back where it came from.
:class:`LungBoxCropd` crops every key by the box of ``source_key`` and records the box in
``d[start_coord_key]`` and ``d[end_coord_key]`` (rows, columns; the end exclusive, int64
tensors); with ``margin=None`` it does nothing (the bundle's ``lung_box_margin``: 0.08 in
``cpu.json``; ``null`` in ``train.json``, the paper's framing, and in ``lesions.json``).

Example::

    >>> import numpy as np
    >>> from artasyn.lungs.crop import LungBoxCrop
    >>> img = np.full((1, 200, 160), 220.0, np.float32)
    >>> img[0, 50:150, 30:70], img[0, 50:150, 90:130] = 40.0, 40.0    # two dark lungs
    >>> LungBoxCrop(margin=0.1, pbtseg_size=None).compute_bounding_box(img)
    (array([38, 18]), array([162, 142]))
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import CropForeground, CropForegroundd
from monai.utils import PytorchPadMode

from ..base import source_name
from .pbtseg import PBTSeg

__all__ = ["LungBoxCrop", "LungBoxCropd", "LungBoxCropD", "LungBoxCropDict", "lung_box"]

logger = logging.getLogger(__name__)


def lung_box(lungs: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Start and end (exclusive) of the box around ``lungs > 0`` (``H x W``), widened by
    ``margin`` of its own height and width on each side and clipped to the image; ``None`` when
    there are no lungs."""
    rows, cols = np.nonzero(lungs)
    if rows.size == 0:
        return None
    height, width = lungs.shape
    top, bottom = int(rows.min()), int(rows.max()) + 1
    left, right = int(cols.min()), int(cols.max()) + 1
    pad_rows, pad_cols = margin * (bottom - top), margin * (right - left)
    start = np.array([max(0, round(top - pad_rows)), max(0, round(left - pad_cols))])
    end = np.array([min(height, round(bottom + pad_rows)), min(width, round(right + pad_cols))])
    return start, end


class LungBoxCrop(CropForeground):
    """Crop a ``1 x H x W`` radiograph (grey levels 0..255) to its lungs plus a margin.

    The lungs come from ``PBTSeg(mode="robust", spatial_size=pbtseg_size)``, which falls back
    to mirrored or template lungs, so every image gets a box (a flat image: the template's).
    Should the segmenter still return none, the whole image is kept and a warning names the file.
    """

    def __init__(self, margin: float = 0.08, pbtseg_size: int | Sequence[int] | None = 256, lazy: bool = False):
        """
        Args:
            margin: added above and below the lung box as a fraction of its height, left and
                right as a fraction of its width (with 0.08 the crop keeps at least 97 % of the
                ground-truth lung of every healthy COVID-QU-Ex radiograph; diseased lungs that
                robust PBTSeg falls short of can lose more).
            pbtseg_size: PBTSeg's working size (the paper's 256; ``None``: the image's own).
            lazy: MONAI's lazy resampling flag.
        """
        if margin < 0:
            raise ValueError(f"LungBoxCrop: margin must be >= 0, got {margin}")
        super().__init__(allow_smaller=True, mode=PytorchPadMode.CONSTANT, lazy=lazy)
        self.margin = margin
        self.pbtseg = PBTSeg(spatial_size=pbtseg_size, mode="robust")

    def compute_bounding_box(self, img) -> tuple[np.ndarray, np.ndarray]:
        lungs, _ = self.pbtseg.segment(img)
        box = lung_box(np.asarray(lungs)[0], self.margin)
        if box is None:
            logger.warning("LungBoxCrop: no lungs in %s; the whole image is kept", source_name(img))
            return np.zeros(2, dtype=np.int64), np.asarray(img.shape[1:], dtype=np.int64)
        return box


class LungBoxCropd(CropForegroundd):
    """Dictionary-based :class:`LungBoxCrop`: crops every key by the lung box of ``source_key``."""

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str = "image",
        margin: float | None = 0.08,
        pbtseg_size: int | Sequence[int] | None = 256,
        start_coord_key: str | None = "lung_box_start",
        end_coord_key: str | None = "lung_box_end",
        allow_missing_keys: bool = False,
        lazy: bool = False,
    ) -> None:
        """
        Args:
            keys: the keys to crop (the image, and any map or mask of the same size).
            source_key: the image whose lungs give the box.
            margin, pbtseg_size: as for :class:`LungBoxCrop`; ``margin=None``: no crop, the data
                pass unchanged and no box is recorded.
            start_coord_key, end_coord_key: where to record the box (``None``: not recorded).
            allow_missing_keys: don't raise if a key is missing.
            lazy: MONAI's lazy resampling flag.
        """
        super().__init__(
            keys,
            source_key=source_key,
            start_coord_key=start_coord_key,
            end_coord_key=end_coord_key,
            allow_missing_keys=allow_missing_keys,
            lazy=lazy,
        )
        self.margin = margin
        if margin is not None:
            self.cropper = LungBoxCrop(margin=margin, pbtseg_size=pbtseg_size, lazy=lazy)

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        if self.margin is None:
            return dict(data)
        d = super().__call__(data, lazy=lazy)
        for key in (self.start_coord_key, self.end_coord_key):
            if key is not None:
                d[key] = torch.as_tensor(np.asarray(d[key]), dtype=torch.int64)
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        return dict(data) if self.margin is None else super().inverse(data)


LungBoxCropD = LungBoxCropDict = LungBoxCropd
