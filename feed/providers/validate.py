"""Checks every upstream answer must pass before its numbers reach clients.

A provider that answers with something other than JSON, with the wrong shape
or with numbers no market can produce (NaN, infinities, zero or negative
prices, magnitudes off by orders) is treated as failed for that call: clients
are better served by the last good snapshot than by a wrong one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "CAP_USD",
    "CHANGE_PCT",
    "MARKET_CHANGE_PCT",
    "PERCENT",
    "PRICE_USD",
    "InvalidResponse",
    "Quotes",
    "Range",
    "code_of",
    "error_json",
    "expect",
    "loads_strict",
    "number",
]


class InvalidResponse(ValueError):
    """The body is not JSON, has the wrong shape or holds absurd numbers."""


class Range:
    """An inclusive or exclusive numeric range with a name for error messages."""

    def __init__(self, low: float, high: float, *, low_open: bool = False, what: str = "") -> None:
        self.low = low
        self.high = high
        self.low_open = low_open
        self.what = what

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


# The bounds are deliberately wide: they catch broken answers, not markets.
PRICE_USD = Range(1e-12, 1e9, what="a USD price")
CHANGE_PCT = Range(-100.0, 1e4, what="a 24 h change in %")
CAP_USD = Range(0.0, 1e15, low_open=True, what="a market total in USD")
PERCENT = Range(0.0, 100.0, what="a percentage")
MARKET_CHANGE_PCT = Range(-100.0, 1000.0, what="a 24 h market-cap change in %")

# Binance sends decimals as strings; float() would also accept "nan", "inf"
# and "1_000", so the text must look like a plain decimal first.
_DECIMAL = re.compile(r"-?\d{1,20}(\.\d{1,20})?([eE][-+]?\d{1,3})?")


def _reject_constant(name: str) -> float:
    raise InvalidResponse(f"JSON holds {name}, which is not a number")


def error_json(body: bytes) -> tuple[Any, str | None]:
    """An error answer read for ``explain``: ``(its JSON, None)``, or ``(None, its text)`` when not JSON.

    The text is the body's first 160 characters. A body nested past the
    parser's limit (``RecursionError``) is text too, never a crash.
    """
    try:
        return json.loads(body), None
    except (ValueError, RecursionError):
        return None, body[:160].decode("utf-8", "replace").strip()


def code_of(value: Any) -> int | None:
    """A provider's error code: an integer (never a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Quotes(dict):
    """Parsed quotes by symbol, and the symbols whose quote was refused (with why)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.rejected: dict[str, str] = {}


def loads_strict(body: bytes) -> Any:
    """Parse JSON, refusing the NaN/Infinity literals Python would accept."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except InvalidResponse:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidResponse(f"not JSON: {str(exc)[:120]}") from None


def expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """``value`` if it is a ``kind``, else :class:`InvalidResponse` naming ``where``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is a subclass of int, but true/false is never a count or a price.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        name = "/".join(k.__name__ for k in kinds)
        raise InvalidResponse(f"{where}: expected {name}, got {type(value).__name__}")
    return value


def number(value: Any, where: str, bounds: Range, *, text: bool = False) -> float:
    """A finite number inside ``bounds``; ``text=True`` also takes decimal strings."""
    if isinstance(value, str) and text:
        if not _DECIMAL.fullmatch(value.strip()):
            raise InvalidResponse(f"{where}: {value[:40]!r} is not a decimal number")
        value = float(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidResponse(f"{where}: expected a number, got {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError:
        raise InvalidResponse(f"{where}: number too large") from None
    if not math.isfinite(result):
        raise InvalidResponse(f"{where}: {result} is not a finite number")
    if result not in bounds:
        raise InvalidResponse(f"{where}: {result:g} is not {bounds.what} in {bounds.describe()}")
    return result
