"""Evaluation handlers: TensorBoard image panels, per-image score CSV, metrics JSON.

- :class:`AnomalyPanelHandler`: a grid of ``input | reconstruction | error map | predicted
  mask | ground truth`` rows (healthy and diseased items), each row titled with its file, true
  label, score and decision and each column with its content, to TensorBoard, and optionally
  a PNG.
- :class:`ImageScoreSaver`: ``scores.csv``, one row per image: file, label, image score,
  whether it has a lesion mask and its Dice at every tau, and, where a checkpoint's decision
  thresholds were applied (``evaluate.json``), the predicted label and the absolute mask's area.
- :class:`MetricsJSONSaver`: ``metrics.json`` with every metric of the epoch, and one log
  line ``AP=... AUC=... Dice=...``.

All attach to an evaluator (``SupervisedEvaluator``) and read its decollated output items,
which :class:`artasyn.scoring.AnomalyScored` completes with ``score``, ``pred_mask``,
``gt_mask`` and ``gt_available``. Every file is written atomically
(:func:`scripts.utils.atomic_write`, the user's umask).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from artasyn.constants import DEFAULT_TAU, DEFAULT_TAUS

from .metrics import tau_name
from .utils import as_bool, atomic_write

__all__ = [
    "AnomalyPanelHandler",
    "ImageScoreSaver",
    "MetricsJSONSaver",
    "anomaly_panel",
    "panel_row_title",
    "panel_tiles",
]

logger = logging.getLogger("artasyn.bundle")


def _items(output) -> list[dict]:
    if output is None:
        return []
    return output if isinstance(output, list) else [output]


def _scalar(x, default: float = 0.0) -> float:
    if x is None:
        return default
    return float(torch.as_tensor(x).reshape(-1)[0])


def _filename(item: dict, batch_item: dict | None, key: str = "image") -> str:
    for src in (item, batch_item or {}):
        if src.get(f"{key}_path"):
            return str(src[f"{key}_path"])
        v = src.get(key)
        meta = getattr(v, "meta", None)
        if meta and meta.get("filename_or_obj"):
            return str(meta["filename_or_obj"])
    return ""


def _plane(x) -> np.ndarray:
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    return arr.reshape(-1, *arr.shape[-2:])[0]


#: the panel's columns; the mask column's title depends on the mask shown
PANEL_COLUMNS = ("input", "reconstruction", "error map (scaled to its max)", "{mask}", "ground-truth lesion")


def panel_row_title(item: dict, filename: str = "") -> str:
    """The title of an item's panel row: ``file | true label | score | decision``.

    ``filename`` (else the item's own ``image_path`` or metadata; its folder and name), the true label (``label``:
    0 healthy, 1 diseased), the image score (``score``, its first value) and the decision of
    the checkpoint's image threshold (``pred_label``: ``abnormal`` / ``normal``; ``no decision``
    where none was applied, e.g. during training, whose thresholds come at the epoch's end).

    >>> panel_row_title({"label": 1, "score": [0.01234567], "pred_label": 1}, "/data/covid_1.png")
    'data/covid_1.png | true: diseased | score 0.01235 | decision: abnormal'
    >>> panel_row_title({"label": 0, "score": [0.002]}, "n.png")
    'n.png | true: healthy | score 0.002 | decision: none (no threshold applied)'
    """
    path = Path(filename or _filename(item, None))
    name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name or "(unnamed)"
    label = "diseased" if _scalar(item.get("label")) > 0.5 else "healthy"
    score = _scalar(item.get("score"), float("nan"))
    decided = item.get("pred_label")
    if decided is None:
        decision = "none (no threshold applied)"
    else:
        decision = "abnormal" if _scalar(decided) > 0.5 else "normal"
    return f"{name} | true: {label} | score {score:.4g} | decision: {decision}"


def panel_tiles(item: dict, tau_index: int = 0, absolute: bool = False) -> list[np.ndarray]:
    """The row of an item: input | reconstruction | error map (scaled to its max) | mask | ground truth.

    The mask is the absolute one (``abs_mask``, the checkpoint's pixel threshold) when
    ``absolute``, else the relative mask at the ``tau_index``-th tau (``pred_mask``). Each tile
    is ``H x W`` float in [0, 1].
    """
    img = np.clip(_plane(item["image"]), 0, 1)
    rec = np.clip(_plane(item["pred"]), 0, 1)
    err = _plane(item["anomaly_map"]) if "anomaly_map" in item else (img - rec) ** 2
    err = err / err.max() if err.max() > 0 else err
    if absolute:
        mask = _plane(item["abs_mask"])
    else:
        pm = item.get("pred_mask")
        mask = _plane(pm[tau_index : tau_index + 1]) if pm is not None else np.zeros_like(img)
    gt = _plane(item["gt_mask"]) if item.get("gt_mask") is not None else np.zeros_like(img)
    return [img, rec, err.astype(np.float32), np.clip(mask, 0, 1), np.clip(gt, 0, 1)]


def anomaly_panel(items: Sequence[dict], tau: float = DEFAULT_TAU, tau_index: int = 0):
    """The titled panel of ``items`` (a PIL ``L`` image): a title over each column and over each row.

    Rows: :func:`panel_tiles`, titled by :func:`panel_row_title` (``item["_title"]`` when the
    handler computed it with the file name of the batch). The mask column shows the absolute
    masks when every item has one (``abs_mask``: ``evaluate.json`` with decision thresholds),
    else the relative masks at ``tau``.
    """
    from .figures import titled_grid

    absolute = bool(items) and all(o.get("abs_mask") is not None for o in items)
    mask = "mask: map > pixel threshold" if absolute else f"mask: tau {tau:g} of the max"
    columns = [c.format(mask=mask) for c in PANEL_COLUMNS]
    rows = [panel_tiles(o, tau_index, absolute) for o in items]
    titles = [o.get("_title") or panel_row_title(o) for o in items]
    return titled_grid(rows, titles, columns)


class AnomalyPanelHandler:
    """Writes image panels of an evaluation epoch to TensorBoard (and optionally a PNG).

    Keeps the first ``max_items // 2`` healthy and diseased items of the epoch (filling up with
    either), one row each: ``input | reconstruction | error map (scaled to its max) | mask |
    ground-truth lesion mask``, each row titled ``file | true label | score | decision`` and
    each column by its content (:func:`anomaly_panel`).

    Args:
        summary_writer: a ``SummaryWriter``; default: one on ``log_dir``.
        log_dir: TensorBoard folder when no writer is given.
        tag: image tag.
        max_items: rows in the panel.
        png_path: also save the panel as this PNG (e.g. in the evaluation folder).
        global_iter_transform: maps the evaluator's epoch to the TensorBoard step.
        tau: the tau of the relative masks shown (the first of the scoring's taus).
    """

    def __init__(
        self,
        summary_writer=None,
        log_dir: str = "./runs",
        tag: str = "val_panels",
        max_items: int = 4,
        png_path: str | None = None,
        global_iter_transform: Callable = lambda x: x,
        tau: float = DEFAULT_TAU,
    ) -> None:
        self._writer = summary_writer
        self.log_dir, self.tag, self.max_items = log_dir, tag, int(max_items)
        self.png_path = png_path
        self.global_iter_transform = global_iter_transform
        self.tau = float(tau)
        self._kept: list[dict] = []

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine) -> None:
        self._kept = []

    def _collect(self, engine) -> None:
        half = max(1, self.max_items // 2)
        batch = engine.state.batch if isinstance(engine.state.batch, list) else []
        for i, o in enumerate(_items(engine.state.output)):
            if len(self._kept) >= self.max_items:
                return
            label = _scalar(o.get("label"))
            same = sum(1 for k in self._kept if k["_label"] == label)
            if same >= half:
                continue
            keys = ("image", "pred", "anomaly_map", "pred_mask", "gt_mask", "abs_mask")
            keep = {k: o[k].detach().cpu() for k in keys if isinstance(o.get(k), torch.Tensor)}
            keep["_label"] = label
            keep["_title"] = panel_row_title(o, _filename(o, batch[i] if i < len(batch) else None))
            self._kept.append(keep)

    def _write(self, engine) -> None:
        if not self._kept:
            return
        picture = anomaly_panel(self._kept, self.tau)
        panel = np.asarray(picture, dtype=np.float32) / 255.0
        step = self.global_iter_transform(engine.state.epoch)
        self.writer.add_image(self.tag, panel[None], step, dataformats="CHW")
        self.writer.flush()
        if self.png_path:
            atomic_write(self.png_path, lambda f: picture.save(f, format="PNG"))


class ImageScoreSaver:
    """Writes ``<output_dir>/<filename>``: one CSV row per evaluated image.

    Columns: ``filename, label, score, has_mask``, ``dice_tau{t}`` for each tau (empty for
    images without a lesion mask), ``pred_label`` (1 abnormal, 0 normal) and ``abs_mask_px``
    (pixels of the absolute mask), both empty when no decision threshold was applied. Written
    at the end of each evaluation epoch (atomically).
    """

    def __init__(
        self,
        output_dir: str,
        filename: str = "scores.csv",
        taus: Sequence[float] = DEFAULT_TAUS,
        pred_label_key: str = "pred_label",
        abs_mask_key: str = "abs_mask",
    ) -> None:
        self.output_dir, self.filename = output_dir, filename
        self.taus = tuple(float(t) for t in taus)
        self.pred_label_key, self.abs_mask_key = pred_label_key, abs_mask_key
        self.rows: list[dict] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine) -> None:
        self.rows = []

    def _collect(self, engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else []
        for i, o in enumerate(_items(engine.state.output)):
            row = {
                "filename": _filename(o, batch[i] if i < len(batch) else None),
                "label": int(_scalar(o.get("label"))),
                "score": _scalar(o.get("score"), float("nan")),
                "has_mask": int(_scalar(o.get("gt_available"))),
            }
            pm, gt = o.get("pred_mask"), o.get("gt_mask")
            for j, tau in enumerate(self.taus):
                dice = ""
                if row["has_mask"] and pm is not None and gt is not None and j < pm.shape[0]:
                    p = pm[j] > 0.5
                    g = torch.as_tensor(gt).reshape(p.shape).to(p.device) > 0.5
                    denom = int(p.sum()) + int(g.sum())
                    dice = f"{2.0 * int((p & g).sum()) / denom:.6f}" if denom > 0 else ""
                row[f"dice_tau{tau_name(tau)}"] = dice
            pred_label, abs_mask = o.get(self.pred_label_key), o.get(self.abs_mask_key)
            row["pred_label"] = "" if pred_label is None else int(_scalar(pred_label) > 0.5)
            row["abs_mask_px"] = "" if abs_mask is None else int((torch.as_tensor(abs_mask) > 0.5).sum())
            self.rows.append(row)

    def _write(self, engine) -> None:
        path = Path(self.output_dir) / self.filename
        fields = ["filename", "label", "score", "has_mask", *(f"dice_tau{tau_name(t)}" for t in self.taus)]
        fields += ["pred_label", "abs_mask_px"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\r\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write(path, buf.getvalue())


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def summary_line(metrics: dict, prefix: str = "", tau: float = DEFAULT_TAU) -> str:
    """``AP=0.8123 AUC=0.7712 Dice(micro, tau=0.2)=0.3011 Dice(mean)=0.2876``, then the decision metrics if any."""

    def get(name):
        v = metrics.get(prefix + name)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.4f}"

    t = tau_name(tau)
    line = (
        f"AP={get('ap')} AUC={get('auc')} Dice(micro, tau={t})={get(f'micro_dice_tau{t}')} "
        f"Dice(mean over images, tau={t})={get(f'dice_tau{t}')}"
    )
    if prefix + "sensitivity" in metrics:
        line += (
            f" | label: sensitivity={get('sensitivity')} specificity={get('specificity')}; "
            f"absolute mask: healthy with a mask={get('healthy_mask_rate')} Dice(micro)={get('micro_dice_absolute')}"
        )
    return line


class MetricsJSONSaver:
    """Writes ``<output_dir>/<filename>``: every metric of the evaluation epoch, and logs a summary.

    The JSON holds ``metrics`` (``engine.state.metrics``), ``n_images``, ``epoch``, a
    timestamp and ``info`` (anything the config passes, e.g. the checkpoint path and
    settings). The summary line (``[epoch N] AP=... AUC=... Dice=...``) is logged once
    (``print_summary``; ``logging.conf`` shows it on the console).

    Args:
        prefix: the metric-name prefix used in the evaluator (``val_`` in training).
        tau: the tau of the headline Dice.
    """

    def __init__(
        self,
        output_dir: str,
        filename: str = "metrics.json",
        prefix: str = "",
        tau: float = DEFAULT_TAU,
        info: dict | None = None,
        print_summary: bool = True,
    ) -> None:
        self.output_dir, self.filename, self.prefix, self.tau = output_dir, filename, prefix, float(tau)
        self.info = info or {}
        self.print_summary = as_bool(print_summary, "print_summary")
        self._n = 0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine) -> None:
        self._n = 0

    def _count(self, engine) -> None:
        self._n += len(_items(engine.state.output))

    def _write(self, engine) -> None:
        metrics = {k: _jsonable(v) for k, v in engine.state.metrics.items()}
        content = {
            "metrics": metrics,
            "n_images": self._n,
            "epoch": int(engine.state.epoch),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "info": _jsonable(self.info),
        }
        best = getattr(engine.state, "best_metric", None)
        if best is not None and best != -1:
            content["best_metric"] = _jsonable(best)
            content["best_metric_epoch"] = int(getattr(engine.state, "best_metric_epoch", -1))
        path = atomic_write(Path(self.output_dir) / self.filename, json.dumps(content, indent=2))
        if self.print_summary:
            line = summary_line(engine.state.metrics, self.prefix, self.tau)
            logger.info("[epoch %d] %s (%d images; metrics: %s)", engine.state.epoch, line, self._n, path)
