"""Bundle transforms: optional lesion masks, image labels, and the anomaly scoring of section 4.

- :class:`LoadMaskd`: loads ``d["mask"]`` when it names a file, else an empty mask of the
  image's size; records ``d["has_mask"]``. Every item gets the same keys and types, so
  batches of images with and without masks collate.
- :class:`AsLabeld`: an image label (0 healthy, 1 diseased) as a float tensor of shape ``(1,)``.
- :class:`AnomalyScored`: the evaluation post-transform (``ALGORITHM.md`` section 4) on one
  channel-first item: anomaly map ``(x - r)^2``, image score (its mean, optionally inside the
  lungs), and one binary mask per tau, ``|x - r| >= max(min_threshold, tau * max |x - r|)``
  with the max taken over that image (not over the batch, as the authors do).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import LoadImage, MapTransform
from monai.utils import convert_to_tensor

__all__ = [
    "AnomalyScored",
    "AsLabeld",
    "LoadChestXRayd",
    "LoadMaskd",
    "Restore16Bitd",
    "anomaly_scores",
    "chest_xray_loader",
]


def chest_xray_loader(**kwargs) -> LoadImage:
    """``LoadImage`` for 2-D chest X-rays: rows are the first axis whatever the format.

    PNG / JPEG go through ``PILReader(reverse_indexing=False)`` (MONAI's default PIL reading
    is transposed, ``ALGORITHM.md`` section 7); NIfTI and the other formats through MONAI's
    default readers (an argument like ``reverse_indexing`` cannot simply be passed to
    ``LoadImage``: the NIfTI reader hands it on to ``nibabel.load``, which fails).
    """
    kwargs.setdefault("image_only", True)
    loader = LoadImage(**kwargs)
    loader.register(PILReader(reverse_indexing=False))  # registered last: tried first for PNG/JPEG
    return loader


class LoadChestXRayd(MapTransform):
    """Dictionary wrapper of :func:`chest_xray_loader`; keeps the file's dtype (``dtype=None``)."""

    def __init__(self, keys: KeysCollection = "image", dtype=None, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = chest_xray_loader(dtype=dtype, **kwargs)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class Restore16Bitd(MapTransform):
    """Bring 16-bit PNG/TIFF images (PIL mode ``I;16``) to 0..255 right after ``LoadImaged``.

    ``LoadImage`` turns PIL's ``uint16`` array into an ``int32`` MetaTensor (torch has no full
    ``uint16`` support), so a later transform can no longer tell a 16-bit image from an
    integer one by its dtype. The reader's metadata still says ``mode == "I;16"``: such an
    image is divided by 257 (65535 -> 255, as :class:`artasyn.intensity.ScaleTo8Bit` does for
    ``uint16``), returned as float32, and its ``meta["mode"]`` set to ``"F"`` (PIL's float
    mode) so that nothing scales it twice. Other images pass unchanged.
    """

    def __init__(
        self, keys: KeysCollection = "image", divisor: float = 257.0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.divisor = float(divisor)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = getattr(img, "meta", None)
            if meta is not None and str(meta.get("mode", "")).startswith("I;16"):
                out = img.float() / self.divisor
                out.meta = dict(meta)
                out.meta["mode"] = "F"
                d[key] = out
        return d


class LoadMaskd(MapTransform):
    """Load an optional binary lesion mask as a ``1 x H x W`` float32 tensor in {0, 1}.

    Args:
        keys: mask keys; the value is a file path, or ``""`` / ``None`` for no mask.
        ref_key: the (already loaded, channel-first) image whose size an absent mask takes.
        has_mask_key: where to record whether a mask was given (float tensor ``(1,)``).
        reader_kwargs: passed to :func:`chest_xray_loader` (rows are the vertical axis, as
            for the image).

    A mask file may be 8- or 16-bit, gray, RGB or NIfTI; a pixel is lesion when any channel
    exceeds half of the mask's maximum (robust to JPEG noise).
    """

    def __init__(
        self,
        keys: KeysCollection = "mask",
        ref_key: str = "image",
        has_mask_key: str = "has_mask",
        allow_missing_keys: bool = False,
        **reader_kwargs,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.has_mask_key = has_mask_key
        self.loader = chest_xray_loader(ensure_channel_first=True, **reader_kwargs)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__") or path is None:
                if path:
                    m = convert_to_tensor(self.loader(path), track_meta=False).float()
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


def anomaly_scores(
    image: torch.Tensor,
    recon: torch.Tensor,
    taus: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    min_threshold: float = 0.03,
    lung: torch.Tensor | None = None,
    score_in_lungs: bool = False,
    mask_in_lungs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(anomaly_map, score, masks)`` of one channel-first image and its reconstruction.

    ``anomaly_map``: ``(image - recon)^2``, shape of ``image``. ``score``: its mean, shape
    ``(1,)`` (over the lung pixels when ``score_in_lungs`` and ``lung`` has any). ``masks``:
    ``len(taus) x H x W`` float in {0, 1}, ``|image - recon| >= max(min_threshold, tau * m)``
    with ``m`` the image's largest ``|image - recon|`` (zeroed outside the lungs when
    ``mask_in_lungs``).
    """
    image = torch.as_tensor(image).float()
    recon = torch.as_tensor(recon).float()
    if image.shape != recon.shape:
        raise ValueError(f"image and reconstruction shapes differ: {tuple(image.shape)} vs {tuple(recon.shape)}")
    diff = image - recon
    amap = diff * diff
    inside = None
    if lung is not None and (score_in_lungs or mask_in_lungs):
        inside = (torch.as_tensor(lung, device=image.device) > 0).reshape(amap.shape[-2:])
        if not bool(inside.any()):
            inside = None  # no lung found: score the whole image rather than nothing
    if score_in_lungs and inside is not None:
        score = amap.mean(dim=0)[inside].mean().reshape(1)
    else:
        score = amap.mean().reshape(1)
    err = diff.abs().amax(dim=0)  # H x W over channels
    peak = err.max()
    thr = torch.clamp(torch.as_tensor(list(taus), dtype=err.dtype, device=err.device) * peak, min=min_threshold)
    masks = (err[None] >= thr[:, None, None]).float()
    if mask_in_lungs and inside is not None:
        masks = masks * inside[None].float()
    return amap, score, masks


class AnomalyScored(MapTransform):
    """Post-transform of the evaluator: anomaly map, image score and per-tau masks.

    Reads ``d[image_key]`` (the input in [0, 1]) and ``d[pred_key]`` (its reconstruction),
    both channel-first, and writes ``d[map_key]`` (squared error), ``d[score_key]``
    (shape ``(1,)``) and ``d[mask_key]`` (``len(taus) x H x W``), see :func:`anomaly_scores`.
    The lesion mask ``d[gt_key]`` and ``d[has_mask_key]`` are copied to ``d["gt_mask"]`` and
    ``d["gt_available"]``: an evaluator's output keeps only keys that are new to the batch,
    and the metric handlers read the output.

    Args:
        taus: relative thresholds (paper default 0.2; Table S2 sweeps 0.2, 0.4, 0.6, 0.8).
        min_threshold: absolute floor of the threshold (0.03).
        lung_key: the PBTSeg label map, used when ``score_in_lungs`` / ``mask_in_lungs``.
    """

    def __init__(
        self,
        image_key: str = "image",
        pred_key: str = "pred",
        taus: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
        min_threshold: float = 0.03,
        lung_key: str | None = "lung",
        score_in_lungs: bool = False,
        mask_in_lungs: bool = False,
        map_key: str = "anomaly_map",
        score_key: str = "score",
        mask_key: str = "pred_mask",
        gt_key: str | None = "mask",
        has_mask_key: str | None = "has_mask",
    ) -> None:
        super().__init__([image_key, pred_key])
        self.image_key, self.pred_key, self.lung_key = image_key, pred_key, lung_key
        self.taus = tuple(float(t) for t in taus)
        self.min_threshold = float(min_threshold)
        self.score_in_lungs, self.mask_in_lungs = bool(score_in_lungs), bool(mask_in_lungs)
        self.map_key, self.score_key, self.mask_key = map_key, score_key, mask_key
        self.gt_key, self.has_mask_key = gt_key, has_mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        lung = d.get(self.lung_key) if self.lung_key else None
        image = d[self.image_key]
        amap, score, masks = anomaly_scores(
            image, d[self.pred_key], self.taus, self.min_threshold, lung, self.score_in_lungs, self.mask_in_lungs
        )
        d[self.map_key] = amap
        d[self.score_key] = score
        d[self.mask_key] = masks
        # copies under new names: an evaluator keeps only new keys in its output (for metrics)
        if self.gt_key and self.gt_key in d:
            d["gt_mask"] = d[self.gt_key]
            has = d.get(self.has_mask_key, 1.0) if self.has_mask_key else 1.0
            d["gt_available"] = torch.as_tensor(has, dtype=torch.float32).reshape(-1)[:1]
        return d
