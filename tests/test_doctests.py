"""The docstring examples of the library run as tests, and every section the code cites exists.

``python -m pytest -q tests`` (what ``.ci/run`` runs) collects this file, so the examples run
in CI. Each module of ``artasyn`` must show at least one example; the examples of the bundle's
scripts (``bundle/scripts``, imported as ``scripts``) run too. Citations are checked in the
library, the bundle's scripts, the benchmarks and the tests.
"""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import artasyn
import scripts

SKIPPED: set[str] = set()
MODULES = ["artasyn"] + sorted(
    m.name for m in pkgutil.walk_packages(artasyn.__path__, prefix="artasyn.") if m.name not in SKIPPED
)
#: every module of the bundle's scripts (one without an example has nothing to run)
SCRIPT_MODULES = sorted(f"scripts.{m.name}" for m in pkgutil.iter_modules(scripts.__path__))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
#: "docs/method.md section 2.4", "``docs/method.md`` sections 2.2, 2.3", "... sections 2.1-2.6"
CITATION = re.compile(r"method\.md`*,? sections? (\d+(?:\.\d+)?(?:(?:-|, )\d+(?:\.\d+)?)*)")


def _run_examples(name: str) -> doctest.TestResults:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder(exclude_empty=True).find(importlib.import_module(name), name):
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = _run_examples(name)
    assert result.attempted >= 1, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"


@pytest.mark.parametrize("name", SCRIPT_MODULES)
def test_bundle_script_examples_run(name):
    result = _run_examples(name)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"


def test_every_module_is_checked():
    top = ("base", "constants", "intensity", "phantom", "lungs", "synthesis", "baselines", "model", "scoring")
    lungs = ("lungs.paper", "lungs.robust", "lungs.resample", "lungs.pbtseg")
    steps = tuple(f"synthesis.{m}" for m in ("brush", "strokes", "effects", "anatomy", "composite", "art"))
    for name in (*top, *lungs, *steps, "model.networks", "model.losses", "scoring.maps", "scoring.thresholds"):
        assert f"artasyn.{name}" in MODULES


def test_every_cited_section_of_the_method_exists(repo_root: Path):
    """``docs/method.md`` section N, cited by the code, is a heading of ``docs/method.md``."""
    method = (repo_root / "docs" / "method.md").read_text()
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", method, flags=re.M))
    cited = set()
    sources = [
        *(repo_root / "transforms" / "artasyn").rglob("*.py"),
        *(repo_root / "bundle" / "scripts").glob("*.py"),
        *(repo_root / "bench").glob("*.py"),
        *(repo_root / "tests").glob("test_*.py"),
    ]
    for path in sources:
        for group in CITATION.findall(path.read_text()):
            cited.update(re.findall(r"\d+(?:\.\d+)?", group))
    assert cited, "no citation of docs/method.md found"
    assert cited <= headings, f"cited sections missing from docs/method.md: {sorted(cited - headings)}"
