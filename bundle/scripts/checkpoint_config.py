"""Checkpoints that describe themselves: the network's arguments and the settings it was trained with.

The training saves, beside the weights of ``model.pt``, ``last.pt`` and ``model_final.pt``, an
entry ``config`` (``train.json``: the id ``checkpoint_config``, built by
:func:`training_config`; a plain dictionary, readable with ``torch.load(weights_only=True)``)::

    {"network": {"target": "artasyn.model.networks.AnomalyUNet", "spatial_dims": 2, "in_channels": 1,
                 "out_channels": 1, "channels": 8, "channel_mult": [1, 2, 2, 4], ...},
     "spatial_size": [128, 128], "pbtseg_size": 256, "pbtseg_mode": "paper",
     "intensity_percentiles": null, "lung_box_margin": null, "score_map_mode": "positive",
     "score_map_sigma": 3.0, "score_map_intensity": 0.0, "score_input_sigma": 0.0,
     "score_in_lungs": false, "mask_in_lungs": false, "variant": "final", "artasyn_version": "0.1.0"}

so that a checkpoint of any preset is served without that preset:

- :func:`checkpoint_network` is ``network_def`` of ``inference.json``: the network of the
  checkpoint's arguments. An argument the config gives (a preset after ``inference.json``,
  ``--network_def#channels 8``) must agree with the checkpoint's, else
  :class:`scripts.checkpoint.CheckpointError` names each id with both values; ``dropout``
  and ``zero_init`` do not change the weights' shapes and follow the config (MONAI Label's
  Monte-Carlo dropout sets ``network_def#dropout``). A checkpoint without ``config`` (trained
  before it existed, or a bare state dict) gets the given arguments, and
  :class:`artasyn.model.networks.AnomalyUNet`'s defaults (the paper's network, ``train.json``'s)
  for those not given.
- :class:`CheckpointConfig` (``inference.json``: ``checkpoint_config``) gives the working
  size and scoring settings (:data:`SETTINGS`) of the checkpoint, else the config's
  ``default_settings`` (the paper's); ``inference.json``'s ``spatial_size``,
  ``score_map_mode``, ... are read from it unless a preset or the command line gives them.
- :func:`compare_config` (:func:`scripts.checkpoint.check_checkpoint`, in ``initialize`` of
  ``inference.json`` and ``evaluate.json``) compares what a run uses with the checkpoint's
  ``config``: a network argument that differs is an error (the weights cannot load), a
  working size or scoring setting that differs is a warning, naming the id and both values
  (the run does what it was given: a deliberate rescoring with another ``score_map_mode`` is
  allowed, and the decision thresholds then follow :class:`scripts.thresholds.CheckpointThresholds`).
  The presets of ``bundle/configs`` that match the checkpoint are named in the message.

``evaluate.json`` holds overrides of ``train.json`` (whose ids always have values): it keeps
the network and settings of ``train.json`` and the presets before it, and
:func:`compare_config` checks them against the checkpoint.

Example (a checkpoint without ``config``: the defaults)::

    >>> import tempfile, torch
    >>> from scripts.checkpoint_config import CheckpointConfig
    >>> path = tempfile.mkdtemp() + "/model.pt"
    >>> torch.save({"model": {}}, path)
    >>> CheckpointConfig(path, {"spatial_size": [256, 256]})["spatial_size"]
    [256, 256]
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from pydoc import locate

import numpy as np
import torch

__all__ = [
    "CONFIG_KEY",
    "SETTINGS",
    "CheckpointConfig",
    "checkpoint_network",
    "compare_config",
    "matching_presets",
    "read_config",
    "training_config",
]

logger = logging.getLogger("artasyn.bundle")

#: the checkpoint entry that describes the training
CONFIG_KEY = "config"
#: the working size and scoring settings a checkpoint records and inference takes from it
SETTINGS = (
    "spatial_size",
    "pbtseg_size",
    "pbtseg_mode",
    "intensity_percentiles",
    "lung_box_margin",
    "score_map_mode",
    "score_map_sigma",
    "score_map_intensity",
    "score_input_sigma",
    "score_in_lungs",
    "mask_in_lungs",
)
#: settings added after checkpoints began to carry ``config``, with the value every earlier
#: checkpoint was trained with (a ``config`` without the key is read with it)
SETTINGS_BEFORE_RECORDED = {
    "intensity_percentiles": None,
    "lung_box_margin": None,
    "score_input_sigma": 0.0,
    "score_map_intensity": 0.0,
}
#: network arguments that change no weight's shape: the config's value is used as given
NETWORK_FREE_ARGS = ("dropout", "zero_init")
#: the network of a checkpoint that does not name one
DEFAULT_NETWORK = "artasyn.model.networks.AnomalyUNet"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: files of ``bundle/configs`` that are no preset of ``train.json``
_NOT_PRESETS = {"train.json", "inference.json", "evaluate.json", "metadata.json", "multi_gpu_train.json"}


def _plain(value):
    """``value`` as JSON-like Python (lists, not tuples; numbers and tensors as Python numbers)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _same(a, b) -> bool:
    return _plain(a) == _plain(b)


def training_config(network: Mapping, **settings) -> dict:
    """The ``config`` entry a training saves: ``network`` (its arguments, ``target`` its class) and ``settings``."""
    import artasyn

    network = _plain(network)
    network.setdefault("target", DEFAULT_NETWORK)
    return {"network": network, **{k: _plain(v) for k, v in settings.items()}, "artasyn_version": artasyn.__version__}


@functools.lru_cache(maxsize=8)
def _read_config(path: str, size: int, mtime_ns: int) -> dict | None:
    from .checkpoint import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(path, keys=(), mmap=True)
    config = ckpt.get(CONFIG_KEY)
    if config is not None and not isinstance(config, Mapping):
        raise CheckpointError(f"checkpoint {path}: {CONFIG_KEY!r} is a {type(config).__name__}, not a dictionary")
    return None if config is None else {**SETTINGS_BEFORE_RECORDED, **_plain(config)}


def read_config(path: str | os.PathLike | None) -> dict | None:
    """The ``config`` entry of the checkpoint at ``path``; ``None`` when it has none or there is no file.

    A setting the entry predates reads as :data:`SETTINGS_BEFORE_RECORDED` says it was trained.

    No file is no error here (``ckpt_export`` and MONAI Label parse ``network_def`` alone; the
    workflows check the checkpoint first); a file that cannot be read raises
    :class:`scripts.checkpoint.CheckpointError` naming it. Read once per file version (cached).
    """
    if not path:
        return None
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    st = path.stat()
    config = _read_config(str(path), int(st.st_size), int(st.st_mtime_ns))
    return None if config is None else json.loads(json.dumps(config))  # a copy the caller may change


def _preset_values() -> list[tuple[str, dict]]:
    """``(name, {"network": ..., setting: ...})`` of ``train.json`` alone and after each preset."""
    train = json.loads((CONFIGS / "train.json").read_text())
    base = {"network": dict(train["network_def"]), **{k: train.get(k) for k in SETTINGS}}
    out = [("train.json alone", base)]
    for path in sorted(CONFIGS.glob("*.json")):
        if path.name in _NOT_PRESETS:
            continue
        values = {**base, "network": dict(base["network"])}
        for key, value in json.loads(path.read_text()).items():
            if key.startswith("network_def#"):
                values["network"][key.split("#", 1)[1]] = value
            elif key in SETTINGS:
                values[key] = value
        out.append((path.name, values))
    return out


def matching_presets(config: Mapping) -> list[str]:
    """The presets of ``bundle/configs`` (or ``train.json`` alone) whose network and settings are ``config``'s."""
    network = {k: v for k, v in (config.get("network") or {}).items() if k not in ("target", *NETWORK_FREE_ARGS)}
    config = {**SETTINGS_BEFORE_RECORDED, **config}
    return [
        name
        for name, values in _preset_values()
        if all(_same(values["network"].get(k), v) for k, v in network.items())
        and all(_same(values[k], config[k]) for k in SETTINGS if k in config)
    ]


def _presets_hint(config: Mapping) -> str:
    names = matching_presets(config)
    return f" (its settings are those of {', '.join(names)})" if names else ""


def _fmt(value) -> str:
    return json.dumps(_plain(value))


def checkpoint_network(ckpt_path: str | os.PathLike | None = None, **given) -> torch.nn.Module:
    """The network of the checkpoint at ``ckpt_path``: its saved arguments, checked against ``given``.

    Args:
        ckpt_path: the checkpoint (``@ckpt_path``); no file or no ``config`` entry: ``given``
            arguments only, the network class's defaults for the others.
        given: the network's arguments of the config; ``None`` (``inference.json``'s value)
            means "the checkpoint's". A given value that differs from the checkpoint's raises
            :class:`scripts.checkpoint.CheckpointError` naming ``network_def#<arg>`` and both
            values, except for :data:`NETWORK_FREE_ARGS` (the given one is used).
    """
    from .checkpoint import CheckpointError

    saved = dict((read_config(ckpt_path) or {}).get("network") or {})
    target = saved.pop("target", None) or given.pop("target", None) or DEFAULT_NETWORK
    given = {k: v for k, v in given.items() if v is not None and k != "target"}
    conflicts = [
        f"network_def#{k}: {_fmt(saved[k])} in the checkpoint, {_fmt(v)} given"
        for k, v in given.items()
        if k in saved and k not in NETWORK_FREE_ARGS and not _same(saved[k], v)
    ]
    if conflicts:
        raise CheckpointError(
            f"checkpoint {ckpt_path} holds another network than the one this config gives: {'; '.join(conflicts)}"
            f"{_presets_hint(read_config(ckpt_path) or {})}. Drop these ids (a preset after inference.json, "
            "--network_def#...): inference.json alone builds the checkpoint's network"
        )
    cls = locate(target)
    if not callable(cls):
        raise CheckpointError(f"checkpoint {ckpt_path}: its network class {target!r} cannot be imported")
    args = {**saved, **given}
    if saved:
        logger.info("network of %s: %s(%s)", ckpt_path, target, ", ".join(f"{k}={_fmt(v)}" for k, v in args.items()))
    return cls(**args)


class CheckpointConfig:
    """The working size and scoring settings of a checkpoint (its ``config``), else ``defaults``.

    ``config[name]`` (``name`` in :data:`SETTINGS`): the checkpoint's value (:func:`read_config`:
    for a ``config`` that predates the setting, its value of :data:`SETTINGS_BEFORE_RECORDED`);
    ``defaults[name]`` for a checkpoint without ``config`` (trained before it existed, a bare state
    dict, no file).
    Attributes: ``path``, ``config`` (the entry or ``None``), ``defaults``.
    """

    def __init__(self, path: str | os.PathLike, defaults: Mapping) -> None:
        self.path = Path(path)
        self.defaults = _plain(dict(defaults))
        self.config = read_config(self.path)
        if self.config is None and self.path.is_file():
            logger.info(
                "checkpoint %s does not describe its training (no %r entry): working size and scoring settings "
                "of the config: %s",
                self.path,
                CONFIG_KEY,
                ", ".join(f"{k} {_fmt(v)}" for k, v in self.defaults.items()),
            )

    def __getitem__(self, name: str):
        if self.config is not None and name in self.config:
            return self.config[name]
        if name in self.defaults:
            return self.defaults[name]
        raise KeyError(f"{name!r}: neither the checkpoint {self.path} nor the defaults {sorted(self.defaults)} hold it")

    def get(self, name: str, default=None):
        try:
            return self[name]
        except KeyError:
            return default


def compare_config(path: str | os.PathLike, saved: Mapping | None, used: Mapping) -> list[str]:
    """Compare the ``config`` a checkpoint saved with what a run ``used``; returns the warnings logged.

    ``used``: ``{"network": {arg: value}, setting: value}`` (either part may be absent). A
    network argument (but :data:`NETWORK_FREE_ARGS`) that differs raises
    :class:`scripts.checkpoint.CheckpointError`; a setting of :data:`SETTINGS` that differs is
    logged as a warning. Both name the id and the two values; nothing is compared when the
    checkpoint has no ``config``.
    """
    from .checkpoint import CheckpointError

    if not saved:
        return []
    saved = {**SETTINGS_BEFORE_RECORDED, **saved}
    net_saved, net_used = saved.get("network") or {}, used.get("network") or {}
    conflicts = [
        f"network_def#{k}: {_fmt(net_saved[k])} in the checkpoint, {_fmt(v)} here"
        for k, v in net_used.items()
        if k in net_saved and k not in ("target", *NETWORK_FREE_ARGS) and not _same(net_saved[k], v)
    ]
    hint = _presets_hint(saved)
    if conflicts:
        raise CheckpointError(
            f"checkpoint {path} was trained with another network than this config's: {'; '.join(conflicts)}{hint}; "
            "pass the preset it was trained with (--config_file [train.json, <preset>, evaluate.json]) or these ids"
        )
    warnings = []
    for key in SETTINGS:
        if key in used and key in saved and not _same(saved[key], used[key]):
            warnings.append(
                f"checkpoint {path} was trained with {key} {_fmt(saved[key])}; this run uses {_fmt(used[key])} "
                f"(given by a preset or on the command line){hint}"
            )
    for w in warnings:
        logger.warning("%s", w)
    return warnings
