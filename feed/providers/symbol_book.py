"""Binance's symbol book: which configured symbols Binance trades, looked up once a day, kept in the budget.

One unknown symbol fails a whole ticker batch (-1121), so the ticker asks
only for pairs the book lists. The book is asked once a day (or when an
answer says it changed): one exchangeInfo call for all symbols; if Binance
refuses the batch because one is unknown, the rest are asked one by one,
at most :data:`LOOKUPS_PER_TICK` a tick (each weighs 20), the pairs found so
far priced meanwhile. The book lives in the cluster's budget (Redis, under
the fence), so a new leader does not look it up again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from feed.providers import binance
from feed.providers.budget import Budget
from feed.providers.snapshot import CallResult
from feed.providers.transport import Call

__all__ = ["LOOKUPS_PER_TICK", "LOOKUP_EVERY", "SymbolBook"]

LOOKUP_EVERY = 86400.0  # looked up again after a day
LOOKUPS_PER_TICK = 8  # single-symbol exchangeInfo calls a tick, at most (weight 20 each)
FIELD = "symbols:binance"


class SymbolBook:
    """The book for ``symbols`` at ``base`` (Binance's host, redacted), in ``budget``."""

    def __init__(self, budget: Budget, symbols: tuple[str, ...], base: str, url: str,
                 wall: Callable[[], float]) -> None:
        self.budget = budget
        self.symbols = symbols
        self.base = base
        self.url = url
        self.wall = wall

    def current(self) -> dict[str, Any] | None:
        """The last lookup while it holds (a day, the same symbols, the same host).

        ``known`` maps symbols to the pairs Binance trades, ``unknown`` lists
        the ones it does not, ``pending`` the ones still to ask one by one.
        """
        book = self.budget.get_json(FIELD)
        if not isinstance(book, dict):
            return None
        fresh = self.wall() - book.get("at", 0) / 1000.0 < LOOKUP_EVERY
        same = book.get("asked") == list(self.symbols) and book.get("base") == self.base
        return book if fresh and same else None

    def pairs(self) -> dict[str, str]:
        book = self.current()
        return dict(book["known"]) if book else {}

    def unknown(self) -> tuple[str, ...]:
        book = self.current()
        return tuple(book["unknown"]) if book else ()

    def forget(self) -> None:
        """An answer says a listed pair is gone: look the symbols up again."""
        self.budget.put_json(FIELD, None)

    def needs_lookup(self) -> bool:
        book = self.current()
        return book is None or bool(book.get("pending"))

    def look_up(self, now: float, run: Callable[[list[Call]], list[CallResult]]
                ) -> tuple[list[CallResult], bool]:
        """One tick's lookup; ``(a failed lookup to settle, or none; True when the book is complete)``.

        A refusal or an outage is returned for the tick to settle (blocks and
        back-off as for any call); each symbol answered counts one call.
        """
        book = self.current()
        symbols = self.symbols
        if book is None:
            result = run([binance.lookup_call(self.url, symbols)])[0]
            if result.error is not None and result.error.code != binance.UNKNOWN_SYMBOL:
                return [result], False
            self.budget.count(binance.NAME)
            book = {"asked": list(symbols), "base": self.base, "at": int(now * 1000),
                    "known": {}, "unknown": [], "pending": []}
            if result.error is None:
                _file(book, symbols, result.value.value)
            else:
                book["pending"] = list(symbols)
        if book["pending"]:
            asking = tuple(book["pending"][:LOOKUPS_PER_TICK])
            results = run([binance.lookup_call(self.url, (s,)) for s in asking])
            failed = []
            for symbol, result in zip(asking, results, strict=True):
                if result.error is not None and result.error.code != binance.UNKNOWN_SYMBOL:
                    failed.append(result)  # stays pending
                    continue
                self.budget.count(binance.NAME)
                book["pending"].remove(symbol)
                _file(book, (symbol,), result.value.value if result.error is None else {})
            if failed:
                self.budget.put_json(FIELD, book)
                return failed[:1], False  # one back-off for the lot: they failed for the same reason
        self.budget.put_json(FIELD, book)
        return [], not book["pending"]


def _file(book: dict[str, Any], symbols: tuple[str, ...], listed: dict[str, str]) -> None:
    """Sort ``symbols`` into the book's known (traded) and unknown, by an exchangeInfo answer."""
    for symbol in symbols:
        if listed.get(binance.pair(symbol)) == "TRADING":
            book["known"][symbol] = binance.pair(symbol)
        elif symbol not in book["unknown"]:
            book["unknown"].append(symbol)
