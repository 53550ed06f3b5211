"""Run ``python -m monai.bundle ...`` with the ``n``-th save of one checkpoint file slowed down.

The fault battery (``tests/test_faults.py``) kills a training with ``kill -9`` while a
checkpoint is being written. A tiny network's checkpoint is written in milliseconds, so this
wrapper makes one write observable: the ``ARTASYN_SLOW_SAVE_COUNT``-th atomic save of
``ARTASYN_SLOW_SAVE_NAME`` (e.g. ``last.pt``) writes half of its bytes into the temporary file,
prints ``ARTASYN_FAULT saving <final path> via <temporary path>`` and sleeps
``ARTASYN_SLOW_SAVE_SECONDS`` before writing the rest. Everything else is the bundle as
documented: the arguments are those of ``python -m monai.bundle``.

    python tests/fault_slow_save.py run training --config_file ... --resume true
"""

from __future__ import annotations

import io
import os
import runpy
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

import torch  # noqa: E402

import scripts.checkpoint as checkpoint  # noqa: E402
from scripts.utils import atomic_write  # noqa: E402

NAME = os.environ.get("ARTASYN_SLOW_SAVE_NAME", "last.pt")
COUNT = int(os.environ.get("ARTASYN_SLOW_SAVE_COUNT", "2"))
SECONDS = float(os.environ.get("ARTASYN_SLOW_SAVE_SECONDS", "60"))
_calls = {"n": 0}


def slow_atomic_torch_save(obj, path):
    path = Path(path)
    if path.name != NAME:
        return atomic_write(path, lambda f: torch.save(obj, f))
    _calls["n"] += 1
    if _calls["n"] != COUNT:
        return atomic_write(path, lambda f: torch.save(obj, f))
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()

    def write_slowly(f):
        f.write(data[: len(data) // 2])
        f.flush()
        temps = [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
        print(f"ARTASYN_FAULT saving {path} via {temps}", flush=True)
        time.sleep(SECONDS)
        f.write(data[len(data) // 2 :])

    return atomic_write(path, write_slowly)


checkpoint.atomic_torch_save = slow_atomic_torch_save
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
