#!/usr/bin/env python
"""Benchmark: zero-shot lesion localisation on COVID-19 radiographs, measured fairly.

The paper's QaTa-ZeroShot number is a micro Dice of the masks ``|x - r| >= max(0.03, tau * m)``
against lesion masks the network never saw (``docs/method.md`` section 4). On real images a
constant guess already scores well (``docs/method.md`` section 8: micro Dice at 128 x 128 of
the whole image 0.239, the whole PBTSeg lung 0.448, the whole ground-truth lung 0.706), so
this bench reports that Dice beside the constant guesses *and* a threshold-free pixel AUROC
inside the ground-truth lungs, beside the same AUROC of the raw intensity (0.616 mean per
image there), all measured in one run, on the same images, at the same size.

Data (``../shared/data`` or ``$ARTASYN_SHARED_DATA``, see its README; nothing is copied):

- training (healthy adults only): ``covidquex_normal_lung/images`` and
  ``nih_nofinding_normal/images``, all of them except the healthy monitor images (and
  ``--extra-training DIR`` adds further healthy folders, e.g. ``zhanglab_train_normal``, and
  ``--no-adult-training`` leaves the adults out of training, so that it sees those folders only);
- monitor (the ``validation`` section; the trainer's per-epoch validation only): ``--n-monitor``
  (24) ``covidquex_normal_lung`` images and as many ``covidquex_covid_infection`` images with
  their infection masks, spread evenly over the sorted file stems. The evaluated weights are
  the last EMA weights (``model_final.pt``), never a checkpoint chosen on them, and the
  monitor COVID images are left out of the test set (``--monitor-in-test`` puts them back,
  which the results then say);
- test: every other ``covidquex_covid_infection`` image (``images/<stem>.png``), its
  infection mask (``masks/<stem>.png``, 255 = lesion) and its ground-truth lung mask
  (``masks_lung/<stem>.png``).

Steps:

1. write the datalist (``<workdir>/datalist.json``, MONAI's format);
2. train the bundle as a user does, ``python -m monai.bundle run training --config_file
   "['bundle/configs/train.json', 'bundle/configs/<preset>.json']" --datalist_file ...`` in a
   subprocess, logging to ``<workdir>/train.log`` (``--set ID JSON`` adds any override; an id
   that no config defines is refused before anything runs, since the training would ignore it;
   ``--max-iterations`` sets ``max_iterations``); ``--ckpt PATH`` skips the training and
   evaluates that checkpoint (the preset and overrides must be the ones it was trained with);
3. evaluate the EMA weights (key ``model``) with the bundle's own pieces, parsed from the same
   configs and overrides: ``load_transforms`` and ``validate#preprocessing_tail`` (the
   loading chain, ``AntialiasResized`` to ``spatial_size``, PBTSeg of ``pbtseg_mode``, the
   preset's ``intensity_percentiles`` stretch, [0, 1] scaling;
   the lesion mask resized ``nearest``), ``network_def``, and
   :func:`artasyn.scoring.anomaly_scores` with ``score_map_mode`` / ``score_map_sigma`` /
   ``score_map_intensity``, ``taus`` and ``min_threshold``. The ground-truth lung mask is resized like the lesion mask,
   and the PBTSeg map of the other mode is computed beside the preset's, on the same resized
   image. Every metric is computed at ``spatial_size``, on the whole image: where the preset
   crops to the lungs (``lung_box_margin``, ``cpu.json``), the network sees the crop, and its
   maps and masks are put back into the crop's box on the whole image's grid (zero outside, as
   ``run inference`` does), against the uncropped ground truth; the results then also say how
   much of the lesions and of the lungs the crops hold (``data``), and the candidate maps of
   ``--n-ref`` are not computed:

   - pixel AUROC inside the ground-truth lungs (score: the anomaly map, label: the infection
     mask): pooled over all test pixels inside the lungs (micro) and the mean of the per-image
     AUROC (images whose lungs hold both classes), exact (Mann-Whitney from average ranks);
     the same two for the raw intensity (the image in [0, 1]);
   - micro Dice (TP, FP, FN pooled over the test set) and mean per-image Dice of the bundle's
     masks for every tau (relative threshold per image), as they are (``whole_image``), zeroed
     outside the PBTSeg lung map of the preset (``in_pbtseg_lung``, the bundle's
     ``mask_in_lungs``: an empty map keeps the whole image) and outside the ground-truth lung
     (``in_gt_lung``);
   - oracle upper bounds (thresholds chosen on the test set itself): the best micro Dice of
     ``anomaly_map >= t`` over every threshold ``t`` (each distinct value of the pooled map),
     on the whole image and inside the ground-truth lungs; the same for the raw intensity
     inside the ground-truth lungs;
   - constant baselines: micro Dice of predicting the whole image, the whole PBTSeg lung map
     (``mode="paper"`` and ``mode="robust"``; an empty map predicts nothing) and the whole
     ground-truth lung.

4. write ``bench/results/zeroshot.json`` atomically (a temporary file, then ``os.replace``)
   after the training and after the evaluation, and print a Markdown table.

Usage::

    python bench/bench_zeroshot.py --dry-run  # datalist and training command only
    nohup python bench/bench_zeroshot.py > zeroshot.log 2>&1 &  # cpu.json: train, then evaluate
    python bench/bench_zeroshot.py --ckpt bench/results/zeroshot_work/models/model_final.pt
    # smoke run (seconds): 4 iterations, 8 training images, 6 test images
    python bench/bench_zeroshot.py --max-iterations 4 --set iterations_per_epoch 2 \\
        --max-train-items 8 --set max_val_items 6 --max-test-items 6 --set num_workers 0 \\
        --workdir /tmp/zs --out /tmp/zs/zeroshot.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO / "bundle") not in sys.path:  # the bundle's ``scripts``, as its configs import them
    sys.path.insert(0, str(REPO / "bundle"))

from bench_train_real import _images, _overrides, _run, machine_info, refuse_unknown_ids  # noqa: E402

from scripts.utils import atomic_write  # noqa: E402

PBTSEG_MODES = ("paper", "robust")
#: ``docs/method.md`` section 8, measured at 128 x 128 on ``covidquex_covid_infection``
REFERENCE_128 = {
    "dice_whole_image": 0.239,
    "dice_pbtseg_lung": 0.448,
    "dice_gt_lung": 0.706,
    "raw_intensity_auroc_mean_per_image": 0.616,
}
MASK_REGIONS = ("whole_image", "in_pbtseg_lung", "in_gt_lung")


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def _spread(items: Sequence, k: int) -> list:
    """``k`` items spread evenly over ``items`` (all of them when ``k >= len(items)``)."""
    n = len(items)
    return list(items) if k >= n else [items[(i * n) // k] for i in range(k)]


def build_zeroshot_datalist(
    data_root: Path,
    n_monitor: int = 24,
    monitor_in_test: bool = False,
    n_healthy_test: int = 0,
    n_monitor_healthy: int | None = None,
    extra_training: Sequence[Path] = (),
    adult_training: bool = True,
) -> dict:
    """``training``, ``validation`` (monitor), ``test`` and ``healthy_test`` sections, as in the module docstring.

    Test items carry ``lung_mask`` (the ground-truth lung) beside ``mask`` (the infection);
    the bundle's datalist reader ignores the extra key. ``healthy_test``: ``n_healthy_test``
    healthy adult images spread evenly over the would-be training images, held apart from
    training and from the thresholds (the share of them that get a mask). ``n_monitor_healthy``
    (default: ``n_monitor`` ``covidquex_normal_lung`` images): that many healthy monitor images
    spread evenly over both healthy sources (COVID-QU-Ex normal, then NIH), so that the image
    threshold of the mask gate sees every source and more than one image above its 0.95 quantile.
    ``extra_training``: further folders of healthy images (e.g. ``zhanglab_train_normal``) added
    to the training section only; the monitor and held-apart healthy images stay adult ones.
    ``adult_training`` False: the adult healthy images left after the monitor and held-apart
    ones join no section, so that training sees the ``extra_training`` folders only.
    """
    normal = _images(data_root / "covidquex_normal_lung" / "images")
    nih = _images(data_root / "nih_nofinding_normal" / "images")
    covid_dir = data_root / "covidquex_covid_infection"
    covid = _images(covid_dir / "images")
    if not normal or not covid:
        raise FileNotFoundError(
            f"real data not found under {data_root} (covidquex_normal_lung/images, covidquex_covid_infection/images)"
        )
    missing = [p.name for p in covid if not (covid_dir / "masks" / p.name).is_file()]
    missing += [f"masks_lung/{p.name}" for p in covid if not (covid_dir / "masks_lung" / p.name).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} COVID images lack a mask in {covid_dir}: {missing[:5]}")
    if n_monitor_healthy is None:
        monitor_normal = _spread(normal, n_monitor)
    else:
        monitor_normal = _spread(normal + nih, n_monitor_healthy)
    monitor_covid = _spread(covid, n_monitor)
    held = set(monitor_normal)
    train = [p for p in normal + nih if p not in held]
    healthy_test = _spread(train, n_healthy_test) if n_healthy_test > 0 else []
    held = set(healthy_test)
    train = [p for p in train if p not in held] if adult_training else []
    if not adult_training and not extra_training:
        raise ValueError("no training images: adult_training is False and no extra_training folder is given")
    extra = []
    for folder in extra_training:
        found = _images(Path(folder))
        if not found:
            raise FileNotFoundError(f"--extra-training {folder}: no images found there")
        extra += found
    train += extra
    in_monitor = set(monitor_covid)
    test_covid = covid if monitor_in_test else [p for p in covid if p not in in_monitor]

    def lesion(p: Path) -> dict:
        return {"image": str(p), "label": 1, "mask": str(covid_dir / "masks" / p.name)}

    return {
        "description": (
            "bench_zeroshot: train on "
            + " and ".join(
                (["healthy adults (covidquex normal + NIH no finding)"] if adult_training else [])
                + ([f"{len(extra)} images of the extra folders"] if extra else [])
            )
            + ", zero-shot lesion localisation on covidquex_covid_infection"
        ),
        "training": [{"image": str(p)} for p in train],
        "validation": [{"image": str(p), "label": 0} for p in monitor_normal] + [lesion(p) for p in monitor_covid],
        "test": [{**lesion(p), "lung_mask": str(covid_dir / "masks_lung" / p.name)} for p in test_covid],
        "healthy_test": [{"image": str(p), "label": 0} for p in healthy_test],
        "counts": {
            "training": len(train),
            "training_covidquex_normal": sum(1 for p in train if p.parent == normal[0].parent),
            "training_nih_nofinding": len(set(train) & set(nih)),
            "training_extra": len(extra),
            "healthy_test": len(healthy_test),
            "monitor_normal": len(monitor_normal),
            "monitor_covid": len(monitor_covid),
            "test_covid": len(test_covid),
            "monitor_covid_in_test": bool(monitor_in_test),
        },
    }


# ------------------------------------------------------------------------------------------
# metrics (numpy; pure functions)
# ------------------------------------------------------------------------------------------


def pixel_auroc(scores, labels) -> float:
    """ROC AUC of ``scores`` for the binary ``labels`` (any shapes, flattened): Mann-Whitney U.

    Exact: average ranks (``scipy.stats.rankdata``), ties count one half. NaN when one class is
    absent.
    """
    s = np.asarray(scores).ravel()
    y = np.asarray(labels).ravel() > 0
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (float(n1) * n0))


def dice_counts(pred, gt) -> np.ndarray:
    """``[TP, FP, FN]`` (int64) of binary ``pred`` against ``gt`` (same shape, > 0 is foreground)."""
    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    tp = int(np.count_nonzero(p & g))
    return np.array([tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp], np.int64)


def dice_from_counts(counts) -> float:
    """``2 TP / (2 TP + FP + FN)`` of ``[TP, FP, FN]``; NaN when both masks are empty."""
    tp, fp, fn = (float(c) for c in counts)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom > 0 else float("nan")


def micro_dice(preds, gts) -> float:
    """Dice of pixel counts pooled over images (``N x ...`` arrays or sequences of masks)."""
    return dice_from_counts(sum(dice_counts(p, g) for p, g in zip(preds, gts)))


def mean_dice(preds, gts) -> float:
    """Mean over images of the per-image Dice (images where both masks are empty are skipped)."""
    values = [dice_from_counts(dice_counts(p, g)) for p, g in zip(preds, gts)]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def best_threshold_dice(scores, labels, n_positive: int | None = None) -> tuple[float, float]:
    """The best micro Dice of ``scores >= t`` over every threshold ``t``, and that ``t``.

    ``scores`` and ``labels`` are the pooled pixels (any shapes, flattened); ``n_positive`` is
    the number of lesion pixels of the whole set when ``scores`` covers only part of it (e.g.
    the pixels inside the lungs: lesion pixels outside are false negatives of every ``t``).
    Exact: one sort, then the counts at each distinct value. An oracle: ``t`` is chosen on the
    data it is scored on.
    """
    s = np.asarray(scores).ravel()
    y = np.asarray(labels).ravel() > 0
    g = int(y.sum()) if n_positive is None else int(n_positive)
    if g < int(y.sum()):
        raise ValueError(f"n_positive {g} is smaller than the lesion pixels among the scores ({int(y.sum())})")
    if s.size == 0 or g == 0:
        return float("nan"), float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    tp = np.cumsum(y[order], dtype=np.int64)
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]  # last index of each distinct value
    dice = 2.0 * tp[last] / (last + 1 + g)
    k = int(np.argmax(dice))
    return float(dice[k]), float(s_sorted[last[k]])


EXTENT_EDGES = (1 / 3, 2 / 3)
"""Strata of lesion extent (lesion pixels / region pixels) for the per-image AUROC."""


def auroc_inside(scores: np.ndarray, labels: np.ndarray, region: np.ndarray) -> dict:
    """Pixel AUROC of ``N x H x W`` ``scores`` for ``labels`` over the pixels of ``region``.

    ``micro``: all region pixels of all images pooled; ``mean_per_image``: the mean of the
    per-image AUROC over the images whose region holds both classes (``n_images`` of them);
    ``per_image_by_extent``: that mean inside strata of the lesion's share of the region
    (:data:`EXTENT_EDGES`), each with its image count. Where a lesion fills most of a lung, its
    per-image AUROC ranks it against the few healthy pixels left, so the strata say which images
    the mean is made of.
    """
    region = region > 0
    per_image, extent = [], []
    for s, y, r in zip(scores, labels, region):
        a = pixel_auroc(s[r], y[r])
        if not np.isnan(a):
            per_image.append(a)
            extent.append(float((y[r] > 0).mean()))
    stratum = np.digitize(extent, EXTENT_EDGES)
    bounds = (0.0, *EXTENT_EDGES, 1.0)
    by_extent = {}
    for k in range(len(bounds) - 1):
        values = [a for a, j in zip(per_image, stratum) if j == k]
        by_extent[f"{bounds[k]:.2f}-{bounds[k + 1]:.2f}"] = {
            "mean": float(np.mean(values)) if values else float("nan"),
            "n_images": len(values),
        }
    return {
        "micro": pixel_auroc(scores[region], labels[region]),
        "mean_per_image": float(np.mean(per_image)) if per_image else float("nan"),
        "n_images": len(per_image),
        "per_image_by_extent": by_extent,
    }


# ------------------------------------------------------------------------------------------
# the bundle's pieces
# ------------------------------------------------------------------------------------------


def bundle_parser(config_files: Sequence[str | Path], overrides: Mapping | None = None):
    """A ``monai.bundle.ConfigParser`` of ``config_files`` (merged in order) with ``overrides``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(c) for c in config_files])
    parser.update(dict(overrides or {}))
    return parser


def preset_settings(parser) -> dict:
    """The settings of the parsed preset that the evaluation uses (plain JSON values)."""
    keys = (
        "spatial_size",
        "pbtseg_size",
        "pbtseg_mode",
        "lung_box_margin",
        "taus",
        "min_threshold",
        "score_map_mode",
        "score_map_sigma",
        "score_map_intensity",
        "score_input_sigma",
        "score_in_lungs",
        "mask_in_lungs",
        "threshold_specificity",
        "threshold_pixel_quantile",
        "threshold_pixel_rule",
        "threshold_min_mask_px",
        "threshold_mask_gate",
        "seed",
        "max_iterations",
        "iterations_per_epoch",
        "max_epochs",
        "variant",
        "max_train_items",
        "max_val_items",
    )
    out = {k: parser.get_parsed_content(k) for k in keys}
    out["spatial_size"] = [int(s) for s in out["spatial_size"]]
    out["taus"] = [float(t) for t in out["taus"]]
    out["iterations"] = int(parser.get_parsed_content("total_iterations"))  # max_epochs x epoch_length
    return out


def evaluation_preprocessing(parser, crop: bool = True):
    """The bundle's evaluation preprocessing, plus the other PBTSeg mode and the ground-truth lung.

    ``load_transforms + validate#preprocessing_tail`` of the parsed config (what the bundle's
    evaluator runs), with, right after its ``PBTSegd`` (``lung``, mode ``pbtseg_mode``), a
    ``PBTSegd`` of every other mode writing ``lung_<mode>`` from the same resized image, and
    the ground-truth lung mask (``lung_gt``) loaded and resized like the lesion mask.

    When the preset crops to the lungs (``lung_box_margin``), the crop also takes the
    ground-truth lung and records the box (``lung_box_start`` / ``lung_box_end``, rows and
    columns of the loaded image) and that image's size (``image_size``); ``crop=False`` leaves
    the crop out: the image as it was loaded, resized, the frame every metric is measured in.
    """
    from monai.transforms import Compose, Resized

    from artasyn.lungs.crop import LungBoxCropd
    from artasyn.lungs.pbtseg import PBTSegd
    from scripts.inference import RecordSpatialShaped
    from scripts.transforms import LoadMaskd

    load = list(parser.get_parsed_content("load_transforms"))
    tail = list(parser.get_parsed_content("validate#preprocessing_tail"))
    at = [i for i, t in enumerate(tail) if isinstance(t, PBTSegd)]
    if len(at) != 1:
        raise ValueError(f"validate#preprocessing_tail should hold one PBTSegd, found {len(at)}")
    mode, size = parser.get_parsed_content("pbtseg_mode"), parser.get_parsed_content("pbtseg_size")
    others = [
        PBTSegd("image", lung_keys=f"lung_{m}", found_postfix=None, spatial_size=size, mode=m)
        for m in PBTSEG_MODES
        if m != mode
    ]
    tail[at[0] + 1 : at[0] + 1] = others
    load_gt = LoadMaskd("lung_gt", ref_key="image", has_mask_key="has_lung_gt")
    resize_gt = Resized("lung_gt", spatial_size=parser.get_parsed_content("spatial_size"), mode="nearest")
    margin = parser.get_parsed_content("lung_box_margin")
    crops = [i for i, t in enumerate(tail) if isinstance(t, LungBoxCropd)]
    if margin is None or not crops:
        return Compose([*load, *tail, load_gt, resize_gt])
    if not crop:
        return Compose([*load, *(t for i, t in enumerate(tail) if i not in crops), load_gt, resize_gt])
    for i in crops:  # the preset's crop, taking the ground-truth lung with it and recording the box
        tail[i] = LungBoxCropd(
            [*tail[i].keys, "lung_gt"],
            source_key=tail[i].source_key,
            margin=margin,
            pbtseg_size=size,
            start_coord_key="lung_box_start",
            end_coord_key="lung_box_end",
        )
    return Compose([*load, load_gt, RecordSpatialShaped("image", "image_size"), *tail, resize_gt])


def _grid_box(d: Mapping, size: Sequence[int]) -> np.ndarray:
    """The crop's box (``2 x 2``: start and end rows / columns) on the ``size`` grid of the whole image."""
    shape = np.asarray(d["image_size"], np.float64).reshape(2)
    scale = np.asarray(size, np.float64) / shape
    start = np.round(np.asarray(d["lung_box_start"], np.float64).reshape(2) * scale)
    end = np.maximum(np.round(np.asarray(d["lung_box_end"], np.float64).reshape(2) * scale), start + 1)
    return np.stack([start, end]).astype(np.int64)


def to_frame(values: np.ndarray, boxes: np.ndarray, mode: str = "bilinear") -> np.ndarray:
    """``N x H x W`` maps (or masks) of the cropped frame put back on the whole image's ``H x W`` grid.

    Each is resized to its box (``boxes[i]``, from :func:`_grid_box`) and placed on a zero canvas,
    as ``run inference`` puts a map back at the original size (``scripts.inference.ResizeToShaped``):
    outside the crop, nothing was examined and nothing is marked. ``mode``: ``bilinear`` for maps,
    ``nearest`` for masks (returned as bool).
    """
    from scripts.inference import ResizeToShaped

    size = list(values.shape[-2:])
    put = ResizeToShaped("v", shape_key="size", mode=mode, box_start_key="start", box_end_key="end")
    out = np.zeros(values.shape, bool if mode == "nearest" else np.float32)
    for i, (v, box) in enumerate(zip(values, boxes)):
        d = put({"v": torch.as_tensor(np.asarray(v, np.float32))[None], "size": size, "start": box[0], "end": box[1]})
        out[i] = d["v"][0].numpy() > 0.5 if mode == "nearest" else d["v"][0].numpy()
    return out


def load_test_arrays(items: Sequence[Mapping], parser) -> dict:
    """Preprocess the test items: ``N x H x W`` arrays at ``spatial_size``.

    ``image`` float32 in [0, 1]; ``infection``, ``lung_gt`` and ``lung_paper`` /
    ``lung_robust`` (PBTSeg label maps > 0) bool; ``lung`` the preset's PBTSeg map; ``paths``.
    These are what the network sees. When the preset crops to the lungs, ``frame`` holds the
    same arrays of the whole image (no crop; the frame every metric is measured in) and
    ``boxes`` (``N x 2 x 2``) where each crop lies on its grid; otherwise ``frame`` is ``None``.
    """
    prep = evaluation_preprocessing(parser)
    margin = parser.get_parsed_content("lung_box_margin")
    whole = evaluation_preprocessing(parser, crop=False) if margin is not None else None
    size = [int(s) for s in parser.get_parsed_content("spatial_size")]
    mode = parser.get_parsed_content("pbtseg_mode")

    def arrays_of(prep) -> tuple[dict, list]:
        keys = ("image", "infection", "lung_gt", *(f"lung_{m}" for m in PBTSEG_MODES))
        out: dict[str, list] = {k: [] for k in keys}
        boxes = []
        for item in items:
            d = prep({"image": item["image"], "mask": item["mask"], "lung_gt": item["lung_mask"], "label": 1})
            out["image"].append(np.asarray(d["image"], np.float32)[0])
            out["infection"].append(np.asarray(d["mask"])[0] > 0.5)
            out["lung_gt"].append(np.asarray(d["lung_gt"])[0] > 0.5)
            for m in PBTSEG_MODES:
                out[f"lung_{m}"].append(np.asarray(d["lung" if m == mode else f"lung_{m}"])[0] > 0)
            if "lung_box_start" in d:
                boxes.append(_grid_box(d, size))
        arrays = {k: np.stack(v) for k, v in out.items()}
        arrays["lung"] = arrays[f"lung_{mode}"]
        arrays["paths"] = [str(it["image"]) for it in items]
        return arrays, boxes

    arrays, boxes = arrays_of(prep)
    arrays["frame"] = None
    if whole is not None:
        arrays["frame"], _ = arrays_of(whole)
        arrays["boxes"] = np.stack(boxes) if boxes else np.zeros((0, 2, 2), np.int64)
    return arrays


def load_network(parser, ckpt: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``network_def`` of the parsed config with the EMA weights (key ``model``) of ``ckpt``, in eval mode."""
    from scripts.checkpoint import LoadCheckpoint

    net = parser.get_parsed_content("network_def", lazy=False).to(device)
    LoadCheckpoint(ckpt, {"model": net}, map_location=device)()
    return net.eval()


@torch.no_grad()
def reconstruct(
    net: torch.nn.Module, images: np.ndarray, device="cpu", batch_size: int = 16, input_sigma: float = 0.0
) -> np.ndarray:
    """The network's reconstructions of ``N x H x W`` images in [0, 1] (float32, same shape), the
    input smoothed by ``input_sigma`` pixels first as the bundle's inferer does (``score_input_sigma``)."""
    from artasyn.scoring import SmoothedInputInferer

    inferer = SmoothedInputInferer(input_sigma)
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i : i + batch_size, None]).to(device)
        out.append(inferer(x, net)[:, 0].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros_like(images)


def zeroshot_metrics(arrays: Mapping, recon: np.ndarray, settings: Mapping) -> dict:
    """Every metric of the module docstring from :func:`load_test_arrays`' arrays and the reconstructions.

    The maps and masks are made where the network works (the crop, for a preset that crops to the
    lungs) and measured on the whole image (``arrays["frame"]``, the maps put back by
    :func:`to_frame`; zero outside the crop), against the uncropped ground truth.
    """
    from artasyn.scoring import anomaly_scores

    images, lung = arrays["image"], arrays["lung"]
    frame = arrays.get("frame")
    ref = arrays if frame is None else frame  # the whole image's arrays

    def back(values: np.ndarray, i: int, mode: str) -> np.ndarray:
        return values if frame is None else to_frame(values, arrays["boxes"][i : i + 1].repeat(len(values), 0), mode)

    infection, lung_gt = ref["infection"], ref["lung_gt"]
    taus = list(settings["taus"])
    counts = {r: np.zeros((len(taus), 3), np.int64) for r in MASK_REGIONS}
    per_image = {r: [[] for _ in taus] for r in MASK_REGIONS}
    amaps = np.empty(ref["image"].shape, np.float32)
    for i in range(len(images)):
        x, r = torch.from_numpy(images[i][None]), torch.from_numpy(recon[i][None])
        found = {}
        for region, region_map in (("whole_image", None), ("in_pbtseg_lung", lung[i])):
            amap, _, masks = anomaly_scores(
                x,
                r,
                taus,
                settings["min_threshold"],
                lung=None if region_map is None else torch.from_numpy(region_map),
                mask_in_lungs=region_map is not None,
                map_mode=settings["score_map_mode"],
                map_sigma=settings["score_map_sigma"],
                map_intensity=settings["score_map_intensity"],
            )
            found[region] = back(masks.numpy(), i, "nearest") > 0.5
        # zeroed outside the ground-truth lung (the whole image when it has none), as mask_in_lungs does
        found["in_gt_lung"] = found["whole_image"] & (lung_gt[i] if lung_gt[i].any() else True)
        for region in MASK_REGIONS:
            for t, m in enumerate(found[region]):
                c = dice_counts(m, infection[i])
                counts[region][t] += c
                per_image[region][t].append(dice_from_counts(c))
        amaps[i] = back(amap.numpy(), i, "bilinear")[0]

    def tau_table(values) -> dict:
        return {f"tau{t:g}": v for t, v in zip(taus, values)}

    n_lesion = int(infection.sum())
    inside = lung_gt
    best_all = best_threshold_dice(amaps, infection)
    best_lung = best_threshold_dice(amaps[inside], infection[inside], n_lesion)
    best_raw = best_threshold_dice(ref["image"][inside], infection[inside], n_lesion)
    return {
        "pixel_auroc_in_gt_lung": {
            "anomaly_map": auroc_inside(amaps, infection, inside),
            "raw_intensity": auroc_inside(ref["image"], infection, inside),
        },
        "masks_micro_dice": {r: tau_table(dice_from_counts(c) for c in counts[r]) for r in MASK_REGIONS},
        "masks_mean_dice_per_image": {
            r: tau_table(float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan") for v in per_image[r])
            for r in MASK_REGIONS
        },
        "oracle_best_threshold_micro_dice": {
            "anomaly_map_whole_image": {"dice": best_all[0], "threshold": best_all[1]},
            "anomaly_map_in_gt_lung": {"dice": best_lung[0], "threshold": best_lung[1]},
            "raw_intensity_in_gt_lung": {"dice": best_raw[0], "threshold": best_raw[1]},
        },
        "constant_baselines_micro_dice": {
            "whole_image": micro_dice(np.ones_like(infection), infection),
            **{f"pbtseg_lung_{m}": micro_dice(ref[f"lung_{m}"], infection) for m in PBTSEG_MODES},
            "gt_lung": micro_dice(lung_gt, infection),
        },
        "data": {
            "n_images": len(images),
            "lesion_pixels": n_lesion,
            "lesion_fraction_inside_gt_lung": float(infection[inside].sum() / max(n_lesion, 1)),
            **{
                f"lesion_fraction_inside_pbtseg_{m}": float(infection[ref[f"lung_{m}"]].sum() / max(n_lesion, 1))
                for m in PBTSEG_MODES
            },
            **{
                f"images_without_pbtseg_lung_{m}": int((~ref[f"lung_{m}"].any(axis=(1, 2))).sum()) for m in PBTSEG_MODES
            },
            "images_without_gt_lung": int((~lung_gt.any(axis=(1, 2))).sum()),
            **({} if frame is None else crop_coverage(arrays["boxes"], infection, lung_gt)),
        },
    }


def crop_coverage(boxes: np.ndarray, infection: np.ndarray, lung_gt: np.ndarray) -> dict:
    """How much of the lesions and of the ground-truth lungs lies inside the crops (whole-image grid)."""
    inside = to_frame(np.ones(infection.shape, np.float32), boxes, "nearest")
    lung_kept = [(g & k).sum() / g.sum() for g, k in zip(lung_gt, inside) if g.any()]
    return {
        "lesion_fraction_inside_crop": float((infection & inside).sum() / max(int(infection.sum()), 1)),
        "gt_lung_fraction_inside_crop": float((lung_gt & inside).sum() / max(int(lung_gt.sum()), 1)),
        "images_with_gt_lung": len(lung_kept),
        "images_keeping_99pct_of_gt_lung_in_crop": int(sum(f >= 0.99 for f in lung_kept)),
        "gt_lung_fraction_inside_crop_worst_image": float(min(lung_kept)) if lung_kept else float("nan"),
    }


def bundle_maps(arrays: Mapping, recon: np.ndarray, settings: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """``(maps N x H x W, scores N)``: the bundle's anomaly maps and image scores (``AnomalyScored``'s options)."""
    from artasyn.scoring import anomaly_map, image_score

    maps = np.empty_like(arrays["image"])
    scores = np.empty(len(maps), np.float64)
    for i in range(len(maps)):
        amap = anomaly_map(
            torch.from_numpy(arrays["image"][i][None]),
            torch.from_numpy(recon[i][None]),
            settings["score_map_mode"],
            settings["score_map_sigma"],
            settings["score_map_intensity"],
        )
        lung = torch.from_numpy(arrays["lung"][i]) if settings["score_in_lungs"] else None
        maps[i], scores[i] = amap[0].numpy(), float(image_score(amap, lung)[0])
    return maps, scores


def monitor_thresholds(arrays: Mapping, recon: np.ndarray, labels: np.ndarray, settings: Mapping) -> dict:
    """The thresholds the bundle's validation would save on the monitor set under the preset's settings.

    :func:`artasyn.scoring.thresholds.calibrate_thresholds` with ``threshold_*`` of the preset,
    the healthy monitor images' maps (and lungs with ``mask_in_lungs``) and, for rule ``dice``,
    the COVID monitor images with their lesion masks, as ``scripts.thresholds.ThresholdCalibrator``
    collects them: a checkpoint calibrated under other settings is evaluated as if trained with them.
    """
    from artasyn.scoring.thresholds import calibrate_thresholds

    maps, scores = bundle_maps(arrays, recon, settings)
    healthy, lesion = labels < 0.5, labels >= 0.5
    lungs = [arrays["lung"][i] if settings["mask_in_lungs"] else None for i in range(len(maps))]
    rule = settings["threshold_pixel_rule"]
    use_lesions = rule == "dice"
    return calibrate_thresholds(
        scores,
        labels,
        list(maps[healthy]),
        settings["threshold_specificity"],
        settings["threshold_pixel_quantile"],
        rule,
        settings["threshold_min_mask_px"],
        healthy_lungs=[lungs[i] for i in np.flatnonzero(healthy)],
        mask_gate=settings["threshold_mask_gate"],
        lesion_maps=list(maps[lesion]) if use_lesions else None,
        lesion_masks=list(arrays["infection"][lesion]) if use_lesions else None,
        lesion_scores=scores[lesion] if use_lesions else None,
        lesion_lungs=[lungs[i] for i in np.flatnonzero(lesion)] if use_lesions else None,
    )


def saved_masks(arrays: Mapping, recon: np.ndarray, settings: Mapping, decision: Mapping) -> np.ndarray:
    """``N x H x W`` bool: the masks the bundle saves (``AnomalyDecisiond`` with ``decision``'s thresholds).

    ``decision``: ``pixel_threshold``, ``min_mask_px``, ``mask_gate_threshold`` (``None``: no gate);
    the masks are zeroed outside the preset's PBTSeg lungs when ``mask_in_lungs``.
    """
    from artasyn.scoring.thresholds import AnomalyDecisiond

    maps, scores = bundle_maps(arrays, recon, settings)
    decide = AnomalyDecisiond(
        pixel_threshold=decision["pixel_threshold"],
        min_mask_px=decision["min_mask_px"],
        mask_in_lungs=settings["mask_in_lungs"],
        mask_gate_threshold=decision.get("mask_gate_threshold"),
    )
    out = np.zeros(maps.shape, bool)
    for i in range(len(maps)):
        d = decide(
            {
                "score": torch.tensor([scores[i]]),
                "anomaly_map": torch.from_numpy(maps[i][None]),
                "lung": torch.from_numpy(arrays["lung"][i][None]),
            }
        )
        out[i] = d["abs_mask"][0].numpy() > 0.5
    return out


def saved_mask_metrics(test: Mapping, test_recon, healthy: Mapping | None, healthy_recon, settings, decision) -> dict:
    """Micro Dice of the saved masks on the test COVID images, and the share of held-apart healthy images masked.

    The Dice is measured on the whole image (the masks put back from a crop, :func:`to_frame`);
    which images have a mask at all is read where the masks are made.
    """
    m = saved_masks(test, test_recon, settings, decision)
    whole = m if test.get("frame") is None else to_frame(m, test["boxes"], "nearest")
    gt = test["infection"] if test.get("frame") is None else test["frame"]["infection"]
    out = {
        "micro_dice": micro_dice(whole, gt),
        "mean_dice_per_image": mean_dice(whole, gt),
        "covid_with_mask": float(m.any(axis=(1, 2)).mean()),
        "healthy_mask_rate": None,
        "n_healthy": 0,
        **{k: decision.get(k) for k in ("pixel_threshold", "min_mask_px", "mask_gate_threshold")},
    }
    if healthy is not None and len(healthy["image"]):
        h = saved_masks(healthy, healthy_recon, settings, decision)
        out.update(healthy_mask_rate=float(h.any(axis=(1, 2)).mean()), n_healthy=len(h))
    return out


def _gauss(values: np.ndarray, sigma: float) -> np.ndarray:
    """Each ``H x W`` map of ``values`` (``N x H x W``) smoothed by a Gaussian of ``sigma`` pixels."""
    from scipy import ndimage

    d = values.astype(np.float32)
    return np.stack([ndimage.gaussian_filter(x, sigma) for x in d]) if sigma > 0 else d


def _signed(images: np.ndarray, recon: np.ndarray, sigma: float) -> np.ndarray:
    """``image - recon`` smoothed by a Gaussian of ``sigma`` pixels (the signed map before squaring)."""
    return _gauss(images - recon, sigma)


def _z(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``values`` normalised per location by the mean and spread of the healthy ``ref`` (``N x H x W``)."""
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    return (values - mu) / (sd + 0.1 * float(sd.mean()) + 1e-12)


@torch.no_grad()
def feature_distance_maps(
    net: torch.nn.Module, images: np.ndarray, recon: np.ndarray, device="cpu", batch_size: int = 16
) -> dict[int, np.ndarray]:
    """``1 - cosine`` of the encoder features of each image and of its reconstruction, per location.

    One ``N x H x W`` map per encoder resolution (the last encoder block at that resolution, from
    ``encoder_features``), resized bilinearly to the image size; keyed by the feature map's width.
    """
    out: dict[int, list[np.ndarray]] = {}
    size = images.shape[-2:]
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i : i + batch_size, None]).to(device)
        r = torch.from_numpy(recon[i : i + batch_size, None]).to(device)
        last = {fx.shape[-1]: (fx, fr) for fx, fr in zip(net.encoder_features(x), net.encoder_features(r))}
        for width, (fx, fr) in last.items():
            d = 1.0 - torch.nn.functional.cosine_similarity(fx.float(), fr.float(), dim=1, eps=1e-6)[:, None]
            d = torch.nn.functional.interpolate(d, size=size, mode="bilinear", align_corners=False)
            out.setdefault(width, []).append(d[:, 0].cpu().numpy())
    return {w: np.concatenate(v) for w, v in out.items()}


def _texture(images: np.ndarray, sigma_highpass: float = 2.0, sigma_window: float = 8.0) -> np.ndarray:
    """Smoothness: ``-log`` of the local energy of the high-pass image ``x - G(x)`` (an opacity
    hides the vessels and rib edges behind it, so its texture fades; needs no network)."""
    from scipy import ndimage

    out = []
    for x in images.astype(np.float32):
        high = x - ndimage.gaussian_filter(x, sigma_highpass)
        out.append(-np.log(ndimage.gaussian_filter(high * high, sigma_window) + 1e-6))
    return np.stack(out)


def _lung_normalised(values: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Each image's map minus its median inside its (PBTSeg) lungs, over their interquartile range
    (the whole image where the lungs hold fewer than 50 pixels): exposure differences between
    images stop counting."""
    out = np.empty_like(values, dtype=np.float32)
    for i, (v, lung) in enumerate(zip(values, lungs)):
        inside = v[lung] if int(lung.sum()) >= 50 else v.ravel()
        q1, q2, q3 = np.percentile(inside, [25, 50, 75])
        out[i] = (v - q2) / (q3 - q1 + 1e-6)
    return out


def _standardised(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``values`` in units of the healthy ``ref`` maps' overall mean and spread (one scale per map kind)."""
    return (values - float(ref.mean())) / (float(ref.std()) + 1e-12)


#: the maps of :func:`location_maps`
LOCATION_MAPS = ("lower", "outer", "lower+outer", "peripheral")


def location_maps(lungs: np.ndarray) -> dict[str, np.ndarray]:
    """Maps that know only a pixel's place in its image's lungs (``lungs``: ``N x H x W`` bool).

    ``lower``: the row, 0 at the top of the lungs' vertical extent, 1 at their bottom; ``outer``:
    the distance from the lungs' centre column, 1 at their outermost column; ``lower+outer``: the
    sum; ``peripheral``: minus the distance to the nearest pixel outside the lungs. Nothing is
    fitted; an image without lungs gets a constant map (its pixels tie).
    """
    from scipy import ndimage

    n, h, w = lungs.shape
    out = {name: np.zeros((n, h, w), np.float32) for name in LOCATION_MAPS}
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    for i, lung in enumerate(lungs):
        if not lung.any():
            continue
        r, c = np.nonzero(lung)
        top, bottom, left, right = r.min(), r.max(), c.min(), c.max()
        lower = (rows - top) / max(bottom - top, 1)
        outer = np.abs(cols - (left + right) / 2.0) / max((right - left) / 2.0, 1.0)
        out["lower"][i], out["outer"][i], out["lower+outer"][i] = lower, outer, lower + outer
        out["peripheral"][i] = -ndimage.distance_transform_edt(lung)
    return out


def lung_bins(lungs: np.ndarray, bins: int) -> np.ndarray:
    """``N x H x W`` int: each pixel's cell of a ``bins x bins`` grid over its image's lung box.

    The cell of row fraction ``(row - top) / (bottom - top)`` and column fraction ``(col - left) /
    (right - left)`` of the box around the lungs' pixels, clipped to the grid (pixels beyond the box
    join the nearest cell); an image without lungs uses the whole image as its box.
    """
    n, h, w = lungs.shape
    out = np.empty((n, h, w), np.int64)
    rows, cols = np.mgrid[0:h, 0:w]
    for i, lung in enumerate(lungs):
        r, c = np.nonzero(lung) if lung.any() else (np.array([0, h - 1]), np.array([0, w - 1]))
        v = (rows - r.min()) / max(int(r.max() - r.min()), 1)
        u = (cols - c.min()) / max(int(c.max() - c.min()), 1)
        row_cell, col_cell = (np.clip((f * bins).astype(np.int64), 0, bins - 1) for f in (v, u))
        out[i] = row_cell * bins + col_cell
    return out


def z_lung(values: np.ndarray, lungs: np.ndarray, ref: np.ndarray, ref_lungs: np.ndarray, bins: int = 8) -> np.ndarray:
    """``values`` normalised per place in the lungs (:func:`lung_bins`) by the mean and spread of
    the healthy ``ref`` maps' lung pixels in the same cell (:func:`_z`'s per-location normalisation,
    with the place measured in lung coordinates instead of image coordinates)."""
    cells, ref_cells = lung_bins(lungs, bins), lung_bins(ref_lungs, bins)
    inside = ref_lungs > 0
    k = bins * bins
    count = np.bincount(ref_cells[inside], minlength=k).astype(np.float64)
    total = np.bincount(ref_cells[inside], weights=ref[inside].astype(np.float64), minlength=k)
    total2 = np.bincount(ref_cells[inside], weights=ref[inside].astype(np.float64) ** 2, minlength=k)
    mu, var = np.full(k, float(ref[inside].mean())), np.full(k, float(ref[inside].var()))  # empty cells
    has = count > 0
    mu[has] = total[has] / count[has]
    var[has] = total2[has] / count[has] - mu[has] ** 2
    sd = np.sqrt(np.clip(var, 0, None))
    sd = sd + 0.1 * float(sd.mean()) + 1e-12
    return ((values - mu[cells]) / sd[cells]).astype(np.float32)


def ssim_maps(x: np.ndarray, r: np.ndarray, sigma: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Local SSIM of ``N x H x W`` images in [0, 1] and its contrast-structure term ``cs``.

    Gaussian window of ``sigma`` pixels and the constants of Wang et al. (2004) for a data range
    of 1: ``SSIM = l * cs`` with ``l = (2 mx mr + c1) / (mx^2 + mr^2 + c1)`` and
    ``cs = (2 cov + c2) / (vx + vr + c2)``; 1 where the two images agree.
    """
    from scipy import ndimage

    c1, c2 = 0.01**2, 0.03**2
    x, r = x.astype(np.float64), r.astype(np.float64)

    def g(a):
        return ndimage.gaussian_filter(a, (0, sigma, sigma), mode="reflect")

    mx, mr = g(x), g(r)
    vx, vr, cov = g(x * x) - mx * mx, g(r * r) - mr * mr, g(x * r) - mx * mr
    cs = (2 * cov + c2) / (vx + vr + c2)
    return (2 * mx * mr + c1) / (mx * mx + mr * mr + c1) * cs, cs


#: the weights ``k`` of the intensity in :func:`map_variants`' ``signed_sigma6+raw_k<k>``
FIXED_INTENSITY_WEIGHTS = (0.03, 0.05, 0.1, 0.2)


def intensity_weight(ref_images: np.ndarray, ref_recon: np.ndarray, sigma: float = 6.0) -> float:
    """The intensity weight that ``signed_sigma<s>+raw`` implies: healthy signed error's spread / intensity's.

    ``signed_sigma<s>+raw`` adds the signed error and the intensity, each in units of its healthy
    reference images' spread; up to a constant and a scale (neither changes a ranking) that is the
    signed error plus this weight times the intensity.
    """
    return float(_signed(ref_images, ref_recon, sigma).std()) / (float(ref_images.std()) + 1e-12)


def map_variants(
    arrays: Mapping,
    recon: np.ndarray,
    ref_images: np.ndarray,
    ref_recon: np.ndarray,
    features: Mapping[int, np.ndarray] | None = None,
    ref_features: Mapping[int, np.ndarray] | None = None,
    iterated: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
    ref_lungs: np.ndarray | None = None,
) -> dict:
    """Pixel AUROC inside the ground-truth lungs of candidate anomaly maps (no threshold involved).

    ``positive_sigma<s>``: ``relu(x - r)^2`` with ``x - r`` smoothed at ``s`` pixels (the preset's
    map at its own sigma); ``signed_sigma<s>``: the smoothed ``x - r`` itself (ranks the pixels the
    positive map ties at 0); ``z_signed_sigma<s>``: that, normalised per location by its mean and
    spread over healthy reference images (the error every healthy radiograph makes at ribs, heart
    border and clavicles stops counting); ``raw_z``: the intensity normalised the same way, a
    trivial baseline that needs no network; ``signed_sigma<s>+raw``: the signed error plus the
    intensity, each in units of its healthy reference images' overall mean and spread (the
    network's evidence and brightness's, weighed equally); ``signed_sigma6+raw_k<k>``: the signed
    error at sigma 6 plus ``k`` times the intensity (:data:`FIXED_INTENSITY_WEIGHTS`), the same
    sum with a weight fixed in advance instead of one from healthy statistics; ``texture``: smoothness, ``-log`` of the
    local high-pass energy (no network), and ``signed_sigma12+raw+texture`` the three summed the
    same way; with ``arrays["lung"]`` (the PBTSeg lungs), ``raw_lungnorm`` and
    ``signed_sigma12_lungnorm+raw_lungnorm``: intensity and signed error normalised per image by
    their median and interquartile range inside its lungs.

    With ``features`` / ``ref_features`` (:func:`feature_distance_maps` of the test and the healthy
    reference images): ``feature_cos<w>`` per encoder resolution, ``feature_cos_all`` their sum
    in units of the healthy maps' spread, and ``feature_cos_all+signed_sigma6`` that sum plus the
    signed error at sigma 6 scaled the same way (the scales come from the healthy images only).

    ``ssim_sigma<s>``: ``1 - SSIM(x, r)`` (:func:`ssim_maps`, a change of local brightness,
    contrast or structure) smoothed at ``s`` pixels; ``ssim_struct_sigma12``: ``1 - cs`` (no
    brightness term) at 12 pixels.

    With ``iterated`` (``k`` -> the ``k``-th reconstructions of the test and of the reference
    images, ``r_k = net(r_{k-1})``: each pass removes more of what the network reads as anomalous):
    ``iter<k>_signed_sigma<s>`` and ``iter<k>_signed_sigma<s>+raw``, the maps above with ``r_k`` for ``r``.

    With ``arrays["lung"]`` and ``ref_lungs`` (the reference images' PBTSeg lungs): the location
    baselines of :func:`location_maps` (``location_<name>``: no network, no intensity; COVID
    opacities favour the lower, outer lung), and ``positive_sigma3+location_lower`` and
    ``signed_sigma12+raw+location_lower``: those maps plus ``lower``, each in units of its healthy
    reference images' spread as above (a measurement of what the maps add to where a pixel lies,
    not a candidate: the prior is COVID's, not every disease's). With them as well, ``zlung_*``: the
    positive map at sigma 3, the signed error at sigma 6 and 12 and the intensity normalised per
    place in the lungs (:func:`z_lung`: the healthy reference maps' mean and spread in each cell of
    an 8 x 8 grid over each image's lung box), and the signed error at sigma 12 plus the intensity,
    both normalised so.
    """
    images, infection, inside = arrays["image"], arrays["infection"], arrays["lung_gt"]
    out = {}
    standardised = {}  # sigma -> the signed error in units of the healthy references' (sums below)
    smoothed = {}  # sigma -> the signed error of the test and of the reference images (reused below)
    for sigma in (1.0, 3.0, 6.0, 12.0):
        signed, ref_signed = smoothed[sigma] = _signed(images, recon, sigma), _signed(ref_images, ref_recon, sigma)
        out[f"positive_sigma{sigma:g}"] = auroc_inside(np.clip(signed, 0, None) ** 2, infection, inside)
        out[f"signed_sigma{sigma:g}"] = auroc_inside(signed, infection, inside)
        out[f"z_signed_sigma{sigma:g}"] = auroc_inside(_z(signed, ref_signed), infection, inside)
        standardised[sigma] = _standardised(signed, ref_signed)
    out["raw_z"] = auroc_inside(_z(images, ref_images), infection, inside)
    raw = _standardised(images, ref_images)
    for sigma in (6.0, 12.0):
        out[f"signed_sigma{sigma:g}+raw"] = auroc_inside(standardised[sigma] + raw, infection, inside)
    for k in FIXED_INTENSITY_WEIGHTS:  # the same sum with a fixed weight: no healthy statistics at all
        out[f"signed_sigma6+raw_k{k:g}"] = auroc_inside(smoothed[6.0][0] + k * images, infection, inside)
    texture = _standardised(_texture(images), _texture(ref_images))
    out["texture"] = auroc_inside(texture, infection, inside)
    out["signed_sigma12+raw+texture"] = auroc_inside(standardised[12.0] + raw + texture, infection, inside)
    ssim, cs = ssim_maps(images, recon)
    for sigma in (3.0, 12.0):
        out[f"ssim_sigma{sigma:g}"] = auroc_inside(_gauss(1 - ssim, sigma), infection, inside)
    out["ssim_struct_sigma12"] = auroc_inside(_gauss(1 - cs, 12.0), infection, inside)
    if "lung" in arrays:
        raw_lungnorm = _lung_normalised(images, arrays["lung"])
        out["raw_lungnorm"] = auroc_inside(raw_lungnorm, infection, inside)
        both = _lung_normalised(smoothed[12.0][0], arrays["lung"]) + raw_lungnorm
        out["signed_sigma12_lungnorm+raw_lungnorm"] = auroc_inside(both, infection, inside)
    if features and ref_features:
        total = np.zeros_like(images)
        for width in sorted(features, reverse=True):
            out[f"feature_cos{width}"] = auroc_inside(features[width], infection, inside)
            total += _standardised(features[width], ref_features[width]) / len(features)
        out["feature_cos_all"] = auroc_inside(total, infection, inside)
        out["feature_cos_all+signed_sigma6"] = auroc_inside(total + standardised[6.0], infection, inside)
    for k, (recon_k, ref_recon_k) in sorted((iterated or {}).items()):
        for sigma in (6.0, 12.0):
            signed, ref_signed = _signed(images, recon_k, sigma), _signed(ref_images, ref_recon_k, sigma)
            out[f"iter{k}_signed_sigma{sigma:g}"] = auroc_inside(signed, infection, inside)
            combined = _standardised(signed, ref_signed) + raw
            out[f"iter{k}_signed_sigma{sigma:g}+raw"] = auroc_inside(combined, infection, inside)
    if "lung" in arrays and ref_lungs is not None:
        location, ref_location = location_maps(arrays["lung"]), location_maps(ref_lungs)
        for name in LOCATION_MAPS:
            out[f"location_{name}"] = auroc_inside(location[name], infection, inside)
        lower = _standardised(location["lower"], ref_location["lower"][ref_lungs])
        positive3, ref_positive3 = (np.clip(m, 0, None) ** 2 for m in smoothed[3.0])
        out["positive_sigma3+location_lower"] = auroc_inside(
            _standardised(positive3, ref_positive3) + lower, infection, inside
        )
        out["signed_sigma12+raw+location_lower"] = auroc_inside(standardised[12.0] + raw + lower, infection, inside)
        lungs = arrays["lung"]
        out["zlung_positive_sigma3"] = auroc_inside(
            z_lung(positive3, lungs, ref_positive3, ref_lungs), infection, inside
        )
        zlung = {}
        for sigma in (6.0, 12.0):
            zlung[sigma] = z_lung(smoothed[sigma][0], lungs, smoothed[sigma][1], ref_lungs)
            out[f"zlung_signed_sigma{sigma:g}"] = auroc_inside(zlung[sigma], infection, inside)
        raw_zlung = z_lung(images, lungs, ref_images, ref_lungs)
        out["zlung_raw"] = auroc_inside(raw_zlung, infection, inside)
        out["zlung_signed_sigma12+zlung_raw"] = auroc_inside(zlung[12.0] + raw_zlung, infection, inside)
    return out


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def table(results: Mapping) -> str:
    """Markdown: the detector's numbers beside the raw intensity and the constant guesses."""
    m = results["metrics"]
    size = results["settings"]["spatial_size"]
    ref = REFERENCE_128 if list(size) == [128, 128] else {}

    def f(v) -> str:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    au = m["pixel_auroc_in_gt_lung"]
    rows = [
        ("pixel AUROC in GT lungs, pooled", au["anomaly_map"]["micro"], au["raw_intensity"]["micro"], None),
        (
            "pixel AUROC in GT lungs, mean per image",
            au["anomaly_map"]["mean_per_image"],
            au["raw_intensity"]["mean_per_image"],
            ref.get("raw_intensity_auroc_mean_per_image"),
        ),
    ]
    for region in MASK_REGIONS:
        for tau, v in m["masks_micro_dice"][region].items():
            rows.append((f"micro Dice, masks {region}, {tau}", v, None, None))
    o = m["oracle_best_threshold_micro_dice"]
    rows += [
        ("oracle micro Dice, best threshold, whole image", o["anomaly_map_whole_image"]["dice"], None, None),
        (
            "oracle micro Dice, best threshold, in GT lungs",
            o["anomaly_map_in_gt_lung"]["dice"],
            o["raw_intensity_in_gt_lung"]["dice"],
            None,
        ),
    ]
    c = m["constant_baselines_micro_dice"]
    rows += [
        ("constant: whole image", c["whole_image"], None, ref.get("dice_whole_image")),
        ("constant: PBTSeg lung (paper)", c["pbtseg_lung_paper"], None, ref.get("dice_pbtseg_lung")),
        ("constant: PBTSeg lung (robust)", c["pbtseg_lung_robust"], None, None),
        ("constant: ground-truth lung", c["gt_lung"], None, ref.get("dice_gt_lung")),
    ]
    for name, v in (results.get("map_variants_pixel_auroc_in_gt_lung") or {}).items():
        rows.append(
            (
                f"pixel AUROC in GT lungs, map {name} (pooled / per image: {f(v['mean_per_image'])})",
                v["micro"],
                None,
                None,
            )
        )
    head = (
        f"| measure ({m['data']['n_images']} COVID images, {size[0]} x {size[1]}) | ART-ASyn | raw intensity "
        "| docs/method.md s. 8 (128 px) |\n|---|---|---|---|"
    )
    return "\n".join([head, *(f"| {name} | {f(a)} | {f(b)} | {f(r)} |" for name, a, b, r in rows)])


def _write_atomic(path: Path, content) -> None:
    atomic_write(path, json.dumps(content, indent=2))


def _iterations_done(ckpt: Path) -> int | None:
    """The trainer's iteration in ``last.pt`` beside ``ckpt`` (the same training), if there."""
    from scripts.checkpoint import load_checkpoint

    last = ckpt.parent / "last.pt"
    if not last.is_file():
        return None
    try:
        return int(load_checkpoint(last, keys=("trainer",))["trainer"]["iteration"])
    except Exception as e:  # the count is informative only: say why it is missing, evaluate anyway
        print(f"iterations done unknown: {e}", flush=True)
        return None


def _decision_of_checkpoint(ckpt: Path, settings: Mapping) -> dict:
    """The pixel threshold, ``min_mask_px`` and gate the bundle applies from ``ckpt`` (``CheckpointThresholds``)."""
    from scripts.thresholds import CheckpointThresholds

    t = CheckpointThresholds(
        ckpt,
        score_map_mode=settings["score_map_mode"],
        score_map_sigma=settings["score_map_sigma"],
        score_map_intensity=settings["score_map_intensity"],
        score_in_lungs=settings["score_in_lungs"],
        mask_in_lungs=settings["mask_in_lungs"],
        score_input_sigma=settings["score_input_sigma"],
    )
    saved = t.thresholds or {}
    return {
        "pixel_threshold": t.pixel_threshold,
        "min_mask_px": t.min_mask_px,
        "mask_gate_threshold": t.mask_gate_threshold,
        "pixel_rule": saved.get("pixel_rule"),
        "mask_gate": saved.get("mask_gate", "none"),
        "val_healthy_mask_rate": saved.get("val_healthy_mask_rate"),
        "val_lesion_dice": saved.get("val_lesion_dice"),
        "notes": list(t.notes),
    }


def evaluate_saved_masks(datalist, parser, settings, ckpt, device, batch_size, test, test_recon) -> dict:
    """Saved masks under the checkpoint's thresholds and under the preset's, recalibrated on the monitor set.

    ``checkpoint``: what ``run inference`` draws from ``ckpt`` (its saved thresholds; ``None``
    when they are not applied to these settings, with the notes). ``monitor_recalibrated``: the
    thresholds :func:`monitor_thresholds` computes on the monitor set with the preset's
    ``threshold_*`` settings (what a training with these settings would save, from these
    weights). Both: micro Dice on the test COVID images, the share of held-apart healthy images
    with a mask (``healthy_test``; images this checkpoint's training may have used when it was
    trained on another datalist: see ``counts``).
    """
    net = load_network(parser, ckpt, device)
    healthy_items = [{"image": it["image"], "mask": "", "lung_mask": "", "label": 0} for it in datalist["healthy_test"]]
    healthy = load_test_arrays(healthy_items, parser) if healthy_items else None
    sigma = settings["score_input_sigma"]
    healthy_recon = reconstruct(net, healthy["image"], device, batch_size, sigma) if healthy else None
    mon_items = [
        {**it, "mask": it.get("mask", ""), "lung_mask": it.get("mask", "").replace("/masks/", "/masks_lung/")}
        for it in datalist["validation"]
    ]
    mon = load_test_arrays(mon_items, parser)
    mon_recon = reconstruct(net, mon["image"], device, batch_size, sigma)
    labels = np.array([float(it["label"]) for it in datalist["validation"]])
    out = {}
    decision = _decision_of_checkpoint(ckpt, settings)
    if decision["pixel_threshold"] is not None:
        out["checkpoint"] = {
            **decision,
            **saved_mask_metrics(test, test_recon, healthy, healthy_recon, settings, decision),
        }
    else:
        out["checkpoint"] = {**decision, "not_applied": True}
    t = monitor_thresholds(mon, mon_recon, labels, settings)
    gate = t["image_threshold_specificity"] if t["mask_gate"] == "image" else None
    recal = {**t, "mask_gate_threshold": gate}
    if t["pixel_threshold"] is not None:
        recal.update(saved_mask_metrics(test, test_recon, healthy, healthy_recon, settings, recal))
    out["monitor_recalibrated"] = recal
    if healthy is not None:  # the image decision on the held-apart healthy images and the test COVID images
        _, hs = bundle_maps(healthy, healthy_recon, settings)
        _, cs = bundle_maps(test, test_recon, settings)
        out["image_flagged_at_monitor_specificity_threshold"] = {
            "threshold": t["image_threshold_specificity"],
            "healthy_test": float(np.mean(hs > t["image_threshold_specificity"])),
            "covid_test": float(np.mean(cs > t["image_threshold_specificity"])),
            "image_auroc_healthy_test_vs_covid_test": pixel_auroc(
                np.r_[hs, cs], np.r_[np.zeros(hs.size), np.ones(cs.size)]
            ),
        }
    return out


def lesion_table(results: Mapping) -> str:
    """Markdown: pixel AUROC in the GT lungs, micro Dice of saved masks and healthy mask rate, per method."""
    m, sm = results["metrics"], results.get("saved_masks") or {}
    st = results["settings"]

    def f(v) -> str:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    au = m["pixel_auroc_in_gt_lung"]
    name = f"{st['score_map_mode']} sigma {st['score_map_sigma']:g}, variant {st['variant']}"
    if st.get("score_map_intensity"):
        name += f", intensity {st['score_map_intensity']:g}"
    rows = [("raw intensity", au["raw_intensity"]["micro"], au["raw_intensity"]["mean_per_image"], None, None)]
    c = m["constant_baselines_micro_dice"]
    for key, label in (
        ("whole_image", "whole image"),
        ("pbtseg_lung_paper", "PBTSeg lung (paper)"),
        ("pbtseg_lung_robust", "PBTSeg lung (robust)"),
        ("gt_lung", "ground-truth lung"),
    ):
        rows.append((f"constant mask: {label}", None, None, c[key], 1.0))
    for key, what in (("checkpoint", "checkpoint's thresholds"), ("monitor_recalibrated", "preset's rule on monitor")):
        d = sm.get(key) or {}
        rule = f"rule {d.get('pixel_rule')}, gate {d.get('mask_gate')}"
        rows.append(
            (
                f"map {name}; masks: {what} ({rule})",
                au["anomaly_map"]["micro"],
                au["anomaly_map"]["mean_per_image"],
                d.get("micro_dice"),
                d.get("healthy_mask_rate"),
            )
        )
    n_h = (sm.get("monitor_recalibrated") or {}).get("n_healthy", 0)
    head = (
        f"| method ({m['data']['n_images']} test COVID images, {n_h} held-apart healthy) | pixel AUROC in GT lungs, "
        "pooled | per image | micro Dice, saved masks | healthy images with a mask |\n|---|---|---|---|---|"
    )
    return "\n".join([head, *(f"| {r[0]} | {f(r[1])} | {f(r[2])} | {f(r[3])} | {f(r[4])} |" for r in rows)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--preset", choices=["cpu", "small", "paper"], default="cpu", help="bundle/configs/<preset>.json")
    ap.add_argument(
        "--config",
        action="append",
        default=[],
        type=Path,
        help="a further config file applied after the preset (e.g. bundle/configs/lesions.json); repeatable",
    )
    ap.add_argument("--variant", default=None, help="synthesis variant (none, base, base_blur_cryst, final)")
    ap.add_argument(
        "--n-healthy-test",
        type=int,
        default=60,
        help="healthy adult images held apart from training and thresholds (their share with a saved mask)",
    )
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "JSON"), help="bundle override")
    ap.add_argument("--max-iterations", type=int, default=None, help="default: the preset's")
    ap.add_argument("--seed", type=int, default=None, help="default: the preset's")
    ap.add_argument("--max-train-items", type=int, default=None, help="the first N training images (smoke runs)")
    ap.add_argument("--max-test-items", type=int, default=None, help="N test images spread evenly (smoke runs)")
    ap.add_argument("--n-monitor", type=int, default=24, help="healthy and COVID images of the monitor set, each")
    ap.add_argument("--n-monitor-healthy", type=int, default=None, help="healthy monitor images, both sources")
    ap.add_argument("--monitor-in-test", action="store_true", help="keep the monitor COVID images in the test set")
    ap.add_argument(
        "--extra-training",
        action="append",
        default=[],
        type=Path,
        help="a further folder of healthy images for the training section only (repeatable)",
    )
    ap.add_argument(
        "--no-adult-training",
        action="store_true",
        help="train on the --extra-training folders only (monitor and held-apart healthy images stay adult ones)",
    )
    ap.add_argument("--ckpt", type=Path, default=None, help="evaluate this checkpoint; no training")
    ap.add_argument("--device", default=None, help="evaluation device (default: the config's)")
    ap.add_argument("--batch-size", type=int, default=16, help="evaluation batch")
    ap.add_argument("--train-timeout-h", type=float, default=48.0)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "results" / "zeroshot_work")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zeroshot.json")
    ap.add_argument("--dry-run", action="store_true", help="write the datalist and print the training command")
    ap.add_argument("--n-ref", type=int, default=96, help="healthy training images for the per-location statistics")
    ap.add_argument(
        "--n-iterate", type=int, default=3, help="candidate maps from the 2nd ... Nth reconstruction r_k = net(r_{k-1})"
    )
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    datalist = build_zeroshot_datalist(
        args.data_root,
        args.n_monitor,
        args.monitor_in_test,
        args.n_healthy_test,
        args.n_monitor_healthy,
        args.extra_training,
        not args.no_adult_training,
    )
    if args.max_test_items is not None:
        datalist["test"] = _spread(datalist["test"], args.max_test_items)
        datalist["counts"]["test_covid"] = len(datalist["test"])
    dl_path = args.workdir / "datalist.json"
    _write_atomic(dl_path, datalist)
    print(f"datalist {dl_path}: {datalist['counts']}", flush=True)

    configs = [CONFIGS / "train.json"] + ([] if args.preset == "paper" else [CONFIGS / f"{args.preset}.json"])
    configs += [c if c.is_absolute() else (REPO / c) for c in args.config]
    for c in configs:
        if not c.is_file():
            raise FileNotFoundError(f"config file not found: {c}")
    user = {k: json.loads(v) for k, v in args.set}
    refuse_unknown_ids(configs, user)
    user.update({"variant": args.variant} if args.variant is not None else {})
    user.update({"max_iterations": args.max_iterations} if args.max_iterations is not None else {})
    user.update({"seed": args.seed} if args.seed is not None else {})
    user.update({"max_train_items": args.max_train_items} if args.max_train_items is not None else {})
    parser = bundle_parser(configs, user)
    settings = preset_settings(parser)
    results = {
        "what": "zero-shot lesion localisation on covidquex_covid_infection (bench/bench_zeroshot.py docstring)",
        "command": " ".join(["python", "bench/bench_zeroshot.py", *(sys.argv[1:] if argv is None else argv)]),
        "datalist": str(dl_path),
        "counts": datalist["counts"],
        "monitor_overlap": (
            "the monitor COVID images are also test images"
            if args.monitor_in_test
            else "none: the monitor images are in neither the training nor the test set"
        ),
        "preset": args.preset,
        "config_files": [str(c.relative_to(REPO)) if c.is_relative_to(REPO) else str(c) for c in configs],
        "overrides": user,
        "settings": settings,
        "evaluated_weights": "EMA weights (key 'model') of model_final.pt, the end of training",
        "load_avg_start": list(os.getloadavg()),
        "machine": machine_info(),
    }
    train_dir = args.workdir
    train_over = {
        "ckpt_dir": str(train_dir / "models"),
        "output_dir": str(train_dir / "eval"),
        "runs_dir": str(train_dir / "runs"),
        "cache_dir": str(train_dir / "cache"),
        "datalist_file": str(dl_path),
        **user,
    }
    cfg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    train_cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", cfg, *_overrides(train_over)]
    if args.dry_run:
        print(" ".join(train_cmd))
        return 0

    if args.ckpt is None:
        log = train_dir / "train.log"
        print(f"training ({settings['iterations']} iterations), log {log}", flush=True)
        rc, t_train = _run(train_cmd, log, timeout=args.train_timeout_h * 3600)
        results["training"] = {"rc": rc, "wall_s": round(t_train, 1), "log": str(log), "command": train_cmd}
        # the monitor set's summary line of every validation (AP, AUC, Dice at the first tau)
        val = re.findall(r"\[epoch (\d+)\] (.*?) \(\d+ images", log.read_text(errors="replace"))
        results["training"]["monitor_curve"] = [f"epoch {e}: {line}" for e, line in val]
        _write_atomic(args.out, results)
        if rc != 0:
            print(f"training failed (rc {rc}); see {log}", flush=True)
            return 1
        ckpt = train_dir / "models" / "model_final.pt"
    else:
        ckpt = args.ckpt.resolve()
        results["training"] = {"skipped": True, "checkpoint_given": str(ckpt)}
    results["checkpoint"] = str(ckpt)
    results["iterations_done"] = _iterations_done(ckpt)

    device = torch.device(args.device) if args.device else parser.get_parsed_content("device")
    t0 = time.perf_counter()
    arrays = load_test_arrays(datalist["test"], parser)
    t1 = time.perf_counter()
    sigma = settings["score_input_sigma"]
    recon = reconstruct(load_network(parser, ckpt, device), arrays["image"], device, args.batch_size, sigma)
    t2 = time.perf_counter()
    results["metrics"] = zeroshot_metrics(arrays, recon, settings)
    results["saved_masks"] = evaluate_saved_masks(
        datalist, parser, settings, ckpt, device, args.batch_size, arrays, recon
    )
    if args.n_ref > 0 and arrays["frame"] is not None:
        results["map_variants_pixel_auroc_in_gt_lung"] = {}
        results["map_variants_note"] = "not computed: the preset crops to the lungs (the candidate maps are uncropped)"
        print(results["map_variants_note"], flush=True)
    elif args.n_ref > 0:  # candidate maps, the per-location statistics from healthy training images
        ref_items = [{"image": it["image"], "mask": "", "lung_mask": "", "label": 0} for it in datalist["training"]]
        ref = load_test_arrays(_spread(ref_items, args.n_ref), parser)
        net = load_network(parser, ckpt, device)
        ref_recon = reconstruct(net, ref["image"], device, args.batch_size, sigma)
        features = ref_features = None
        if hasattr(net, "encoder_features"):
            features = feature_distance_maps(net, arrays["image"], recon, device, args.batch_size)
            ref_features = feature_distance_maps(net, ref["image"], ref_recon, device, args.batch_size)
        iterated, r, ref_r = {}, recon, ref_recon
        for k in range(2, args.n_iterate + 1):  # r_k = net(r_{k-1}), test and reference images alike
            r, ref_r = reconstruct(net, r, device, args.batch_size), reconstruct(net, ref_r, device, args.batch_size)
            iterated[k] = (r, ref_r)
        results["map_variants_pixel_auroc_in_gt_lung"] = map_variants(
            arrays, recon, ref["image"], ref_recon, features, ref_features, iterated, ref["lung"]
        )
        results["map_variants_n_ref"] = len(ref["image"])
        results["map_variants_intensity_weight_sigma6"] = intensity_weight(ref["image"], ref_recon)
    t3 = time.perf_counter()
    results["wall_s"] = {
        "preprocessing": round(t1 - t0, 1),
        "reconstruction": round(t2 - t1, 1),
        "metrics": round(t3 - t2, 1),
        "total": round(t3 - t_start, 1),
    }
    results["device"] = str(device)
    results["torch_threads"] = torch.get_num_threads()
    results["load_avg_end"] = list(os.getloadavg())
    results["table_markdown"] = table(results)
    results["lesion_table_markdown"] = lesion_table(results)
    _write_atomic(args.out, results)
    print(results["table_markdown"])
    print(results["lesion_table_markdown"])
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
