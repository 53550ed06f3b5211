"""Decision thresholds in the bundle: calibrated at every validation, saved with the weights, applied after.

The thresholds themselves are :mod:`artasyn.scoring.thresholds` (``docs/method.md`` section 4): an
image-score threshold at a stated specificity on the healthy validation images, the F1-optimal
one (when the validation set has both classes), and a pixel threshold on the anomaly map's own
scale (a high quantile of the healthy validation images' maps: of all their values, rule
``pooled``, or of each image's largest value, rule ``image_max``), with the smallest connected
component a mask keeps (``min_mask_px``). Here:

- :class:`ThresholdCalibrator` (a handler of the validation evaluator, ``train.json``): collects
  each validation image's score, label and, for healthy ones, its map (and its lungs when
  ``mask_in_lungs``, as the masks are drawn); for diseased ones with a lesion mask (rule
  ``dice``), the map, the mask and the lungs; and at the end of the epoch computes the
  thresholds, puts them in ``engine.state.thresholds`` (as MONAI's metric handlers put theirs in
  ``engine.state.metrics``) and writes them to ``val_thresholds.json`` (atomically). The
  checkpoint handlers of :mod:`scripts.checkpoint` save them under ``thresholds`` in
  ``model.pt``, ``last.pt`` and ``model_final.pt``. It must come before ``BestModelSaver`` in
  the handler list (handlers run in order).
- :class:`CheckpointThresholds` (``evaluate.json``, ``inference.json``): reads the checkpoint's
  ``thresholds``, checks that they were computed on the anomaly map this run computes, and
  says which image threshold labels the images (``label_threshold``: ``specificity`` or
  ``f1``) and whether masks use the pixel threshold (``mask_threshold``: ``absolute``, with the
  calibrated ``min_mask_px``) or the relative tau (``relative``). A checkpoint without
  thresholds (written before they existed) still works: no label is written and masks are
  relative, and the log says so; one whose thresholds predate ``pixel_rule`` and
  ``min_mask_px`` keeps every component (``min_mask_px`` 0), as they were calibrated. Thresholds
  calibrated with ``mask_gate="image"`` give ``mask_gate_threshold`` (the specificity image
  threshold): masks are drawn only on images whose score passes it, whichever
  ``label_threshold`` labels them (the pixel threshold was chosen under that gate).

The saved entry (a plain dictionary, also the content of ``val_thresholds.json``):
``image_threshold_specificity``, ``specificity``, ``val_specificity``, ``val_sensitivity``,
``image_threshold_f1``, ``f1``, ``pixel_threshold``, ``pixel_quantile``, ``pixel_rule``,
``min_mask_px``, ``val_healthy_mask_rate``, ``n_healthy``, ``n_diseased``, ``n_pixels``,
``mask_gate``, ``pixel_rule_requested``, ``val_lesion_dice``, ``n_lesion_images``, ``notes``
(:func:`artasyn.scoring.thresholds.calibrate_thresholds`), the map options ``score_map_mode``,
``score_map_sigma``, ``score_map_intensity`` and ``score_input_sigma`` (thresholds saved before
either existed were calibrated with 0), ``score_in_lungs``, ``mask_in_lungs``, and ``epoch`` (the
validation they come from).

Example (a checkpoint written before the thresholds: nothing to apply)::

    >>> import tempfile, torch
    >>> from scripts.thresholds import CheckpointThresholds
    >>> path = tempfile.mkdtemp() + "/model.pt"
    >>> torch.save({"model": {}}, path)
    >>> t = CheckpointThresholds(path)
    >>> t.image_threshold is None and t.pixel_threshold is None, t.mask_threshold
    (True, 'relative')
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from artasyn.constants import DEFAULT_MASK_GATE, DEFAULT_PIXEL_QUANTILE, DEFAULT_PIXEL_RULE, DEFAULT_SPECIFICITY
from artasyn.scoring.thresholds import MASK_GATES, PIXEL_RULES, calibrate_thresholds

from .checkpoint import CheckpointError, load_checkpoint
from .handlers import _items, _scalar
from .utils import as_bool, atomic_write

__all__ = ["LABEL_THRESHOLDS", "MASK_THRESHOLDS", "CheckpointThresholds", "ThresholdCalibrator", "saved_option"]

logger = logging.getLogger("artasyn.bundle")

#: ``label_threshold``: which image threshold of the checkpoint labels the images
LABEL_THRESHOLDS = {"specificity": "image_threshold_specificity", "f1": "image_threshold_f1"}
#: ``mask_threshold``: the checkpoint's pixel threshold, or the per-image relative tau
MASK_THRESHOLDS = ("absolute", "relative")
#: the map options an image threshold (score) and the pixel threshold (mask) depend on
_SCORE_OPTIONS = ("score_map_mode", "score_map_sigma", "score_map_intensity", "score_input_sigma", "score_in_lungs")
_MASK_OPTIONS = ("score_map_mode", "score_map_sigma", "score_map_intensity", "score_input_sigma", "mask_in_lungs")
#: map options added after thresholds began to be saved, with the value every earlier one was calibrated with
_OPTIONS_BEFORE_RECORDED = {"score_input_sigma": 0.0, "score_map_intensity": 0.0}


def saved_option(thresholds: Mapping, name: str):
    """The map option ``name`` the saved ``thresholds`` were calibrated with (``None``: not recorded).

    Thresholds saved before an option was recorded count as calibrated with its value then
    (``score_input_sigma``: 0, an unsmoothed input; ``score_map_intensity``: 0, no intensity term).
    """
    return thresholds.get(name, _OPTIONS_BEFORE_RECORDED.get(name))


def _map_options(
    score_map_mode, score_map_sigma, score_in_lungs, mask_in_lungs, score_input_sigma=0.0, score_map_intensity=0.0
) -> dict:
    return {
        "score_map_mode": str(score_map_mode),
        "score_map_sigma": float(score_map_sigma),
        "score_map_intensity": float(score_map_intensity),
        "score_input_sigma": float(score_input_sigma),
        "score_in_lungs": as_bool(score_in_lungs, "score_in_lungs"),
        "mask_in_lungs": as_bool(mask_in_lungs, "mask_in_lungs"),
    }


class ThresholdCalibrator:
    """Validation handler: the decision thresholds of the epoch, in ``engine.state.thresholds`` and a JSON.

    Args:
        output_dir: where ``filename`` is written (the validation metrics' folder).
        filename: the JSON of the thresholds (``val_thresholds.json``).
        specificity: share of the healthy validation images the image threshold keeps normal.
        pixel_quantile: the quantile ``q`` of the pixel threshold, under ``pixel_rule``.
        pixel_rule: ``"pooled"`` (the quantile of all the healthy map values: at most ``1 - q``
            of the healthy pixels masked), ``"image_max"`` (of each healthy image's largest
            value still masked: at most ``1 - q`` of the healthy images with a mask) or
            ``"dice"`` (the best micro Dice on the diseased validation images with a lesion
            mask, ``has_mask``; without any, ``image_max``, logged).
        mask_gate: ``"none"`` or ``"image"`` (masks only on images whose score passes the
            specificity threshold; the pixel rule and ``val_healthy_mask_rate`` take it into
            account).
        min_mask_px: masks drop their 8-connected components of fewer map pixels (0: none;
            ``None``: :func:`artasyn.scoring.min_mask_pixels` of the map size, 32 px at 128 x 128).
        score_map_mode, score_map_sigma, score_map_intensity, score_in_lungs, mask_in_lungs: the
            options of the validation's :class:`artasyn.scoring.AnomalyScored` (recorded with the
            thresholds; ``mask_in_lungs`` also restricts the maps to the lungs, as the masks are).
        score_input_sigma: the smoothing of the network's input at validation
            (:class:`artasyn.scoring.SmoothedInputInferer`; recorded with the thresholds).
        score_key, label_key, map_key, lung_key: the keys of the evaluator's items.

    Memory: the healthy images' maps are kept until the end of the epoch, 4 bytes a pixel
    (26 MB for 100 healthy images at 256 x 256; 1 more with ``mask_in_lungs``); with rule
    ``dice``, also the lesion images' maps and masks.
    """

    def __init__(
        self,
        output_dir: str | Path,
        filename: str = "val_thresholds.json",
        specificity: float = DEFAULT_SPECIFICITY,
        pixel_quantile: float = DEFAULT_PIXEL_QUANTILE,
        pixel_rule: str = DEFAULT_PIXEL_RULE,
        min_mask_px: int | None = None,
        mask_gate: str = DEFAULT_MASK_GATE,
        score_map_mode: str = "squared",
        score_map_sigma: float = 0.0,
        score_in_lungs: bool = False,
        mask_in_lungs: bool = False,
        score_input_sigma: float = 0.0,
        score_map_intensity: float = 0.0,
        score_key: str = "score",
        label_key: str = "label",
        map_key: str = "anomaly_map",
        lung_key: str = "lung",
        lesion_key: str = "gt_mask",
        has_lesion_key: str = "gt_available",
    ) -> None:
        self.output_dir, self.filename = Path(output_dir), filename
        self.specificity, self.pixel_quantile = float(specificity), float(pixel_quantile)
        for name, q in (("specificity", self.specificity), ("pixel_quantile", self.pixel_quantile)):
            if not 0.0 < q <= 1.0:
                raise ValueError(f"ThresholdCalibrator: {name} must be in (0, 1], got {q}")
        if pixel_rule not in PIXEL_RULES:
            raise ValueError(f"ThresholdCalibrator: pixel_rule must be one of {PIXEL_RULES}, got {pixel_rule!r}")
        if min_mask_px is not None and int(min_mask_px) < 0:
            raise ValueError(f"ThresholdCalibrator: min_mask_px must be >= 0, got {min_mask_px}")
        if mask_gate not in MASK_GATES:
            raise ValueError(f"ThresholdCalibrator: mask_gate must be one of {MASK_GATES}, got {mask_gate!r}")
        self.pixel_rule, self.mask_gate = pixel_rule, mask_gate
        self.lesion_key, self.has_lesion_key = lesion_key, has_lesion_key
        self.min_mask_px = None if min_mask_px is None else int(min_mask_px)
        self.options = _map_options(
            score_map_mode, score_map_sigma, score_in_lungs, mask_in_lungs, score_input_sigma, score_map_intensity
        )
        self.score_key, self.label_key, self.map_key, self.lung_key = score_key, label_key, map_key, lung_key
        self._reset()

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._compute)

    def _reset(self, engine=None) -> None:
        self.scores: list[float] = []
        self.labels: list[float] = []
        self.maps: list[np.ndarray] = []
        self.lungs: list[np.ndarray | None] = []
        self.healthy_scores: list[float] = []
        self.lesions: dict[str, list] = {"maps": [], "masks": [], "scores": [], "lungs": []}

    def _collect(self, engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else []
        for i, o in enumerate(_items(engine.state.output)):
            label = _scalar(o.get(self.label_key))
            score = _scalar(o.get(self.score_key), float("nan"))
            self.scores.append(score)
            self.labels.append(label)
            if self.map_key not in o:
                continue
            lesion = None
            if label > 0.5:
                if self.pixel_rule != "dice" or _scalar(o.get(self.has_lesion_key), 0.0) <= 0.5:
                    continue
                lesion = o.get(self.lesion_key)
                if lesion is None:
                    continue
            lung = None
            if self.options["mask_in_lungs"]:
                source = o if self.lung_key in o else (batch[i] if i < len(batch) else {})
                lung = source.get(self.lung_key)
                lung = None if lung is None else torch.as_tensor(lung).detach().cpu().numpy() > 0
            amap = torch.as_tensor(o[self.map_key]).detach().float()
            plane = amap.reshape(-1, *amap.shape[-2:]).amax(dim=0).cpu().numpy()  # H x W
            if lesion is None:
                self.maps.append(plane)
                self.lungs.append(lung)
                self.healthy_scores.append(score)
            else:
                mask = torch.as_tensor(lesion).detach().float()
                self.lesions["maps"].append(plane)
                self.lesions["masks"].append(mask.reshape(-1, *mask.shape[-2:]).amax(dim=0).cpu().numpy() > 0.5)
                self.lesions["scores"].append(score)
                self.lesions["lungs"].append(lung)

    def compute(self, epoch: int = 0) -> dict | None:
        """The thresholds of what was collected (``None``, logged, when a score is not finite)."""
        try:
            if self.mask_gate == "image" and len(self.healthy_scores) != sum(1 for y in self.labels if y <= 0.5):
                raise ValueError(
                    f"mask_gate 'image' needs the anomaly map ({self.map_key!r}) of every healthy validation image: "
                    f"{len(self.healthy_scores)} of {sum(1 for y in self.labels if y <= 0.5)} had one"
                )
            thresholds = calibrate_thresholds(
                self.scores,
                self.labels,
                self.maps,
                self.specificity,
                self.pixel_quantile,
                self.pixel_rule,
                self.min_mask_px,
                healthy_lungs=self.lungs,
                mask_gate=self.mask_gate,
                lesion_maps=self.lesions["maps"],
                lesion_masks=self.lesions["masks"],
                lesion_scores=self.lesions["scores"],
                lesion_lungs=self.lesions["lungs"],
            )
        except ValueError as e:
            logger.warning("decision thresholds not computed at epoch %d: %s", epoch, e)
            return None
        for note in thresholds["notes"]:
            logger.warning("decision thresholds at epoch %d: %s", epoch, note)
        return {**thresholds, **self.options, "epoch": int(epoch)}

    def _compute(self, engine) -> None:
        thresholds = self.compute(int(engine.state.epoch))
        engine.state.thresholds = thresholds
        self._reset()
        if thresholds is None:
            return
        path = atomic_write(self.output_dir / self.filename, json.dumps(thresholds, indent=2))
        logger.info("decision thresholds: %s -> %s", summary(thresholds), path)


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"


def summary(thresholds: Mapping) -> str:
    """``image > 0.0123 (specificity 0.95 on 8 healthy ...), F1-optimal image > ..., pixel > 0.0042 (...)``."""
    return (
        f"image > {_fmt(thresholds.get('image_threshold_specificity'))} "
        f"(specificity {thresholds.get('specificity')} on {thresholds.get('n_healthy')} healthy; "
        f"sensitivity there {_fmt(thresholds.get('val_sensitivity'))} on {thresholds.get('n_diseased')} diseased), "
        f"F1-optimal image > {_fmt(thresholds.get('image_threshold_f1'))} (F1 {_fmt(thresholds.get('f1'))}), "
        f"pixel > {_fmt(thresholds.get('pixel_threshold'))} (quantile {thresholds.get('pixel_quantile')}, "
        f"rule {thresholds.get('pixel_rule', 'pooled')}, components of {thresholds.get('min_mask_px', 0)}+ px, "
        f"on {thresholds.get('n_pixels')} healthy map values; healthy masks not empty "
        f"{_fmt(thresholds.get('val_healthy_mask_rate'))}"
        + (
            f"; lesion micro Dice {_fmt(thresholds.get('val_lesion_dice'))} on {thresholds.get('n_lesion_images')} "
            "images with a lesion mask"
            if thresholds.get("n_lesion_images")
            else ""
        )
        + (
            "; masks only on images above the specificity image threshold"
            if thresholds.get("mask_gate") == "image"
            else ""
        )
        + ")"
    )


class CheckpointThresholds:
    """The thresholds an evaluation or inference run applies, read from its checkpoint and checked.

    Args:
        ckpt_path: the checkpoint; its ``thresholds`` entry was written by the training.
        label_threshold: ``"specificity"`` (default: the threshold at the validation's stated
            specificity) or ``"f1"`` (the F1-optimal one; an error when the checkpoint has none,
            i.e. its validation had one class only).
        mask_threshold: ``"absolute"`` (default: ``anomaly_map > pixel_threshold``) or
            ``"relative"`` (the per-image tau masks, as before the thresholds existed).
        score_map_mode, score_map_sigma, score_map_intensity, score_in_lungs, mask_in_lungs: this
            run's options of :class:`artasyn.scoring.AnomalyScored`.
        score_input_sigma: this run's smoothing of the network's input
            (:class:`artasyn.scoring.SmoothedInputInferer`).

    Attributes: ``image_threshold`` and ``pixel_threshold`` (``None`` when not applied),
    ``mask_gate_threshold`` (the image threshold a mask is drawn above, with thresholds
    calibrated under ``mask_gate="image"``; else ``None``),
    ``min_mask_px`` (the smallest mask component kept, as calibrated: 0 for thresholds saved
    before it existed or when the masks are relative),
    ``label_threshold`` (the name used, ``None`` without a label), ``mask_threshold`` (what the
    masks use), ``healthy_peak`` (the level the healthy validation images' maps reach, at the
    pixel quantile: the overlays' scale; read as the pixel threshold from thresholds saved
    before it was recorded when their rule was ``image_max``, the same value; ``None`` when
    unknown or computed on another map), ``thresholds`` (the checkpoint's entry or ``None``),
    ``notes`` (why something was not applied; each also logged as a warning).

    Not applied, with a warning: no ``thresholds`` in the checkpoint (trained before they
    existed; no label, relative masks); an image threshold computed with other map options
    than this run's (``score_map_mode``, ``score_map_sigma``, ``score_map_intensity``,
    ``score_input_sigma``, ``score_in_lungs``: another score scale), or a pixel threshold computed
    with another ``score_map_mode``, ``score_map_sigma``, ``score_map_intensity``,
    ``score_input_sigma`` or ``mask_in_lungs``; a threshold the validation could not give
    (``None``). A missing checkpoint file also gives no thresholds (the workflows check the
    checkpoint first and stop; this case is a post-processing parsed alone, e.g. by a test).
    """

    def __init__(
        self,
        ckpt_path: str | Path,
        label_threshold: str = "specificity",
        mask_threshold: str = "absolute",
        score_map_mode: str = "squared",
        score_map_sigma: float = 0.0,
        score_in_lungs: bool = False,
        mask_in_lungs: bool = False,
        score_input_sigma: float = 0.0,
        score_map_intensity: float = 0.0,
    ) -> None:
        if label_threshold not in LABEL_THRESHOLDS:
            raise ValueError(f"label_threshold must be one of {sorted(LABEL_THRESHOLDS)}, got {label_threshold!r}")
        if mask_threshold not in MASK_THRESHOLDS:
            raise ValueError(f"mask_threshold must be one of {list(MASK_THRESHOLDS)}, got {mask_threshold!r}")
        self.ckpt_path = Path(ckpt_path)
        self.options = _map_options(
            score_map_mode, score_map_sigma, score_in_lungs, mask_in_lungs, score_input_sigma, score_map_intensity
        )
        self.notes: list[str] = []
        self.thresholds = self._read()
        self.image_threshold, self.label_threshold = self._image(label_threshold)
        self.pixel_threshold = self._pixel() if mask_threshold == "absolute" else None
        self.mask_threshold = "absolute" if self.pixel_threshold is not None else "relative"
        self.min_mask_px = 0
        if self.pixel_threshold is not None:
            self.min_mask_px = int(self.thresholds.get("min_mask_px") or 0)
        self.mask_gate_threshold = self._gate() if self.pixel_threshold is not None else None
        if self.pixel_threshold is None:
            self.mask_threshold = "relative"
        self.healthy_peak = self._healthy_peak()
        for note in self.notes:
            logger.warning("%s", note)
        logger.info(
            "decision thresholds of %s: label %s, masks %s",
            self.ckpt_path,
            f"score > {self.image_threshold:.6g} ({self.label_threshold})" if self.label_threshold else "none",
            f"anomaly map > {self.pixel_threshold:.6g}, components of {self.min_mask_px}+ px"
            + (
                f", only on images with score > {self.mask_gate_threshold:.6g}"
                if self.mask_gate_threshold is not None
                else ""
            )
            if self.pixel_threshold is not None
            else "relative (tau)",
        )

    def _read(self) -> dict | None:
        if not self.ckpt_path.is_file():
            self.notes.append(f"no checkpoint at {self.ckpt_path}: no decision thresholds, masks relative (tau)")
            return None
        thresholds = load_checkpoint(self.ckpt_path, keys=("model",)).get("thresholds")
        if thresholds is None:
            self.notes.append(
                f"checkpoint {self.ckpt_path} has no decision thresholds (saved before they were calibrated at "
                "validation): no normal/abnormal label is written and masks use the relative threshold tau; "
                "train again (or resume with more iterations) to get them"
            )
            return None
        if not isinstance(thresholds, Mapping):
            raise CheckpointError(
                f"checkpoint {self.ckpt_path}: 'thresholds' is a {type(thresholds).__name__}, not a dictionary"
            )
        return dict(thresholds)

    def _differing(self, names: tuple[str, ...]) -> list[str]:
        out = []
        for name in names:
            saved = saved_option(self.thresholds, name)
            if saved is not None and saved != self.options[name]:
                out.append(f"{name} {saved!r} at validation, {self.options[name]!r} here")
        return out

    def _image(self, choice: str) -> tuple[float | None, str | None]:
        if self.thresholds is None:
            return None, None
        value = self.thresholds.get(LABEL_THRESHOLDS[choice])
        if value is None and choice == "f1":
            raise ValueError(
                f"checkpoint {self.ckpt_path} has no F1-optimal threshold: its validation had "
                f"{self.thresholds.get('n_healthy')} healthy and {self.thresholds.get('n_diseased')} diseased "
                "images (F1 needs both); pass --label_threshold specificity"
            )
        if value is None:
            self.notes.append(
                f"checkpoint {self.ckpt_path}: no {choice} threshold (its validation had no healthy image): "
                "no normal/abnormal label is written"
            )
            return None, None
        differ = self._differing(_SCORE_OPTIONS)
        if differ:
            self.notes.append(
                f"checkpoint {self.ckpt_path}: its image thresholds are on another score scale ({'; '.join(differ)}): "
                "no normal/abnormal label is written; use the validation's options or train again"
            )
            return None, None
        return float(value), choice

    def _pixel(self) -> float | None:
        if self.thresholds is None:
            return None
        value = self.thresholds.get("pixel_threshold")
        if value is None:
            self.notes.append(f"checkpoint {self.ckpt_path}: no pixel threshold: masks use the relative threshold tau")
            return None
        differ = self._differing(_MASK_OPTIONS)
        if differ:
            self.notes.append(
                f"checkpoint {self.ckpt_path}: its pixel threshold is for another anomaly map ({'; '.join(differ)}): "
                "masks use the relative threshold tau"
            )
            return None
        return float(value)

    def _healthy_peak(self) -> float | None:
        """The healthy maps' level at the pixel quantile (``None`` unknown or on another map); no note."""
        if self.thresholds is None or self._differing(_MASK_OPTIONS):
            return None
        value = self.thresholds.get("healthy_peak")
        if value is None and self.thresholds.get("pixel_rule") == "image_max":
            value = self.thresholds.get("pixel_threshold")  # that rule's threshold is this level
        return None if value is None else float(value)

    def _gate(self) -> float | None:
        """The image threshold masks are gated by (``mask_gate`` ``"image"``), or ``None``.

        A gated pixel threshold without its gate would mask far more healthy images than it
        was calibrated for: when the gate cannot be applied (no specificity threshold, or
        one on another score scale) the masks fall back to the relative tau, with a note.
        """
        if self.thresholds.get("mask_gate", "none") != "image":
            return None
        value = self.thresholds.get("image_threshold_specificity")
        differ = self._differing(_SCORE_OPTIONS)
        if value is None or differ:
            why = "; ".join(differ) if differ else "no specificity threshold"
            self.notes.append(
                f"checkpoint {self.ckpt_path}: its masks are gated by the image score, which this run cannot "
                f"apply ({why}): masks use the relative threshold tau"
            )
            self.pixel_threshold, self.min_mask_px = None, 0
            return None
        return float(value)

    def info(self) -> dict:
        """What this run applies and why (for ``metrics.json``'s ``info``)."""
        return {
            "label_threshold": self.label_threshold,
            "image_threshold": self.image_threshold,
            "mask_threshold": self.mask_threshold,
            "pixel_threshold": self.pixel_threshold,
            "min_mask_px": self.min_mask_px,
            "mask_gate_threshold": self.mask_gate_threshold,
            "healthy_peak": self.healthy_peak,
            "checkpoint_thresholds": self.thresholds,
            "notes": list(self.notes),
        }
