"""Upstream market providers: CoinGecko, Binance and the Fear & Greed index.

``build_fetcher(settings, node_id, on_call)`` returns a callable that fetches
every configured provider and merges the answers into one normalised
snapshot ``data`` dict; see docs/PROVIDERS.md for the shape and the rules.
"""

from __future__ import annotations

from .fetcher import PROVIDERS, Fetcher, base_urls, build_fetcher, fetch_budget
from .transport import OUTCOMES, USER_AGENT, Call, CallFailed, HttpClient
from .validate import InvalidResponse

__all__ = [
    "OUTCOMES",
    "PROVIDERS",
    "USER_AGENT",
    "Call",
    "CallFailed",
    "Fetcher",
    "HttpClient",
    "InvalidResponse",
    "base_urls",
    "build_fetcher",
    "fetch_budget",
]
