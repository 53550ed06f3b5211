"""The user documents: short, free of internal bookkeeping, with the commands CI runs and live links.

The README is a user's first ten minutes (at most 200 lines); the tuning history lives in
``docs/experiments.md``. User documents (README.md, bundle/docs/*.md) and the notes in docs/
name topics, never internal issue numbers or commit hashes.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
USER_DOCS = [REPO / "README.md", *sorted((REPO / "bundle" / "docs").glob("*.md"))]
ALL_DOCS = [*USER_DOCS, *sorted((REPO / "docs").glob("*.md"))]

#: "issue 7", "Issues 7 and 11", "issue #7", "(issue", "#7" (a markdown anchor such as "#1-conventions" is not one)
ISSUE = re.compile(r"\bissues?\s*#?\s*\d+|\(issue|(?<![\w&/])#\d+\b(?![-\w])", re.IGNORECASE)
#: 7-40 hex digits with a letter and a digit ("d46f633"), or any 7-40 hex digits after "at" / "commit"
COMMIT = re.compile(
    r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b|\b(?:at|commit)\s+[0-9a-f]{7,40}\b", re.IGNORECASE
)
LINK = re.compile(r"\]\(([^)\s]*)\)")


def _lines_matching(path: Path, pattern: re.Pattern) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{i}: {line.strip()}"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]


def test_readme_is_at_most_200_lines():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines (at most 200): move details to the model card or docs/experiments.md"


@pytest.mark.parametrize("path", ALL_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_internal_issue_numbers_or_commit_hashes(path):
    issues = _lines_matching(path, ISSUE)
    commits = _lines_matching(path, COMMIT)
    assert not issues, "internal issue numbers (name the topic instead):\n" + "\n".join(issues)
    assert not commits, "commit hashes (name the setting or the metadata version instead):\n" + "\n".join(commits)


def test_patterns_catch_what_they_should():
    for text in ("see issue 7", "Issues 7 and 11", "issue #8, item 3", "(issue 8)", "as in #12."):
        assert ISSUE.search(text), text
    for text in ("see [x](#1-conventions)", "a tissue 7 mm", "0.5% of 12 images"):
        assert not ISSUE.search(text), text
    for text in ("cpu.json as of d46f633", "ran at c2565e0", "at 0442820"):
        assert COMMIT.search(text), text
    for text in ("score > 0.00165168", "0x7fa375dd85d0", "00001281_000.png", "feedface"):
        assert not COMMIT.search(text), text


def test_readme_commands_are_the_ones_ci_and_the_tests_run():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2
    first, second = blocks[0], blocks[1]
    configs = "['bundle/configs/train.json','bundle/configs/small.json']"
    train = f'python -m monai.bundle run training --config_file "{configs}"'
    assert 'pip install -e ".[bundle]" && ' + train in first  # tests/test_bundle.py runs this training
    assert second.strip() == "python -m pytest -q tests"
    ci = (REPO / ".ci" / "run").read_text()
    assert "python -m pytest -q tests" in ci.splitlines()


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("path", ALL_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_exist(path):
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {dest.name}")
    assert not broken, f"{path.relative_to(REPO)}:\n" + "\n".join(broken)
