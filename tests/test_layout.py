"""The layout's rules: no import cycle, a runtime package that stands on its own.

* No module of the project imports, directly or through others, a module
  that imports it back (function-level imports and imports under
  ``TYPE_CHECKING`` included: an annotation-only import is still a
  dependency a reader must follow).
* Nothing under ``feed/`` imports the lab, the tests, the benchmarks or a
  development-only dependency: a production install (requirements.txt alone)
  must be able to import every module of it. tests/test_readme_run.py imports
  each of them in exactly such a virtualenv.
* No file of the repository refers to a document outside it.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Packages only requirements-dev.txt installs.
DEV_ONLY = {"websocket", "psutil", "pytest", "papermill", "nbclient", "nbconvert", "nbformat",
            "ipykernel", "matplotlib", "selenium", "ruff", "lab", "tests", "bench"}


def project_modules() -> dict[str, Path]:
    mods = {}
    for p in [*ROOT.glob("feed/**/*.py"), *ROOT.glob("lab/**/*.py"), ROOT / "app.py"]:
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def imported_names(path: Path, module: str, annotations: bool = False) -> set[str]:
    """Every module ``path`` imports; under ``if TYPE_CHECKING:`` only if ``annotations``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not annotations and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*up, base] if base else up)
                out.add(base)
                out.update(f"{base}.{a.name}" for a in child.names)
            elif isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return out


def test_no_import_cycle() -> None:
    mods = project_modules()
    graph = {m: {n for n in imported_names(p, m, annotations=True) if n in mods and n != m}
             for m, p in mods.items()}
    # Tarjan's strongly connected components: any with more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_runtime_package_imports_nothing_dev_only() -> None:
    offenders = {}
    for name, path in project_modules().items():
        if not name.startswith("feed"):
            continue
        bad = {n for n in imported_names(path, name) if n.split(".")[0] in DEV_ONLY}
        if bad:
            offenders[name] = sorted(bad)
    assert not offenders, offenders


def test_every_runtime_module_imports() -> None:
    for name in sorted(project_modules()):
        if name.startswith("feed") and not name.endswith("__main__"):
            importlib.import_module(name)


def test_no_file_refers_outside_the_repository() -> None:
    # Every relative path that climbs out of a file's folder must land on a
    # file of the repository, and every Markdown document named must be
    # one of the repository's: a reader has nothing else.
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    documents = {Path(name).name for name in files if name.endswith(".md")}
    found = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix == ".png":
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for ref in re.findall(r"(?:\.\./)+[\w.\-/]+", text):
            target = (path.parent / ref).resolve()
            if not (target.is_relative_to(ROOT) and target.exists()):
                found.append(f"{name}: {ref}")
        found += [f"{name}: {doc}" for doc in re.findall(r"[\w\-]+\.md\b", text) if doc not in documents]
    assert not found, found
