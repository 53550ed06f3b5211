"""TorchScript export of the bundle's network with ``python -m monai.bundle ckpt_export``.

The command of ``bundle/docs/deployment.md`` on a tiny network whose checkpoint has the
training's layout (``{"model": EMA weights, "model_raw": ..., "optimizer": ...}``, hence
``--key_in_ckpt model``), with ``inference.json`` alone as the config; the exported ``.ts``
must give the eager network's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from bundle_presets import TINY_NET, inference_parser

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"


def test_ckpt_export_round_trips(tmp_path):
    parser = inference_parser(TINY_NET)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "model_raw": net.state_dict(), "optimizer": {}}, ckpt)
    ts_path = tmp_path / "model.ts"
    over = []
    for k, v in TINY_NET.items():
        over += [f"--{k}", json.dumps(v)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            str(ts_path),
            "--ckpt_file",
            str(ckpt),
            "--meta_file",
            str(CONFIGS / "metadata.json"),
            "--config_file",
            "bundle/configs/inference.json",
            "--key_in_ckpt",
            "model",
            "--ckpt_path",  # the checkpoint network_def reads its arguments from (none here: TINY_NET's)
            str(ckpt),
            *over,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ts_path.is_file()

    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(ts_path), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    net.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
