"""Shared test fixtures.

The bundle's own code (``bundle/scripts``, imported as ``scripts`` as its configs do) is put
on ``sys.path`` here, once: tests import it directly and build config components without
running ``initialize`` (whose first entry does the same for a bundle run). The processes the
tests start (``python -m monai.bundle ...``) get no help: they run the commands as documented.

Real-image tests read the project's shared data set through ``../shared/data`` (relative to
the repository root) or the folder named by ``ARTASYN_SHARED_DATA``; they skip, saying why,
where it is absent. Nothing from that folder is ever copied into the project.
"""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = REPO_ROOT / "bundle"
if str(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, str(BUNDLE_ROOT))
SHARED_DATA = Path(os.environ.get("ARTASYN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real chest X-ray folder, or a skip naming where it was looked for."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real CXR data not found at {SHARED_DATA} (set ARTASYN_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _no_bundle_log_filter_left_behind():
    """A test that runs a bundle's ``initialize`` without its ``finalize`` leaves the bundle's
    :class:`scripts.logs.LibraryLogFilter` on the root logger's handlers, pytest's own among
    them; take it off after each test so that later tests see the library's messages."""
    yield
    import logging

    from scripts.logs import LibraryLogFilter

    for handler in logging.getLogger().handlers:
        for f in [f for f in handler.filters if isinstance(f, LibraryLogFilter)]:
            handler.removeFilter(f)
