"""Command-line overrides that name no setting of the configs: warned about, with the nearest names.

``python -m monai.bundle run`` accepts any ``--<id> <value>`` and adds ids the configs do not
define, so a misspelt setting (``--max_iteration 200``, ``--learning-rate``) or one that only
another workflow reads (``--tau`` before metadata 0.10.2) is silently ignored and the run goes
on with the default. :func:`warn_unknown_overrides`, the second step of ``initialize`` in
``train.json``, ``evaluate.json``, ``multi_gpu_train.json`` and ``inference.json``, reads the
command line of that ``run`` (``sys.argv``; other callers, e.g. ``ConfigWorkflow`` in Python or
MONAI Label, pass no command line and get nothing), loads the config files it names as they are
on disk, and logs one warning per override whose id they do not hold, with the nearest ids
that they do. The run itself is unchanged.

Example::

    >>> import json, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "c.json")
    >>> config = {"max_iterations": 10, "network": {"_target_": "Net", "channels": 8}, "train": {"datalist": "a.json"}}
    >>> _ = open(path, "w").write(json.dumps(config))
    >>> argv = ["monai/bundle/__main__.py", "run", "training", "--config_file", path,
    ...         "--max_iteration", "5", "--network#dropout", "0.1", "--train#datalst", "b.json", "--seed=1"]
    >>> unknown_overrides(argv)
    {'max_iteration': ['max_iterations'], 'train#datalst': ['train#datalist'], 'seed': []}
"""

from __future__ import annotations

import ast
import difflib
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence

__all__ = ["bundle_run_overrides", "unknown_ids", "unknown_overrides", "warn_unknown_overrides"]

logger = logging.getLogger("artasyn.bundle")

#: arguments of ``monai.bundle run`` / ``ConfigWorkflow`` that are not config ids
RUN_ARGUMENTS = frozenset(
    {
        "run_id",
        "init_id",
        "final_id",
        "meta_file",
        "config_file",
        "logging_file",
        "tracking",
        "args_file",
        "workflow_type",
        "workflow_name",
        "properties_path",
    }
)


def _is_bundle_run(argv: Sequence[str]) -> bool:
    main = os.path.normpath(str(argv[0])) if argv else ""
    return main.endswith(os.path.join("monai", "bundle", "__main__.py")) and "run" in argv[1:2]


def _file_list(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith(("[", "(")):
        try:
            return [str(v) for v in ast.literal_eval(text)]
        except (ValueError, SyntaxError):
            pass
    return [text]


def bundle_run_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, object]]:
    """``(config files, {override id: value})`` of a ``monai.bundle run`` command line (``([], {})`` otherwise).

    Reads fire's forms ``--id value``, ``--id=value`` and a bare ``--flag``, dashes in names as
    underscores, and the overrides of ``--args_file`` (JSON or YAML, read as MONAI reads it; the command line
    wins).
    """
    if not _is_bundle_run(argv):
        return [], {}
    given: dict[str, object] = {}
    tokens = list(argv[2:])
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if not tok.startswith("--"):
            continue
        name, eq, value = tok[2:].partition("=")
        if not eq:
            if i < len(tokens) and not tokens[i].startswith("--"):
                value = tokens[i]
                i += 1
            else:
                value = True
        given[name.replace("-", "_").replace("::", "#")] = value
    args_file = given.get("args_file")
    if isinstance(args_file, str) and os.path.isfile(args_file):
        from monai.bundle import ConfigParser

        given = {**ConfigParser.load_config_file(args_file), **given}
    config = given.pop("config_file", None)
    overrides = {k: v for k, v in given.items() if k not in RUN_ARGUMENTS}
    return ([] if config is None else _file_list(config)), overrides


def unknown_ids(config_files: Sequence[str | os.PathLike], overrides: Mapping[str, object]) -> dict[str, list[str]]:
    """``{id: nearest ids of the configs}`` for each of ``overrides`` that ``config_files`` do not define.

    A new key inside a component (``network_def#dropout``, or a dict that a component takes) is
    an argument of it, and a new id that another override refers to (``@name``, ``%name``) is
    used: neither is reported. A new key inside a plain grouping of settings (``train#datalst``,
    ``default_settings#...``: dicts reached from the top through dicts without ``_target_``)
    is reported like a new top-level id, with the nearest keys of that grouping.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    used = " ".join(str(v) for v in overrides.values())
    unknown = {}
    for name in overrides:
        if name.startswith("_meta_") or name in parser or re.search(rf"[@%]{re.escape(name)}\b", used):
            continue
        parent, _, leaf = name.rpartition("#")
        siblings = _grouping_keys(parser.get(), parent)
        if siblings is not None:
            prefix = f"{parent}#" if parent else ""
            unknown[name] = [prefix + k for k in difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)]
    return unknown


def _grouping_keys(config: Mapping, parent: str) -> list[str] | None:
    """The keys of the plain dict ``parent`` (``""``: the top level), or None where a new key there is not an error.

    None when the path leaves plain dicts: a component (``_target_``) or a list on the way takes
    new keys as its arguments, and a path that does not exist is MONAI's own KeyError.
    """
    node = config
    for key in parent.split("#") if parent else []:
        if not isinstance(node, Mapping) or "_target_" in node or key not in node:
            return None
        node = node[key]
    if not isinstance(node, Mapping) or "_target_" in node:
        return None
    return [k for k in node if isinstance(k, str)]


def unknown_overrides(argv: Sequence[str] | None = None) -> dict[str, list[str]]:
    """:func:`unknown_ids` of a ``monai.bundle run`` command line (``argv``, default ``sys.argv``).

    An empty dict when it is not such a command line or names no config file that can be read.
    """
    files, overrides = bundle_run_overrides(sys.argv if argv is None else argv)
    if not files or not overrides or not all(os.path.isfile(f) for f in files):
        return {}
    return unknown_ids(files, overrides)


def warn_unknown_overrides(argv: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Logs one warning per override that names no setting of the configs (:func:`unknown_overrides`).

    Under ``torchrun`` only the process of rank 0 (``RANK``) checks, so that each line shows once.
    The check never stops a run: should it fail, the log says so and the run goes on.
    """
    if os.environ.get("RANK", "0") != "0":
        return {}
    try:
        unknown = unknown_overrides(argv)
    except Exception as e:  # a helper: MONAI has already parsed the same files for the run itself
        logger.warning(f"the command-line overrides were not checked ({type(e).__name__}: {e})")
        return {}
    for name, near in unknown.items():
        hint = f"; did you mean {' or '.join('--' + n for n in near)}?" if near else ""
        logger.warning(f"--{name} names no setting of these configs, so it has no effect{hint}")
    return unknown
