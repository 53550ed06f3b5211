"""Bundle transforms of the evaluation data: optional lesion masks and image labels.

- :class:`LoadMaskd`: loads ``d["mask"]`` when it names a file (read like the image, by
  :func:`scripts.loading.read_radiograph`: rows first), else an empty mask of the image's
  size; records ``d["has_mask"]``. Every item gets the same keys and types, so batches of
  images with and without masks collate.
- :class:`AsLabeld`: an image label (0 healthy, 1 diseased) as a float tensor of shape ``(1,)``.

The images themselves are loaded by :class:`scripts.loading.LoadChestXRayd` and scored by
:class:`artasyn.scoring.AnomalyScored` (``docs/method.md`` section 4).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

from .loading import read_radiograph

__all__ = ["AsLabeld", "LoadMaskd"]


class LoadMaskd(MapTransform):
    """Load an optional binary lesion mask as a ``1 x H x W`` float32 tensor in {0, 1}.

    Args:
        keys: mask keys; the value is a file path, or ``""`` / ``None`` for no mask.
        ref_key: the (already loaded, channel-first) image whose size an absent mask takes.
        has_mask_key: where to record whether a mask was given (float tensor ``(1,)``).

    A mask file may be 8- or 16-bit, gray, RGB or NIfTI; a pixel is lesion when any channel
    exceeds half of the mask's maximum (robust to JPEG noise).
    """

    def __init__(
        self,
        keys: KeysCollection = "mask",
        ref_key: str = "image",
        has_mask_key: str = "has_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.has_mask_key = has_mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__") or path is None:
                if path:
                    m = convert_to_tensor(read_radiograph(path), track_meta=False).float()
                    peak = m.max()
                    m = (
                        (m > 0.5 * peak).any(dim=0, keepdim=True)
                        if peak > 0
                        else torch.zeros_like(m[:1], dtype=torch.bool)
                    )
                    has = 1.0
                else:
                    ref = d[self.ref_key]
                    m = torch.zeros((1, *ref.shape[1:]), dtype=torch.bool)
                    has = 0.0
                d[key] = MetaTensor(m.float())
                d[self.has_mask_key] = torch.tensor([has], dtype=torch.float32)
            # an already loaded mask (tensor) is left as it is
        return d


class AsLabeld(MapTransform):
    """Image labels (0 healthy, 1 diseased; missing: ``default``) as float tensors of shape ``(1,)``."""

    def __init__(self, keys: KeysCollection = "label", default: float = 0.0) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.default = default

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.keys:
            value = d.get(key, self.default)
            d[key] = torch.as_tensor(value, dtype=torch.float32).reshape(-1)[:1].clone()
        return d
