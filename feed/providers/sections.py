"""What the leader knows of each section: one store, written by any source, read when a snapshot is made.

A section is one source's answer for one part of the snapshot:
``binance.prices``, ``coingecko.prices``, ``coingecko.market``,
``feargreed.sentiment``. The REST fetch writes here after every good answer;
a stream (leader-held exchange connections) writes here the same way, tick
by tick. Each section keeps its own fetch time; nothing vanishes when a
source fails (its last good value stays until it is too old to show, which
:func:`feed.providers.snapshot.assemble` decides). A new term starts from
the newest snapshot the node holds (:meth:`SectionStore.adopt`), so a new
leader keeps what the old one knew even when the cache has expired.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from feed.envelope import Envelope
from feed.providers.snapshot import BASE_PARTS, PARTS, Freshness, Kept, ProviderStatus, assemble, provider_of
from feed.times import parse_iso

__all__ = ["SectionStore"]


class SectionStore:
    """Sections by endpoint (``provider.part``); thread-safe: concurrent calls and streams write here."""

    def __init__(self) -> None:
        self._kept: dict[str, Kept] = {}
        self._lock = threading.Lock()

    def put(self, endpoint: str, value: Any, fetched_at: float, merge: bool = False) -> bool:
        """Keep ``value`` as ``endpoint``'s section unless a newer one is kept; True if kept.

        ``merge`` (prices, the index ETFs) adds its symbols to the kept ones instead of replacing them.
        """
        with self._lock:
            old = self._kept.get(endpoint)
            # Merged answers of one tick share its time; any other write must be newer.
            if old is not None and (old.fetched_at > fetched_at
                                    or (old.fetched_at == fetched_at and not merge)):
                return False
            if merge and old is not None and isinstance(old.value, dict):
                value = {**old.value, **value}
            self._kept[endpoint] = Kept(value, fetched_at)
            return True

    def get(self, endpoint: str) -> Kept | None:
        return self._kept.get(endpoint)

    def endpoints(self) -> list[str]:
        with self._lock:
            return list(self._kept)

    def adopt(self, previous: Envelope | None, sources: Iterable[str]) -> None:
        """A new term: keep the sections of the newest snapshot, where they are newer than ours."""
        if previous is None:
            return
        sources = tuple(sources)
        data = previous.data
        by_endpoint: dict[str, dict[str, Any]] = {}
        for symbol, quote in (data.get("prices") or {}).items():
            if isinstance(quote, dict) and provider_of(quote.get("source")) in sources:
                by_endpoint.setdefault(f"{provider_of(quote['source'])}.prices", {})[symbol] = quote
        for endpoint, quotes in by_endpoint.items():
            when = max(_when(q, previous.fetched_at) for q in quotes.values())
            values = {s: {k: v for k, v in q.items() if k not in ("source", "fetched_at")}
                      for s, q in quotes.items()}
            self.put(endpoint, values, when, merge=True)
        for part in PARTS[1:]:
            section = data.get(part)
            provider = provider_of(section.get("source")) if isinstance(section, dict) else None
            if provider in sources:
                value = {k: v for k, v in section.items() if k not in ("source", "fetched_at")}
                self.put(f"{provider}.{part}", value, _when(section, previous.fetched_at))

    def assemble(self, symbols: Iterable[str], sources: Iterable[str], freshness: Mapping[str, Freshness],
                 statuses: Mapping[str, ProviderStatus], now: float, *, simulated: bool = False,
                 parts: Iterable[str] = BASE_PARTS) -> dict:
        """The snapshot ``data`` at ``now`` from every kept section (see feed/providers/snapshot.py)."""
        with self._lock:
            kept = dict(self._kept)
        return assemble(symbols, sources, kept, freshness, statuses, now, simulated=simulated, parts=parts)


def _when(section: dict[str, Any], default: float) -> float:
    try:
        return parse_iso(section["fetched_at"])
    except (KeyError, TypeError, ValueError):
        return default
