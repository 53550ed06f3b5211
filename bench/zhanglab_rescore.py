#!/usr/bin/env python
"""Anomaly-score variants of one trained checkpoint on ZhangLab, without retraining.

One checkpoint, many image scores: the reconstructions of ``zhanglab_test_dev`` (where every
choice is made), ``zhanglab_val`` (reported beside) and a healthy reference set (training
normals, the only images the per-location statistics below may come from) are computed once
with the bundle's own preprocessing and network (parsed from the same presets and overrides
as the training; the input smoothed by the preset's ``score_input_sigma`` first, as the bundle's
inferer does); every score below is then a cheap function of the maps:

- ``mean``: the mean of the preset's map (``score_map_mode`` / ``score_map_sigma``), the
  bundle's image score today;
- ``topk_<p>``: the mean of the largest ``p`` percent of the map (a small lesion is not
  averaged away);
- ``z_mean`` / ``z_topk_<p>``: the map normalised per location by its mean and standard
  deviation over the healthy reference images (``(m - mu) / (sd + eps)``, positive part):
  the error every healthy image makes (ribs, heart border, clavicles) stops counting;
- ``sigma_<s>``: the positive map with ``image - recon`` smoothed at another scale;
  ``multiscale``: the mean of the per-scale z-scores of ``sigma`` 1, 3 and 6;
- ``lungs_robust``: the mean inside the robust PBTSeg lung map (dilated by 5 %);
- ``zlung_mean``: the map normalised per place in the lungs instead of per image location (the
  healthy reference maps' mean and spread in each cell of an 8 x 8 grid over each image's robust
  lung box, ``bench_zeroshot.z_lung``; positive part), averaged inside the dilated robust lungs;
- ``flip``: the map averaged with that of the horizontally flipped image (test-time
  augmentation; twice the network time);
- ``ssim_mean``: the mean of ``1 - SSIM(x, r)``, the local structural similarity of input and
  reconstruction (``bench_zeroshot.ssim_maps``: Gaussian window of 1.5 pixels, constants of
  Wang et al. 2004), which weighs a change of local contrast and structure, not only of
  brightness; ``ssim_struct``: the same without SSIM's luminance term (``1 - cs``).

AUC / AP (``monai.metrics``-equivalent rank statistics of ``trivial_baselines``) for each, on
both sets, with the trivial baselines beside. Written atomically as JSON, with a table.

Usage::

    python bench/zhanglab_rescore.py --ckpt /work/zl/base/final_seed0/models/model_final.pt \\
        --out bench/results/zhanglab_rescore_seed0.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO / "bundle") not in sys.path:
    sys.path.insert(0, str(REPO / "bundle"))

from bench_train_real import _images  # noqa: E402
from bench_zeroshot import bundle_parser, load_network, ssim_maps, z_lung  # noqa: E402
from trivial_baselines import auc, average_precision, trivial_baselines  # noqa: E402

from scripts.utils import atomic_write  # noqa: E402

TOPK = (1, 5, 10)
SIGMAS = (1.0, 3.0, 6.0)


def _items(data_root: Path, n_ref: int) -> dict[str, list[dict]]:
    sets = {}
    for name, folder in (("test_dev", "zhanglab_test_dev"), ("val", "zhanglab_val")):
        sets[name] = [{"image": str(p), "label": 0} for p in _images(data_root / folder / "normal")] + [
            {"image": str(p), "label": 1} for p in _images(data_root / folder / "pneumonia")
        ]
    train = _images(data_root / "zhanglab_train_normal")
    step = max(1, len(train) // n_ref)
    sets["ref"] = [{"image": str(p), "label": 0} for p in train[::step][:n_ref]]
    return sets


def _arrays(items: list[dict], parser) -> dict[str, np.ndarray]:
    """Images in [0, 1] and the robust lung map at ``spatial_size``, as the evaluator sees them."""
    from monai.transforms import Compose

    from artasyn import PBTSegd

    load = list(parser.get_parsed_content("load_transforms"))
    tail = list(parser.get_parsed_content("validate#preprocessing_tail"))
    size = parser.get_parsed_content("pbtseg_size")
    at = next(i for i, t in enumerate(tail) if isinstance(t, PBTSegd))
    tail.insert(at + 1, PBTSegd("image", lung_keys="lung_robust", found_postfix=None, spatial_size=size, mode="robust"))
    prep = Compose([*load, *tail])
    img, lung = [], []
    for it in items:
        d = prep({"image": it["image"], "label": it["label"], "mask": ""})
        img.append(np.asarray(d["image"], np.float32)[0])
        lung.append(np.asarray(d["lung_robust"])[0] > 0)
    return {"image": np.stack(img), "lung": np.stack(lung), "label": np.array([it["label"] for it in items])}


@torch.no_grad()
def _recon(net, images: np.ndarray, flip: bool = False, batch: int = 32, input_sigma: float = 0.0) -> np.ndarray:
    """Reconstructions as the bundle's inferer makes them (the input smoothed by ``input_sigma`` pixels)."""
    from artasyn.scoring import SmoothedInputInferer

    inferer = SmoothedInputInferer(input_sigma)
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch, None])
        if flip:
            x = torch.flip(x, dims=[-1])
        r = inferer(x, net)[:, 0].float()
        out.append((torch.flip(r, dims=[-1]) if flip else r).numpy())
    return np.concatenate(out)


def _maps(images: np.ndarray, recon: np.ndarray, mode: str, sigma: float) -> np.ndarray:
    from artasyn.scoring import anomaly_map

    return anomaly_map(torch.from_numpy(images[:, None]), torch.from_numpy(recon[:, None]), mode, sigma)[:, 0].numpy()


def _topk(m: np.ndarray, p: float) -> np.ndarray:
    flat = m.reshape(len(m), -1)
    k = max(1, int(round(flat.shape[1] * p / 100)))
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def _z(m: np.ndarray, ref: np.ndarray) -> np.ndarray:
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    return np.clip((m - mu) / (sd + 0.1 * sd.mean() + 1e-12), 0, None)


def scores(sets: dict, recon: dict, mode: str, sigma: float) -> dict[str, dict[str, np.ndarray]]:
    """Every score variant of the module docstring, per evaluated set."""
    from scipy import ndimage

    out: dict[str, dict[str, np.ndarray]] = {}
    maps = {k: _maps(sets[k]["image"], recon[k], mode, sigma) for k in sets}
    flips = {k: _maps(sets[k]["image"], recon[k + "_flip"], mode, sigma) for k in sets}
    per_sigma = {s: {k: _maps(sets[k]["image"], recon[k], "positive", s) for k in sets} for s in SIGMAS}
    for k in ("test_dev", "val"):
        m = maps[k]
        z = _z(m, maps["ref"])
        lung = np.stack([ndimage.binary_dilation(x, iterations=max(1, x.shape[0] // 40)) for x in sets[k]["lung"]])
        v = {"mean": m.mean(axis=(1, 2))}
        v.update({f"topk_{p}": _topk(m, p) for p in TOPK})
        v["z_mean"] = z.mean(axis=(1, 2))
        v.update({f"z_topk_{p}": _topk(z, p) for p in TOPK})
        v.update({f"sigma_{s:g}": per_sigma[s][k].mean(axis=(1, 2)) for s in SIGMAS})
        v["multiscale"] = np.mean([_z(per_sigma[s][k], per_sigma[s]["ref"]).mean(axis=(1, 2)) for s in SIGMAS], 0)
        v["lungs_robust"] = np.array([mm[lg].mean() if lg.any() else mm.mean() for mm, lg in zip(m, lung)])
        zl = np.clip(z_lung(m, sets[k]["lung"], maps["ref"], sets["ref"]["lung"]), 0, None)
        v["zlung_mean"] = np.array([zz[lg].mean() if lg.any() else zz.mean() for zz, lg in zip(zl, lung)])
        mf = (m + flips[k]) / 2
        v["flip"] = mf.mean(axis=(1, 2))
        v["flip_z_mean"] = _z(mf, (maps["ref"] + flips["ref"]) / 2).mean(axis=(1, 2))
        ssim, cs = ssim_maps(sets[k]["image"], recon[k])
        v["ssim_mean"] = (1 - ssim).mean(axis=(1, 2))
        v["ssim_struct"] = (1 - cs).mean(axis=(1, 2))
        out[k] = v
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--presets", nargs="*", default=["cpu.json"], help="bundle/configs files after train.json")
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "JSON"))
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--n-ref", type=int, default=200, help="healthy training images for the per-location statistics")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    overrides = {k: json.loads(v) for k, v in args.set}
    parser = bundle_parser([CONFIGS / "train.json", *(CONFIGS / p for p in args.presets)], overrides)
    mode, sigma = parser.get_parsed_content("score_map_mode"), float(parser.get_parsed_content("score_map_sigma"))
    input_sigma = float(parser.get_parsed_content("score_input_sigma"))
    if float(parser.get_parsed_content("score_map_intensity")):
        ap.error("score_map_intensity is not scored here: these variants use score_map_mode / score_map_sigma only")
    net = load_network(parser, args.ckpt)
    items = _items(args.data_root, args.n_ref)
    t0 = time.perf_counter()
    sets = {k: _arrays(v, parser) for k, v in items.items()}
    recon = {}
    for k in sets:
        recon[k] = _recon(net, sets[k]["image"], input_sigma=input_sigma)
        recon[k + "_flip"] = _recon(net, sets[k]["image"], flip=True, input_sigma=input_sigma)
    result = {
        "ckpt": str(args.ckpt),
        "presets": args.presets,
        "overrides": overrides,
        "score_map_mode": mode,
        "score_map_sigma": sigma,
        "score_input_sigma": input_sigma,
        "n": {k: len(v) for k, v in items.items()},
        "seconds": round(time.perf_counter() - t0, 1),
        "scores": {},
        "trivial_baselines": {k: trivial_baselines(items[k]) for k in ("test_dev", "val")},
    }
    for k, variants in scores(sets, recon, mode, sigma).items():
        y = sets[k]["label"]
        result["scores"][k] = {
            name: {"auc": round(auc(s, y), 4), "ap": round(average_precision(s, y), 4)} for name, s in variants.items()
        }
    lines = ["| score | test_dev AUC | test_dev AP | val AUC | val AP |", "|---|---|---|---|---|"]
    for name in result["scores"]["test_dev"]:
        a, b = result["scores"]["test_dev"][name], result["scores"]["val"][name]
        lines.append(f"| {name} | {a['auc']:.3f} | {a['ap']:.3f} | {b['auc']:.3f} | {b['ap']:.3f} |")
    for stat, b in result["trivial_baselines"]["test_dev"].items():
        if isinstance(b, dict) and "auc_best" in b:
            v = result["trivial_baselines"]["val"][stat]
            lines.append(
                f"| trivial: {stat} | {b['auc_best']:.3f} | {b['ap_best']:.3f} | {v['auc_best']:.3f} | "
                f"{v['ap_best']:.3f} |"
            )
    result["table_markdown"] = "\n".join(lines)
    atomic_write(args.out, json.dumps(result, indent=2))
    print(result["table_markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
