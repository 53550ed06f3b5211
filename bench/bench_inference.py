"""Inference speed of the bundle's network on CPU (and GPU when there is one), 256 x 256 input.

Measures the reconstruction network alone (``network_def`` of ``train.json``, the paper's
configuration, eval mode, no gradients) in images per second for batch sizes 1 and 4, and
writes ``bench/results/inference.json`` and a Markdown table to stdout. PBTSeg (lungs_found)
and file writing come on top; the end-to-end rate of a run is in its summary line.

    python bench/bench_inference.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]


def rate(net, device, batch: int, repeats: int, size: int = 256) -> float:
    x = torch.rand(batch, 1, size, size, device=device)
    with torch.no_grad():
        net(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundle" / "configs" / "train.json"))
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        net = parser.get_parsed_content("network_def", lazy=False).to(device).eval()
        for batch in (1, 4):
            rows.append(
                {
                    "device": str(device),
                    "batch": batch,
                    "images_per_s": round(rate(net, device, batch, args.repeats), 3),
                }
            )
    n_params = sum(p.numel() for p in net.parameters())
    out = {
        "network": "train.json network_def (paper: base 32, mult 1,1,2,3,4, 2 res blocks, attention 8/16/32)",
        "parameters": n_params,
        "input": [1, 256, 256],
        "cpu_threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "results": rows,
    }
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "inference.json").write_text(json.dumps(out, indent=2))
    print(f"| device | batch | images/s (network only, 256 x 256, {args.threads} thread(s)) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['batch']} | {r['images_per_s']:.2f} |")


if __name__ == "__main__":
    main()
