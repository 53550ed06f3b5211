"""Small helpers of the bundle code: atomic file writes, root causes, cache keys, an event filter.

Every file the bundle writes (checkpoints, lung-cache entries, CSV / JSON reports, inference
outputs) goes through :func:`atomic_write`: the bytes are written to a temporary file in the
destination's folder (``.<name>.<pid>.<random>.tmp``), flushed and synced, given the mode a
plain ``open()`` would give (``0666`` less the process umask: ``0644`` under ``022``), then
renamed over the final name with ``os.replace``. A reader (or a later run) sees the old file
or the new one, never a part of one; a process killed while writing leaves only a temporary
file, which :func:`remove_stale_temporaries` recognises (its writer's pid is gone) and deletes.

Example::

    >>> import tempfile, pathlib
    >>> from scripts.utils import atomic_write, root_cause
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "report.json"
    >>> atomic_write(path, '{"ok": true}') == path
    True
    >>> try:
    ...     try:
    ...         raise ValueError("bad pixels in a.png")
    ...     except ValueError as e:
    ...         raise RuntimeError("applying transform <...>") from e
    ... except RuntimeError as e:
    ...     root_cause(e)
    'ValueError: bad pixels in a.png'
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import json
import logging
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from artasyn.base import as_bool

__all__ = [
    "as_bool",
    "atomic_write",
    "atomic_torch_save",
    "every",
    "file_item_hash",
    "file_mode",
    "package_fingerprint",
    "remove_stale_temporaries",
    "root_cause",
    "stable_transform_hash",
]

logger = logging.getLogger("artasyn.bundle")


_SKIP_ATTRS = {"R", "_warned", "_lazy", "_do_transform"}
#: temporary files of :func:`atomic_write`: ``.<final name>.<pid>.<random>.tmp``
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting and restoring it
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new file as ``open()`` creates it: ``0o666`` less the umask (``0o644`` under ``022``)."""
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[io.BufferedWriter], None]) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    Args:
        path: the final file; its folder is created.
        data: bytes, text (UTF-8), or a callable that writes into the open binary file object.

    The file gets the mode of :func:`file_mode` (the user's umask, not ``mkstemp``'s ``0600``).
    On any error the temporary file is removed and the final name is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_write`: no partial file ever has the final name."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when its writer died.

    Only files of the pattern ``.<name>.<pid>.<random>.tmp`` whose ``pid`` is no running process
    are removed (logged); returns their names.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = TEMP_PATTERN.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m["pid"])):
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:
                pass
    if removed:
        logger.info("removed %d temporary file(s) of interrupted writes in %s: %s", len(removed), folder, removed)
    return removed


def root_cause(exc: BaseException, path: str | os.PathLike | None = None, limit: int = 300) -> str:
    """``"<Type>: <message>"`` of the innermost exception under ``exc`` (its first line), naming ``path``.

    MONAI wraps a transform's error in ``RuntimeError: applying transform <...>`` (``raise ...
    from e``), sometimes several times; this follows ``__cause__`` (then ``__context__``) down
    to the error that says what is wrong. With ``path``, the file name is appended unless the
    message already contains it.
    """
    seen = set()
    inner = exc
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or (None if inner.__suppress_context__ else inner.__context__)
        if nxt is None:
            break
        inner = nxt
    msg = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    text = f"{type(inner).__name__}: {msg}" if msg else type(inner).__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if path is not None and str(path) not in text:
        text = f"{text} (file: {path})"
    return text


def _file_key(value) -> object:
    """``(path, size, mtime_ns)`` for a path to an existing file, else the value itself."""
    if isinstance(value, (str, os.PathLike)) and value:
        try:
            st = os.stat(value)
        except (OSError, ValueError):
            return value
        if os.path.isfile(value):
            return (str(value), int(st.st_size), int(st.st_mtime_ns))
    return value


def file_item_hash(item) -> bytes:
    """``hash_func`` of the lung cache: an md5 of the item with every file path keyed by its size and mtime.

    MONAI's default (``pickle_hashing``) keys an item by its paths only, so an image replaced in
    place keeps its old cache entry; here each value naming an existing file becomes
    ``(path, size, mtime_ns)``, so a changed file gets a new key (and is recomputed).
    """
    if isinstance(item, dict):
        keyed = {str(k): _file_key(v) for k, v in sorted(item.items(), key=lambda kv: str(kv[0]))}
    else:
        keyed = _file_key(item)
    return hashlib.md5(pickle.dumps(keyed, protocol=4)).hexdigest().encode("utf-8")


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


def tree_fingerprint(folder: str | os.PathLike) -> str:
    """An md5 of every file under ``folder`` (relative names and contents; caches skipped)."""
    root = Path(folder)
    h = hashlib.md5()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        if f.suffix in (".pyc", ".pyo"):
            continue
        h.update(f.relative_to(root).as_posix().encode("utf-8") + b"\0")
        h.update(hashlib.md5(f.read_bytes()).digest())
    return h.hexdigest()


@functools.cache
def package_fingerprint(name: str) -> str:
    """What identifies the code of a top-level package whose transforms a cache entry ran.

    ``artasyn`` and ``scripts`` (this project, often an editable install whose version does not
    change with its code): :func:`tree_fingerprint` of the package folder, data files included;
    any other package (``monai``, ...): its version.
    """
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return "unknown"
    if name in ("artasyn", "scripts") and getattr(mod, "__file__", None):
        return tree_fingerprint(Path(mod.__file__).parent)
    return str(getattr(mod, "__version__", "unknown"))


def _packages(transforms) -> set[str]:
    out = set()
    for t in transforms:
        out.add(type(t).__module__.split(".")[0])
        inner = getattr(t, "transforms", None)
        if isinstance(inner, (list, tuple)):
            out |= _packages(inner)
    return out


def stable_transform_hash(transforms) -> bytes:
    """``hash_transform`` for ``PersistentDataset``: an md5 of the transforms' classes, settings and code.

    MONAI's ``json_hashing`` falls back to the class names only (transforms are not JSON
    serializable), so a changed ``spatial_size`` would reuse stale cache files; this hashes a
    JSON description of each transform's attributes (arrays by content), so the cache key
    changes whenever a deterministic transform's setting does, and the
    :func:`package_fingerprint` of every package the transforms come from, so that an updated
    algorithm (a new PBTSeg robust mode, say) does not reuse maps its older code cached.
    """
    transforms = list(transforms)
    code = {pkg: package_fingerprint(pkg) for pkg in sorted(_packages(transforms))}
    text = json.dumps({"transforms": _describe(transforms), "code": code}, sort_keys=True, default=str)
    return hashlib.md5(text.encode("utf-8")).hexdigest().encode("utf-8")


class every:  # noqa: N801 (used like a function in configs)
    """Event filter ``(engine, event) -> bool`` true every ``n``-th event (``StatsHandler(iteration_log=...)``)."""

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))

    def __call__(self, engine, event: int) -> bool:
        return event % self.n == 0
