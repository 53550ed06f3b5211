"""Small helpers of the bundle code."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

__all__ = ["every", "find_bundle_root", "stable_transform_hash"]

_SKIP_ATTRS = {"R", "_warned", "_lazy", "_do_transform"}


def _describe(obj, depth: int = 0):
    if isinstance(obj, (bool, int, float, str, type(None))):
        return obj
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_describe(o, depth + 1) for o in items]
    if isinstance(obj, dict):
        return {str(k): _describe(v, depth + 1) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        arr = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        return {"array": hashlib.md5(np.ascontiguousarray(arr).tobytes()).hexdigest(), "shape": list(arr.shape)}
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if depth < 4 and hasattr(obj, "__dict__"):
        attrs = {k: _describe(v, depth + 1) for k, v in sorted(vars(obj).items()) if k not in _SKIP_ATTRS}
        return {"__class__": name, **attrs}
    return name


def stable_transform_hash(transforms) -> bytes:
    """``hash_transform`` for ``PersistentDataset``: an md5 of the transforms' classes and settings.

    MONAI's ``json_hashing`` falls back to the class names only (transforms are not JSON
    serializable), so a changed ``spatial_size`` would reuse stale cache files; this hashes a
    JSON description of each transform's attributes (arrays by content), so the cache key
    changes whenever a deterministic transform's setting does.
    """
    text = json.dumps(_describe(list(transforms)), sort_keys=True, default=str)
    return hashlib.md5(text.encode("utf-8")).hexdigest().encode("utf-8")


class every:  # noqa: N801 (used like a function in configs)
    """Event filter ``(engine, event) -> bool`` true every ``n``-th event (``StatsHandler(iteration_log=...)``)."""

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))

    def __call__(self, engine, event: int) -> bool:
        return event % self.n == 0


def find_bundle_root() -> str:
    """The bundle folder (the parent of ``configs/``) of the running ``monai.bundle`` command.

    In order: ``$ARTASYN_BUNDLE_ROOT``; the folder above the first ``--config_file`` of the
    command line; ``.`` when run from inside the bundle; ``./bundle`` from the repository root.
    Override it with ``--bundle_root``.
    """
    import ast
    import os
    import sys
    from pathlib import Path

    env = os.environ.get("ARTASYN_BUNDLE_ROOT")
    if env:
        return env
    argv = list(sys.argv)
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value:
            try:
                parsed = ast.literal_eval(value) if value.strip().startswith(("[", "(")) else value
            except (ValueError, SyntaxError):
                parsed = value
            first = parsed[0] if isinstance(parsed, (list, tuple)) else parsed
            cfg_dir = Path(str(first)).resolve().parent
            return str(cfg_dir.parent if cfg_dir.name == "configs" else cfg_dir)
    if Path("configs/train.json").is_file():
        return "."
    if Path("bundle/configs/train.json").is_file():
        return "bundle"
    return "."
