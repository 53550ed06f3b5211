"""The library's folders show the method, its imports have no circle, and old paths still import.

``artasyn`` is grouped in the method's order (``lungs``, ``synthesis``, ``baselines``, ``model``,
``scoring``), shared helpers at the top. Users import from the package; the module paths of the
flat 0.1 layout (``artasyn.pbtseg``, ...) are aliases of the moved modules.
"""

import ast
import importlib
from pathlib import Path

import artasyn

PACKAGE = Path(artasyn.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _internal_imports(path: Path) -> set[str]:
    """The ``artasyn`` modules that ``path`` imports anywhere, in functions too (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("artasyn"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)  # "from . import base"
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("artasyn"))
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {t for t in _internal_imports(p) if t in files and t != m} for m, p in files.items()}


def test_folders_follow_the_method():
    subpackages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert subpackages == ["baselines", "lungs", "model", "scoring", "synthesis"]
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "base", "constants", "intensity", "phantom"]


def test_no_import_circle_below_the_package():
    """No module reaches itself through its imports, lazy ones in functions included."""
    graph = {m: deps - {"artasyn"} for m, deps in _graph().items() if m != "artasyn"}
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            m = stack.pop()
            assert m != start, f"import circle through {start}"
            if m not in seen:
                seen.add(m)
                stack.extend(graph.get(m, ()))


def test_lungs_paper_does_not_import_robust():
    """The robust mode builds on the paper's thresholding, never the other way round."""
    graph = _graph()
    assert "artasyn.lungs.robust" not in graph["artasyn.lungs.paper"]
    assert "artasyn.lungs.pbtseg" not in graph["artasyn.lungs.robust"]


def test_old_module_paths_are_the_new_modules():
    for old, new in artasyn.MOVED_MODULES.items():
        assert importlib.import_module(f"artasyn.{old}") is importlib.import_module(f"artasyn.{new}")
    from artasyn.pbtseg import PBTSeg
    from artasyn.thresholds import calibrate_thresholds

    assert PBTSeg is artasyn.PBTSeg and calibrate_thresholds is artasyn.calibrate_thresholds
