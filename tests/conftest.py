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
