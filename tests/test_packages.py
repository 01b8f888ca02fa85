"""The package rules: which part of ``feed/`` may import which, as docs/ARCHITECTURE.md says.

The layout table in docs/ARCHITECTURE.md names, for every package and
top-level module of ``feed/``, the parts it may import (its last column).
This test reads that table and fails on any import it does not allow,
counting imports inside functions and under ``TYPE_CHECKING`` (an
annotation-only import is still a dependency a reader must follow). A part
of ``feed/`` with no row fails too: a new package gets its row when it
arrives.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_layout import imported_names, project_modules

ROOT = Path(__file__).resolve().parent.parent
FEED = ROOT / "feed"
# Every module of feed/ by name (the imported names that are modules, not names in them).
MODULES = {name: path for name, path in project_modules().items() if name.split(".")[0] == "feed"}


def part_of(module: str) -> str | None:
    """``feed.ws.hub`` -> ``ws``; ``feed.logs`` -> ``logs``; ``feed`` -> ``feed``; else None."""
    parts = module.split(".")
    if parts[0] != "feed":
        return None
    return parts[1] if len(parts) > 1 else "feed"


def parts() -> dict[str, list[Path]]:
    """Every part of ``feed/``: its packages and top-level modules, with their files."""
    out: dict[str, list[Path]] = {"feed": [FEED / "__init__.py"]}
    for path in sorted(FEED.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            out[path.name] = sorted(path.rglob("*.py"))
        elif path.suffix == ".py" and path.name != "__init__.py":
            out[path.stem] = [path]
    return out


def imports(path: Path) -> set[str]:
    """Every ``feed`` module ``path`` imports, anywhere in it (TYPE_CHECKING included)."""
    module = next(name for name, p in MODULES.items() if p == path)
    return {n for n in imported_names(path, module, annotations=True) if n in MODULES}


def allowed() -> dict[str, set[str]]:
    """The layout table: part -> the parts it may import (from its last column)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    # The first table of the section, the one whose last column is "may import".
    table = section.split("| may import |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `feed/")]
    assert rows, "docs/ARCHITECTURE.md has no layout table"
    out: dict[str, set[str]] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        may = set(re.findall(r"`([\w]+)`", cells[-1]))
        for ref in re.findall(r"`feed/([\w./]*)`", cells[0]):
            name = ref.rstrip("/").removesuffix(".py") or "feed"
            name = "feed" if name == "__init__" else name
            out[name] = may
    return out


def test_every_part_of_feed_has_a_row() -> None:
    table = allowed()
    missing = sorted(set(parts()) - set(table))
    assert not missing, f"parts of feed/ with no row in docs/ARCHITECTURE.md's layout table: {missing}"
    gone = sorted(set(table) - set(parts()))
    assert not gone, f"rows in the layout table for parts that do not exist: {gone}"


def test_imports_follow_the_layout_table() -> None:
    table = allowed()
    wrong = []
    for name, files in parts().items():
        for path in files:
            for target in sorted(imports(path)):
                other = part_of(target)
                if other is not None and other != name and other not in table.get(name, set()):
                    wrong.append(f"{path.relative_to(ROOT)} imports {target} ({name} -> {other})")
    assert not wrong, "imports the layout table does not allow:\n" + "\n".join(wrong)


def test_the_minimum_rules_are_in_the_table() -> None:
    # The lines the architecture rests on; the table may be stricter, never looser.
    table = allowed()
    forbidden = {
        "election": {"providers", "ws", "node", "server"},
        "ws": {"election", "providers", "node", "server"},
        "providers": {"ws", "node", "server"},
    }
    for part, never in forbidden.items():
        assert not table[part] & never, f"{part} may import {sorted(table[part] & never)}"
