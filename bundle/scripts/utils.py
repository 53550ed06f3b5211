"""Small helpers of the bundle code."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

__all__ = ["every", "stable_transform_hash"]

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
