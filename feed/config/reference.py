"""The settings reference, made from the declarations, and ``python -m feed config``.

docs/CONFIGURATION.md keeps its prose by hand; each table of settings in it
sits between ``<!-- settings: <section> -->`` and ``<!-- /settings -->`` and
is generated here. ``python -m feed config --write`` rewrites them; a test
fails when the file and the declarations disagree.

    python -m feed config            the tables, as Markdown
    python -m feed config --check    validate this environment's settings (exit 2 if bad)
    python -m feed config --write    regenerate the tables in docs/CONFIGURATION.md
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from feed.config.settings import SECTIONS, Settings
from feed.errors import ConfigError

__all__ = ["DOC", "main", "render_section", "render_tables", "sync"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"
_BLOCK = re.compile(r"(<!-- settings: (\w+) -->\n)(.*?)(<!-- /settings -->)", re.DOTALL)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "empty"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value)}"
    if isinstance(value, str):
        return f"`{value}`"
    return f"{value}"


def render_section(section: str) -> str:
    """The Markdown table of one section's settings."""
    defaults = {f.name: f.default for f in fields(Settings)}
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, spec in Settings.declared():
        if spec.section != section:
            continue
        default = spec.shown_default if spec.shown_default is not None else _shown(defaults[name])
        secret = " A secret: never logged, shown or sent." if spec.secret else ""
        rows.append(f"| `{spec.env}` | {default} | {spec.doc}.{secret} |")
    return "\n".join(rows) + "\n"


def render_tables() -> str:
    return "\n".join(f"## {title}\n\n{render_section(key)}" for key, title in SECTIONS.items())


def sync(text: str) -> str:
    """``text`` (docs/CONFIGURATION.md) with every generated table replaced by today's."""
    return _BLOCK.sub(lambda m: m.group(1) + render_section(m.group(2)) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feed config", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="validate the settings in the environment")
    parser.add_argument("--write", action="store_true", help=f"regenerate the tables in {DOC.name}")
    args = parser.parse_args(argv)
    if args.check:
        try:
            Settings.from_env()
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        print("settings ok")
        return 0
    if args.write:
        DOC.write_text(sync(DOC.read_text()))
        print(f"wrote {DOC}")
        return 0
    print(render_tables(), end="")
    return 0
