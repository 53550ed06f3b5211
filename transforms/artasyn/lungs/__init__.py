"""Finding the lungs without labels: PBTSeg (``docs/method.md`` section 1).

- :mod:`artasyn.lungs.paper`: the authors' progressive binary thresholding
  (:func:`pbtseg_lungs`) and its border pre-step (:func:`brighten_border`).
- :mod:`artasyn.lungs.robust`: the robust label-free segmentation of ``PBTSeg(mode="robust")``
  (:func:`robust_lungs`), built on the paper's thresholding.
- :mod:`artasyn.lungs.resample`: resizing with OpenCV's semantics, shared by both.
- :mod:`artasyn.lungs.pbtseg`: the MONAI transforms :class:`PBTSeg` and :class:`PBTSegd`.
- :mod:`artasyn.lungs.crop`: :class:`LungBoxCrop` and :class:`LungBoxCropd`, a radiograph
  cropped to the box around its robust PBTSeg lungs (one framing for every image).

Example::

    >>> import numpy as np
    >>> from artasyn.lungs import PBTSeg
    >>> img = np.full((1, 128, 128), 200, np.uint8)
    >>> img[0, 30:90, 25:50], img[0, 30:90, 78:103] = 30, 30
    >>> sorted(np.unique(PBTSeg(spatial_size=None)(img)).tolist())
    [0, 1, 2]
"""

from .crop import LungBoxCrop, LungBoxCropD, LungBoxCropd, LungBoxCropDict, lung_box
from .paper import brighten_border, pbtseg_lungs
from .pbtseg import PBTSEG_MODES, PBTSeg, PBTSegD, PBTSegd, PBTSegDict
from .resample import resize_bilinear_uint8, resize_nearest
from .robust import robust_lungs

__all__ = [
    "LungBoxCrop",
    "LungBoxCropD",
    "LungBoxCropDict",
    "LungBoxCropd",
    "PBTSEG_MODES",
    "PBTSeg",
    "PBTSegD",
    "PBTSegDict",
    "PBTSegd",
    "brighten_border",
    "lung_box",
    "pbtseg_lungs",
    "resize_bilinear_uint8",
    "resize_nearest",
    "robust_lungs",
]
