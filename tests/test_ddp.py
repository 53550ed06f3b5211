"""Multi-process training (``configs/multi_gpu_train.json``) with ``torchrun`` and gloo on CPU.

Two processes train the tiny network on 64 x 64 phantoms for 4 iterations: both must exit
0, the lung maps must be computed in two shards, one set of checkpoints must be written (by
rank 0), and DDP must keep the two ranks' weights identical. The training step is the
one-process step: one ``forward(input, target)`` of ``DistributedDataParallel(TwinReconstruction)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from bundle_presets import TINY_TRAIN, cli_overrides, outputs

REPO = Path(__file__).resolve().parents[1]
TINY = {
    **TINY_TRAIN,
    "max_train_items": 8,
    "max_val_items": 8,
    "max_iterations": 4,
    "iterations_per_epoch": 2,
    "log_every": 1,
}


def test_two_process_gloo_training(tmp_path):
    from artasyn.phantom import generate_phantom_dataset

    data = tmp_path / "phantoms"
    generate_phantom_dataset(str(data), n_train=8, n_test_healthy=4, n_test_diseased=4, size=64)
    finalize = [
        # test only: compare ranks
        "$torch.save(@network.state_dict(), @ckpt_dir + '/../weights_rank' + str(@rank) + '.pt')",
        "$dist.is_initialized() and dist.destroy_process_group()",
    ]
    root = tmp_path / "bundle"
    out = {k: v for k, v in outputs(root).items() if k != "runs_dir"}
    over = [
        "--dataset_dir",
        str(data),
        "--finalize",
        json.dumps(finalize),
        "--runs_dir#path",
        json.dumps(f"{root}/runs"),
    ]
    over += cli_overrides({**TINY, **out})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "monai.bundle",
            "run",
            "training",
            "--config_file",
            "['bundle/configs/train.json','bundle/configs/multi_gpu_train.json']",
            *over,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log  # torchrun fails when any rank does
    out = proc.stdout + proc.stderr
    assert "shard 0/2" in out and "shard 1/2" in out, log  # PBTSeg split across the ranks
    models = tmp_path / "bundle" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["last.pt", "model.pt", "model_final.pt"]
    ckpt = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert {"model", "model_raw", "optimizer"} <= set(ckpt)
    assert set(ckpt["model_raw"]) == set(ckpt["model"]), "DDP checkpoints carry the one-process parameter names"
    w0 = torch.load(tmp_path / "bundle" / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "bundle" / "weights_rank1.pt", weights_only=True)
    for k in w0:
        if w0[k].is_floating_point() and "running" not in k:
            assert torch.equal(w0[k], w1[k]), f"{k} differs between ranks: gradients were not synchronised"
    runs = tmp_path / "bundle" / "runs"
    assert runs.is_dir() and any(runs.iterdir())  # TensorBoard on rank 0
