"""Binance spot: 24 h rolling ticker statistics for several symbols in one call.

Documented shape (https://developers.binance.com/docs/binance-spot-api-docs/
rest-api/market-data-endpoints#24hr-ticker-price-change-statistics)::

    GET /api/v3/ticker/24hr?symbols=["BTCUSDT","ETHUSDT"]
    [{"symbol": "BTCUSDT", "lastPrice": "91234.50000000",
      "priceChangePercent": "-1.200", "quoteVolume": "...", ...}, ...]

Numbers come as strings. Prices are quoted in USDT and reported as USD.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from feed.providers.transport import Call
from feed.providers.validate import CHANGE_PCT, PRICE_USD, expect, number

__all__ = ["LIVE_URL", "NAME", "QUOTE", "calls", "pair", "parse_ticker"]

NAME = "binance"
LIVE_URL = "https://api.binance.com"
QUOTE = "USDT"


def pair(symbol: str) -> str:
    return f"{symbol.upper()}{QUOTE}"


def calls(base_url: str, symbols: tuple[str, ...]) -> list[Call]:
    """One request for all symbols (Binance weighs it by symbol count)."""
    pairs = json.dumps([pair(s) for s in dict.fromkeys(symbols)], separators=(",", ":"))
    return [Call(NAME, "prices", f"{base_url}/api/v3/ticker/24hr", {"symbols": pairs},
                 partial(parse_ticker, symbols=symbols))]


def parse_ticker(payload: Any, symbols: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``{SYM: {"usd", "change_24h"}}`` for the symbols present in the answer."""
    if isinstance(payload, dict):
        payload = [payload]  # the single-symbol form answers with one object
    expect(payload, list, "ticker/24hr")
    wanted = {pair(s): s for s in symbols}
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(payload):
        expect(item, dict, f"ticker/24hr[{i}]")
        name = expect(item.get("symbol"), str, f"ticker/24hr[{i}].symbol")
        symbol = wanted.get(name)
        if symbol is None:
            continue
        out[symbol] = {
            "usd": number(item.get("lastPrice"), f"{name}.lastPrice", PRICE_USD, text=True),
            "change_24h": number(item.get("priceChangePercent"), f"{name}.priceChangePercent",
                                 CHANGE_PCT, text=True),
        }
    return out
