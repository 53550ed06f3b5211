"""The log of a bundle run: each message once, and each per-file fact once, counted in the summary.

``logging.conf`` decides where messages show (MONAI validates it and allows only the classes
of ``logging`` itself, so a filter cannot be named there). The bundle's own per-file facts (a
file rejected or converted on reading, an image where PBTSeg found no lung) are logged once,
when :class:`scripts.datalist.DataReport` records them, and counted in its summary and in
``data_report.json``. The library (``artasyn``) also warns about a file where it meets such a
case: PBTSeg when it finds no lung, the synthesis every time it draws that image, once per
twin (one training on the ZhangLab set printed 218 such lines for 20 images, some twice with
the same timestamp). :class:`LibraryLogFilter`, installed on the handlers of the root logger
(``initialize`` of ``train.json``, ``evaluate.json``, ``multi_gpu_train.json``:
``"$@log_filter.install()"``), drops the library's records that name a file of the run's
datalists (``DataReport.files``: the report holds what they say), and lets any other library
record through once. Data-loader workers forked after the datalists were built inherit the
filter and the list of files.

Example::

    >>> import logging
    >>> from scripts.datalist import DataReport
    >>> from scripts.logs import LibraryLogFilter
    >>> report = DataReport()
    >>> report.files.add("a.png")
    >>> f = LibraryLogFilter(report)
    >>> def rec(name, msg, *args):
    ...     return logging.LogRecord(name, logging.WARNING, __file__, 0, msg, args, None)
    >>> f.filter(rec("artasyn.synthesis.art", "empty lung map (source: %s)", "a.png"))
    False
    >>> [f.filter(rec("artasyn.baselines.perlin", "no noise mask met the lungs")) for _ in range(2)]
    [True, False]
    >>> f.filter(rec("artasyn.bundle", "best val_auc")), f.filter(rec("artasyn.bundle", "best val_auc"))
    (True, True)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["LibraryLogFilter"]

#: loggers of the bundle itself (every record passes)
BUNDLE_LOGGER = "artasyn.bundle"
#: the library's loggers
LIBRARY_LOGGER = "artasyn"


def _is_library(name: str) -> bool:
    if name == BUNDLE_LOGGER or name.startswith(BUNDLE_LOGGER + "."):
        return False
    return name == LIBRARY_LOGGER or name.startswith(LIBRARY_LOGGER + ".")


def _strings(args) -> Iterable[str]:
    if isinstance(args, tuple):
        return (a for a in args if isinstance(a, str))
    if isinstance(args, dict):
        return (a for a in args.values() if isinstance(a, str))
    return ()


class LibraryLogFilter(logging.Filter):
    """Handler filter: the library's records about the run's files are dropped, others pass once.

    Args:
        report: a :class:`scripts.datalist.DataReport` (``report.files``: the images of the run's
            datalists); ``None``: only the once-per-process rule.

    Records of other loggers (the bundle's ``artasyn.bundle``, MONAI, ignite) always pass.
    Attribute ``dropped``: how many records this process dropped.
    """

    def __init__(self, report=None) -> None:
        super().__init__()
        self.report = report
        self.dropped = 0
        self._seen: set[tuple] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_library(record.name):
            return True
        files = getattr(self.report, "files", None) or ()
        if files and any(s in files for s in _strings(record.args)):
            self.dropped += 1
            return False
        key = (record.name, record.levelno, record.getMessage())
        if key in self._seen:
            self.dropped += 1
            return False
        self._seen.add(key)
        return True

    def install(self, logger: logging.Logger | None = None) -> LibraryLogFilter:
        """Add this filter to every handler of ``logger`` (default: the root logger), replacing an earlier one."""
        logger = logger if logger is not None else logging.getLogger()
        for handler in logger.handlers:
            for old in [f for f in handler.filters if isinstance(f, LibraryLogFilter)]:
                handler.removeFilter(old)
            handler.addFilter(self)
        return self

    def uninstall(self, logger: logging.Logger | None = None) -> None:
        """Take this filter off every handler of ``logger`` (default: the root logger) again.

        The run's ``finalize`` does it, so that a process that goes on (a notebook, a test
        session) gets the library's messages as before.
        """
        logger = logger if logger is not None else logging.getLogger()
        for handler in logger.handlers:
            handler.removeFilter(self)
