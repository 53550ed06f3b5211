"""Checkpoints of the bundle: written atomically, checked on load, and a training that resumes.

Files in ``ckpt_dir`` (``bundle/models``), each written by :func:`scripts.utils.atomic_torch_save`
(temporary file, fsync, ``os.replace``; the user's umask), so a kill at any moment leaves the
previous complete file under the final name, never a partial one:

- ``model.pt``: the best EMA weights by the key metric (:class:`BestModelSaver`, a handler of
  the validation evaluator): ``{"model", "model_raw", "optimizer", "thresholds"}``, what
  inference, evaluation, export and MONAI Label read (key ``model``; ``thresholds``: the
  decision thresholds of that validation, :mod:`scripts.thresholds`);
- ``last.pt``: everything to continue the training (:class:`TrainingCheckpoint`): ``model``,
  ``model_raw``, ``optimizer``, ``ema`` (the ``AveragedModel`` with its update count),
  ``trainer`` (iteration, epoch), ``best_metric`` / ``best_metric_epoch`` of the validation,
  ``thresholds`` of the last validation, ``rng`` (torch, numpy, Python and CUDA generators)
  and the AMP ``scaler``; saved after
  every epoch (after its validation), so an interruption loses at most one validation
  interval, and every ``save_every`` iterations when set;
- ``model_final.pt``: the weights at the end (``{"model", "model_raw", "optimizer", "thresholds"}``).

``thresholds`` (a plain dictionary, see :mod:`scripts.thresholds`) is there when the
validation evaluator has a :class:`scripts.thresholds.ThresholdCalibrator` (``train.json``
has); checkpoints without it (older ones) load as before. ``config`` (every file; a plain
dictionary, see :mod:`scripts.checkpoint_config`) holds the network's arguments and the
working size and scoring settings of the training, so that ``inference.json`` alone serves a
checkpoint of any preset. A bare state dict (``torch.save(net.state_dict())``) is read as
``{"model": ...}``.

``--resume true`` loads ``last.pt`` when the trainer starts and continues from its iteration
(logged: ``resuming from ... at iteration N``); without it (the default) the training starts
at iteration 0 and says which files it will overwrite. :func:`load_checkpoint` is the one
reader: a missing, empty, unreadable or incomplete checkpoint raises an error naming the file
and what is wrong, never a bare ``EOFError``.

Example::

    >>> from scripts.checkpoint import load_checkpoint
    >>> ckpt = load_checkpoint("bundle/models/model.pt")  # doctest: +SKIP
    >>> sorted(ckpt)  # doctest: +SKIP
    ['model', 'model_raw', 'optimizer', 'thresholds']
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .utils import as_bool, atomic_torch_save, remove_stale_temporaries, root_cause

__all__ = [
    "BestModelSaver",
    "CheckpointError",
    "LoadCheckpoint",
    "TrainingCheckpoint",
    "check_checkpoint",
    "is_state_dict",
    "load_checkpoint",
]

logger = logging.getLogger("artasyn.bundle")


class CheckpointError(RuntimeError):
    """A checkpoint file that exists but cannot be used (empty, unreadable, keys missing, wrong network)."""


def is_state_dict(obj) -> bool:
    """Whether ``obj`` is a bare state dict (``{name: tensor}``, as ``torch.save(net.state_dict())`` writes)."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


_BARE_LOGGED: set[str] = set()


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", keys: Sequence[str] = ("model",), mmap: bool = False
) -> dict:
    """Read a checkpoint written by the bundle, checking it; errors name the file and the problem.

    Raises ``FileNotFoundError`` (with what to do) when ``path`` is no file, and
    :class:`CheckpointError` when it is empty, cannot be read by ``torch.load`` (the root
    cause is given), is not a dictionary, or lacks one of ``keys`` (each a state dict).

    A bare state dict (``{name: tensor}``: what MONAI's ``CheckpointLoader`` reads and model-zoo
    ``model.pt`` files are) is read as ``{"model": state dict}`` (no thresholds, no ``config``;
    logged once). ``mmap``: map the tensors instead of reading them (to read the small entries).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train the bundle first, or pass --ckpt_path <file.pt>)")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): its writing was interrupted; use another checkpoint "
            "(models/last.pt, models/model_final.pt) or train again"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} ({size} bytes) cannot be read: {root_cause(e)}") from e
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a dictionary of state dicts")
    if "model" not in ckpt and is_state_dict(ckpt):
        if str(path) not in _BARE_LOGGED:
            _BARE_LOGGED.add(str(path))
            logger.info(
                "checkpoint %s is a bare state dict (%d tensors): read as the network's weights ('model'); "
                "it carries no decision thresholds and no training settings",
                path,
                len(ckpt),
            )
        ckpt = {"model": ckpt}
    missing = [k for k in keys if not isinstance(ckpt.get(k), Mapping)]
    if missing:
        raise CheckpointError(f"checkpoint {path} has no state dict under {missing} (keys: {sorted(ckpt)})")
    return dict(ckpt)


def check_checkpoint(path: str | Path, keys: Sequence[str] = ("model",), config: Mapping | None = None) -> str:
    """``path`` after :func:`load_checkpoint` read it without error (for a config's ``initialize``).

    ``config``: what the run uses (``{"network": {...}, "spatial_size": ..., ...}``), compared
    with the checkpoint's own ``config`` by :func:`scripts.checkpoint_config.compare_config`
    (another network: :class:`CheckpointError`; another working size or scoring setting: a
    warning; both name the id and the two values).
    """
    from .checkpoint_config import CONFIG_KEY, compare_config

    ckpt = load_checkpoint(path, keys=keys, mmap=True)
    if config:
        compare_config(path, ckpt.get(CONFIG_KEY), config)
    return str(path)


def _load_state(module, state: Mapping, path: Path, key: str) -> None:
    try:
        module.load_state_dict(state)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path}: {key!r} does not fit the network of this config ({root_cause(e)}); "
            "pass the preset the checkpoint was trained with (e.g. --config_file [..., 'small.json']), or, for "
            "inference, inference.json alone (it builds the network a checkpoint describes)"
        ) from e


class LoadCheckpoint:
    """Evaluator handler: load ``load_dict``'s modules from ``load_path`` when the engine starts (checked).

    The counterpart of MONAI's ``CheckpointLoader`` for the bundle's checkpoints: the file is read
    by :func:`load_checkpoint`, and a state dict that does not fit names the file and the key.
    """

    def __init__(self, load_path: str | Path, load_dict: Mapping, map_location: str | torch.device = "cpu") -> None:
        self.load_path, self.load_dict, self.map_location = Path(load_path), dict(load_dict), map_location

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine=None) -> None:
        ckpt = load_checkpoint(self.load_path, self.map_location, keys=tuple(self.load_dict))
        for key, module in self.load_dict.items():
            _load_state(module, ckpt[key], self.load_path, key)
        logger.info("loaded %s from %s", ", ".join(self.load_dict), self.load_path)


def _state_dicts(save_dict: Mapping) -> dict:
    return {k: v.state_dict() for k, v in save_dict.items()}


def validation_thresholds(state) -> dict | None:
    """The decision thresholds a validation left in ``state`` (``ThresholdCalibrator``), a plain dict or ``None``."""
    thresholds = getattr(state, "thresholds", None)
    return dict(thresholds) if isinstance(thresholds, Mapping) else None


class BestModelSaver:
    """Evaluator handler: ``save_dir/filename`` holds ``save_dict`` of the best epoch by the key metric.

    MONAI's evaluator keeps ``state.best_metric`` / ``best_metric_epoch`` (restored on resume by
    :class:`TrainingCheckpoint`); the file is (re)written, atomically, when the epoch just
    evaluated is the best one. The decision thresholds of that epoch
    (``engine.state.thresholds``, from a :class:`scripts.thresholds.ThresholdCalibrator`
    listed before this handler) are saved with the weights under ``thresholds``; thresholds of
    another epoch are not (a warning says so). ``config`` (``train.json``: ``@checkpoint_config``,
    :func:`scripts.checkpoint_config.training_config`) is saved under ``config``: the network's
    arguments and the settings of the training, so that the checkpoint describes itself.
    """

    def __init__(
        self, save_dir: str | Path, save_dict: Mapping, filename: str = "model.pt", config: Mapping | None = None
    ) -> None:
        self.save_dir, self.save_dict, self.filename = Path(save_dir), dict(save_dict), filename
        self.config = dict(config) if config else None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine) -> None:
        if int(engine.state.best_metric_epoch) != int(engine.state.epoch):
            return
        state = _state_dicts(self.save_dict)
        thresholds = validation_thresholds(engine.state)
        if thresholds is not None and thresholds.get("epoch") != int(engine.state.epoch):
            logger.warning(
                "decision thresholds are of epoch %s, not of epoch %d: %s is saved without them "
                "(list ThresholdCalibrator before BestModelSaver in the validation handlers)",
                thresholds.get("epoch"),
                engine.state.epoch,
                self.filename,
            )
            thresholds = None
        if thresholds is not None:
            state["thresholds"] = thresholds
        if self.config is not None:
            state["config"] = self.config
        path = atomic_torch_save(state, self.save_dir / self.filename)
        logger.info(
            "best %s %.4f at epoch %d: saved %s%s",
            engine.state.key_metric_name,
            float(engine.state.best_metric),
            engine.state.epoch,
            path,
            " with its decision thresholds" if thresholds is not None else "",
        )


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": int(py[0]), "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingCheckpoint:
    """Trainer handler: saves ``last.pt`` (the whole training state) and ``model_final.pt``; resumes.

    Args:
        save_dir: the checkpoint folder (``ckpt_dir``).
        network: the trained network (``model_raw``).
        ema_network: its EMA (``torch.optim.swa_utils.AveragedModel``): ``model`` = its module.
        optimizer: the optimizer.
        validator: the validation evaluator, whose best metric is saved and restored.
        resume: load ``last.pt`` when the trainer starts and continue from its iteration.
        filename: the name of the resumable state (``last.pt``).
        final_filename: the weights at the end (``model_final.pt``); ``""``: not written.
        save_every: also save ``last.pt`` every this many iterations (0: after every epoch only).
        config: saved under ``config`` in every file (the network's arguments and the training's
            settings, :func:`scripts.checkpoint_config.training_config`).

    See the module docstring for the content of the files.
    """

    def __init__(
        self,
        save_dir: str | Path,
        network: torch.nn.Module,
        ema_network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        validator=None,
        resume: bool = False,
        filename: str = "last.pt",
        final_filename: str = "model_final.pt",
        save_every: int = 0,
        config: Mapping | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.config = dict(config) if config else None
        self.network, self.ema_network, self.optimizer, self.validator = network, ema_network, optimizer, validator
        self.resume = as_bool(resume, "resume")
        self.filename, self.final_filename, self.save_every = filename, final_filename, int(save_every or 0)
        self.resumed_from: int | None = None
        self._saved_at: int | None = None

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        if self.save_every > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_every), self.save)
        engine.add_event_handler(Events.COMPLETED, self.complete)

    def _weights(self) -> dict:
        weights = {
            "model": self.ema_network.module.state_dict(),
            "model_raw": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        thresholds = validation_thresholds(self.validator.state) if self.validator is not None else None
        if thresholds is not None:
            weights["thresholds"] = thresholds
        if self.config is not None:
            weights["config"] = self.config
        return weights

    def state_dict(self, engine) -> dict:
        """Everything :meth:`load` needs to continue the training of ``engine``."""
        state = {
            **self._weights(),
            "ema": self.ema_network.state_dict(),
            "trainer": {
                "iteration": int(engine.state.iteration),
                "epoch": int(engine.state.epoch),
                "epoch_length": int(engine.state.epoch_length or 0),
                "max_epochs": int(engine.state.max_epochs or 0),
            },
            "rng": _rng_state(),
        }
        if self.validator is not None:
            state["best_metric"] = float(self.validator.state.best_metric)
            state["best_metric_epoch"] = int(self.validator.state.best_metric_epoch)
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        return state

    def save(self, engine) -> Path:
        """Write ``last.pt`` atomically."""
        path = atomic_torch_save(self.state_dict(engine), self.path)
        self._saved_at = int(engine.state.iteration)
        logger.info("training state saved at iteration %d: %s", engine.state.iteration, path)
        return path

    def complete(self, engine) -> None:
        if self._saved_at != int(engine.state.iteration):
            self.save(engine)
        if self.final_filename:
            weights = self._weights()
            path = atomic_torch_save(weights, self.save_dir / self.final_filename)
            logger.info("final weights saved: %s", path)
            epoch = weights.get("thresholds", {}).get("epoch")
            if epoch is None and self.validator is not None:
                logger.warning("%s has no decision thresholds (no validation computed them)", path)
            elif epoch is not None and epoch != int(engine.state.epoch):
                logger.warning(
                    "%s carries the decision thresholds of the validation at epoch %d; its weights are of "
                    "iteration %d (epoch %d), not validated since",
                    path,
                    epoch,
                    engine.state.iteration,
                    engine.state.epoch,
                )

    def start(self, engine) -> None:
        """On ``STARTED``: clean up interrupted writes, then resume or say what a fresh start overwrites."""
        import torch.distributed as dist

        self.save_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.save_dir)
        if self.resume and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise NotImplementedError("--resume true is for one-process training; multi-GPU resume is not supported")
        if not self.resume:
            existing = [p.name for p in sorted(self.save_dir.glob("*.pt"))]
            if existing:
                logger.warning(
                    "starting a new training at iteration 0 (resume is off): %s in %s will be overwritten; "
                    "pass --resume true to continue from %s instead",
                    ", ".join(existing),
                    self.save_dir,
                    self.path,
                )
            else:
                logger.info("starting a new training at iteration 0; checkpoints go to %s", self.save_dir)
            return
        if not self.path.is_file():
            logger.warning("--resume true but no saved state at %s: starting at iteration 0", self.path)
            return
        self.load(engine, self.path)

    def load(self, engine, path: str | Path) -> int:
        """Restore the training state of ``path`` into ``engine`` and the modules; returns its iteration."""
        path = Path(path)
        ckpt = load_checkpoint(path, map_location="cpu", keys=("model_raw", "optimizer", "ema", "trainer"))
        _load_state(self.network, ckpt["model_raw"], path, "model_raw")
        _load_state(self.ema_network, ckpt["ema"], path, "ema")
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except Exception as e:
            raise CheckpointError(f"checkpoint {path}: 'optimizer' does not fit ({root_cause(e)})") from e
        trainer = ckpt["trainer"]
        length = int(engine.state.epoch_length or trainer["epoch_length"] or 1)
        if trainer["epoch_length"] and trainer["epoch_length"] != length:
            logger.warning(
                "%s was saved with %d iterations per epoch, this run has %d", path, trainer["epoch_length"], length
            )
        engine.state.iteration = int(trainer["iteration"])
        engine.state.epoch = int(trainer["iteration"]) // length
        if self.validator is not None and "best_metric" in ckpt:
            self.validator.state.best_metric = float(ckpt["best_metric"])
            self.validator.state.best_metric_epoch = int(ckpt["best_metric_epoch"])
        if self.validator is not None and isinstance(ckpt.get("thresholds"), Mapping):
            self.validator.state.thresholds = dict(ckpt["thresholds"])
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        if "rng" in ckpt:
            _set_rng_state(ckpt["rng"])
        self.resumed_from = int(trainer["iteration"])
        total = int(engine.state.max_epochs or 0) * length
        logger.info(
            "resuming from %s at iteration %d (epoch %d) of %d; best %s so far %s",
            path,
            self.resumed_from,
            engine.state.epoch,
            total,
            "metric",
            f"{ckpt['best_metric']:.4f} (epoch {ckpt['best_metric_epoch']})" if "best_metric" in ckpt else "n/a",
        )
        return self.resumed_from
