"""How a setting is declared: one field, with its variable, parser, rule and doc.

:func:`setting` returns a dataclass field whose metadata holds a
:class:`Setting`; :class:`feed.config.settings.Settings` is made of them, and
parsing, validation, secret masking and docs/CONFIGURATION.md all read that
one declaration. Parsers turn the variable's text into a value; rules check
a value and return what is wrong with it (or None).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Parser",
    "Setting",
    "at_least",
    "between",
    "flag",
    "http_url",
    "integer",
    "lower",
    "name_without_spaces",
    "networks",
    "non_negative",
    "number",
    "one_of",
    "origins",
    "positive",
    "setting",
    "tcp_port",
    "text",
    "token",
    "words",
]

Rule = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Parser:
    """Text to value; ``kind`` names what it expects, for error messages and docs."""

    kind: str
    parse: Callable[[str], Any]

    def __call__(self, raw: str) -> Any:
        return self.parse(raw)


@dataclass(frozen=True)
class Setting:
    """One setting: the environment variable and everything said about it."""

    env: str
    doc: str
    section: str
    parser: Parser
    rule: Rule | None = None
    secret: bool = False  # never logged, shown or sent; masked in every log line
    shown_default: str | None = None  # the default as docs show it, when not the literal value


def setting(env: str, default: Any, doc: str, *, section: str, parser: Parser | None = None,
            rule: Rule | None = None, secret: bool = False, shown: str | None = None) -> Any:
    """A dataclass field declaring a setting (see the module docstring)."""
    parser = parser or (text if default is None or isinstance(default, str) else
                        flag if isinstance(default, bool) else
                        integer if isinstance(default, int) else number)
    spec = Setting(env, doc, section, parser, rule, secret, shown)
    return field(default=default, metadata={"setting": spec})


# --- parsers ------------------------------------------------------------------


def _flag(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "on", "yes"):
        return True
    if low in ("0", "false", "off", "no"):
        return False
    raise ValueError(raw)


def _items(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


number = Parser("a number", float)
integer = Parser("an integer", int)
flag = Parser("true or false (also on/off, yes/no, 1/0)", _flag)
text = Parser("text", str)
lower = Parser("text", str.lower)
words = Parser("a comma-separated list", _items)


def words_as(case: Callable[[str], str]) -> Parser:
    return Parser("a comma-separated list", lambda raw: tuple(case(p) for p in _items(raw)))


origins = Parser("a comma-separated list of origins",
                 lambda raw: tuple(o.rstrip("/") for o in _items(raw)))


# --- rules ----------------------------------------------------------------------


def positive(value: float) -> str | None:
    if not math.isfinite(value) or value <= 0:
        return f"must be a positive number of seconds, got {value!r}"
    return None


def non_negative(value: float) -> str | None:
    if not math.isfinite(value) or value < 0:
        return f"must be >= 0, got {value!r}"
    return None


def at_least(low: float, why: str = "") -> Rule:
    def rule(value: float) -> str | None:
        return None if value >= low else f"must be at least {low:g}{why}, got {value!r}"
    return rule


def between(low: float, high: float, *, or_zero: bool = False) -> Rule:
    def rule(value: float) -> str | None:
        if (or_zero and value == 0) or low <= value <= high:
            return None
        zero = "0 or " if or_zero else ""
        return f"must be {zero}between {low:g} and {high:g}, got {value!r}"
    return rule


def tcp_port(*, or_zero: bool = False) -> Rule:
    def rule(value: int) -> str | None:
        if (or_zero and value == 0) or 1 <= value <= 65535:
            return None
        return f"must be a TCP port 1-65535{' (or 0: any free one)' if or_zero else ''}, got {value}"
    return rule


def one_of(*choices: str) -> Rule:
    def rule(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"
    return rule


def name_without_spaces(value: str) -> str | None:
    if not value or any(c.isspace() for c in value):
        return "must be a non-empty name without spaces"
    return None


MIN_TOKEN_CHARS = 8


def token(value: str) -> str | None:
    if len(value) < MIN_TOKEN_CHARS or any(c.isspace() for c in value):
        return f"must be at least {MIN_TOKEN_CHARS} characters without spaces (a shorter token is guessable)"
    return None


def http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # Never the URL itself: a proxy URL may carry credentials.
        return "must be an http(s) URL like https://api.example.com"
    return None


def networks(value: tuple[str, ...]) -> str | None:
    for item in value:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an IP address or network (or *)"
    return None
