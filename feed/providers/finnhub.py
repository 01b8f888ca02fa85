"""Finnhub: quotes of the US index ETFs the original showed (DIA, SPY, QQQM), with a key.

Documented shapes (https://finnhub.io/docs/api/quote)::

    GET /api/v1/quote?symbol=SPY        header X-Finnhub-Token: <key>
    {"c": 601.5, "d": 2.5, "dp": 0.4174, "h": 603.1, "l": 598.2, "o": 599.0, "pc": 599.0, "t": 1795699800}

One symbol per request. What Finnhub does that the service must live with:

* the free plan allows 60 calls a minute (and 30 a second); past it 429
  ``{"error": "API limit reached. Please try again later. Remaining Limit: 0"}``;
  no daily limit. Its users report the same 429 text, "Please sign up for a
  free account", for a request whose token is missing (finnhubio/Finnhub-API
  issues 122, 339, 466);
* an invalid key is 401 ``{"error": "Invalid API key"}``;
* a symbol it does not know is a 200 of zeros (``"c": 0``, ``"d": null``),
  which is no price.

The key goes in the header, never in the URL, so no access log holds it.
Three calls every 5 minutes (the original's cache time) is 0.6 a minute.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from feed.providers.transport import Call
from feed.providers.validate import CHANGE_PCT, PRICE_USD, InvalidResponse, Range, error_json, expect, number

__all__ = ["INDEX_ETFS", "LIVE_URL", "NAME", "auth", "explain", "parse_quote", "quote_call"]

NAME = "finnhub"
LIVE_URL = "https://finnhub.io"
#: The ETFs the original showed, in its order.
INDEX_ETFS = ("DIA", "SPY", "QQQM")
KEY_HEADER = "X-Finnhub-Token"
_CHANGE_USD = Range(-1e6, 1e6, what="a USD change")


def auth(key: str | None) -> dict[str, str]:
    return {KEY_HEADER: key} if key else {}


def explain(status: int, body: bytes, content_type: str) -> tuple[int | None, str]:
    """Finnhub's ``{"error": text}`` answer (or a plain text one)."""
    obj, text = error_json(body)
    if text is not None:
        return None, text
    if isinstance(obj, dict) and obj.get("error"):
        return None, str(obj["error"])[:240]
    return None, ""


def quote_call(base_url: str, symbol: str, headers: dict[str, str]) -> Call:
    """One ETF's quote (the ``indices`` section, merged across the three)."""
    return Call(NAME, "indices", f"{base_url}/api/v1/quote", {"symbol": symbol},
                partial(parse_quote, symbol=symbol), explain, headers)


def parse_quote(payload: Any, symbol: str) -> dict[str, dict[str, float | None]]:
    """``{symbol: {"price", "change", "change_percent"}}``; a quote of zeros is no quote."""
    obj = expect(payload, dict, "quote")
    if obj.get("c") in (0, 0.0) or obj.get("c") is None:
        raise InvalidResponse(f"quote: no price for {symbol} (an unknown symbol answers zeros)")
    price = number(obj.get("c"), "quote.c", PRICE_USD)
    change = None if obj.get("d") is None else number(obj["d"], "quote.d", _CHANGE_USD)
    percent = None if obj.get("dp") is None else number(obj["dp"], "quote.dp", CHANGE_PCT)
    return {symbol: {"price": price, "change": change, "change_percent": percent}}
