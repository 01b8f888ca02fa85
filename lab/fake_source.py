"""A built-in random-walk price source that makes no network calls.

For headless test nodes and for the lab when the simulated exchange is not
wanted; the service itself fetches through :mod:`feed.providers`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from feed.logs import log_event

__all__ = ["fake_fetcher"]

log = logging.getLogger(__name__)


def fake_fetcher(delay: float = 0.0, symbols: tuple[str, ...] = ("BTC", "ETH")) -> Callable[..., dict]:
    """A random-walk price source that makes no network calls; ``fetch(term, previous)``."""
    prices = {s: 100.0 * (i + 1) for i, s in enumerate(symbols)}

    def fetch(term: object = None, previous: object = None) -> dict:
        log_event(log, "fake_fetch_started", delay=delay)
        if delay:
            time.sleep(delay)
        for s in prices:
            prices[s] = round(prices[s] * (1 + random.uniform(-0.002, 0.002)), 6)
        return {"prices": {s: {"usd": p, "change_24h": 0.0, "source": "fake"} for s, p in prices.items()}}

    return fetch
