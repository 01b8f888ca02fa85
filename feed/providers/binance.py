"""Binance spot: 24 h rolling ticker statistics for several symbols in one call.

Documented shapes (https://developers.binance.com/docs/binance-spot-api-docs/
rest-api/market-data-endpoints)::

    GET /api/v3/ticker/24hr?symbols=["BTCUSDT","ETHUSDT"]        weight 2 for 1-20 symbols
    [{"symbol": "BTCUSDT", "lastPrice": "91234.50000000",
      "priceChangePercent": "-1.200", "quoteVolume": "...", ...}, ...]

    GET /api/v3/exchangeInfo?symbols=["BTCUSDT"]                 weight 20
    {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", ...}], ...}

    GET /api/v3/klines?symbol=BTCUSDT&interval=1d&limit=200      weight 2 (limit 1-1000)
    [[open_time_ms, "open", "high", "low", "close", "volume", close_time_ms, ...], ...]
    (oldest first; the last candle is today's, still forming)

Numbers come as strings. Prices are quoted in USDT and reported as USD.
What Binance does that the service must live with:

* one unknown symbol fails the whole batch: 400 ``{"code": -1121, "msg":
  "Invalid symbol."}``. So the configured symbols are looked up once
  (exchangeInfo, one by one if the batch is refused), the result is kept in
  Redis, and the ticker asks only for pairs Binance lists;
* weight is counted per IP (``X-MBX-USED-WEIGHT-1M``); past the limit 429
  with Retry-After, and continuing brings 418 bans of 2 minutes to 3 days;
* from restricted regions (US cloud regions among them) every call is 451
  ``{"code": 0, "msg": "Service unavailable from a restricted location
  ..."}``; ``data-api.binance.vision`` is Binance's host for public market
  data, and binance.us (whose symbols differ) another way out;
* its WAF answers 403.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from feed.providers.indicators import rsi
from feed.providers.transport import Call
from feed.providers.validate import (
    CHANGE_PCT,
    PRICE_USD,
    InvalidResponse,
    Quotes,
    code_of,
    error_json,
    expect,
    number,
)

__all__ = ["KLINES_LIMIT", "LIVE_URL", "NAME", "QUOTE", "explain", "lookup_call", "pair", "parse_closes",
           "parse_listed", "parse_rsi", "parse_ticker", "rsi_call", "ticker_call"]

NAME = "binance"
LIVE_URL = "https://data-api.binance.vision"
QUOTE = "USDT"
UNKNOWN_SYMBOL = -1121
#: Daily candles per RSI call: enough for Wilder's smoothing to forget its seed, at weight 2.
KLINES_LIMIT = 200
RSI_PERIOD = 14


def pair(symbol: str) -> str:
    return f"{symbol.upper()}{QUOTE}"


def explain(status: int, body: bytes, content_type: str) -> tuple[int | None, str]:
    """Binance's ``{"code", "msg"}`` error answer."""
    obj, text = error_json(body)
    if text is not None:
        return None, text
    if isinstance(obj, dict):
        return code_of(obj.get("code")), str(obj.get("msg", ""))[:240]
    return None, ""


def ticker_call(base_url: str, pairs: dict[str, str]) -> Call:
    """One request for every listed symbol (``{SYM: PAIR}``); Binance weighs it by count."""
    names = json.dumps(sorted(set(pairs.values())), separators=(",", ":"))
    return Call(NAME, "prices", f"{base_url}/api/v3/ticker/24hr", {"symbols": names},
                partial(parse_ticker, wanted={p: s for s, p in pairs.items()}), explain)


def lookup_call(base_url: str, symbols: tuple[str, ...]) -> Call:
    """exchangeInfo for ``symbols``: which of their USDT pairs Binance trades."""
    names = [pair(s) for s in symbols]
    if len(names) == 1:
        params = {"symbol": names[0]}
    else:
        params = {"symbols": json.dumps(names, separators=(",", ":"))}
    return Call(NAME, "symbols", f"{base_url}/api/v3/exchangeInfo", params, parse_listed, explain)


def parse_listed(payload: Any) -> dict[str, str]:
    """``{PAIR: status}`` from exchangeInfo (a pair is usable when TRADING)."""
    rows = expect(expect(payload, dict, "exchangeInfo").get("symbols"), list, "exchangeInfo.symbols")
    out = {}
    for i, row in enumerate(rows):
        expect(row, dict, f"exchangeInfo.symbols[{i}]")
        out[expect(row.get("symbol"), str, f"exchangeInfo.symbols[{i}].symbol")] = str(row.get("status"))
    return out


def parse_ticker(payload: Any, wanted: dict[str, str]) -> Quotes:
    """``{SYM: {"usd", "change_24h"}}`` for the pairs (``{PAIR: SYM}``) present in the answer.

    A pair with impossible numbers (a zero price) is dropped and named in
    ``rejected``; the others stand. If none stands, the answer is invalid.
    """
    if isinstance(payload, dict):
        payload = [payload]  # the single-symbol form answers with one object
    expect(payload, list, "ticker/24hr")
    out = Quotes()
    for i, item in enumerate(payload):
        expect(item, dict, f"ticker/24hr[{i}]")
        name = expect(item.get("symbol"), str, f"ticker/24hr[{i}].symbol")
        symbol = wanted.get(name)
        if symbol is None:
            continue
        try:
            out[symbol] = {
                "usd": number(item.get("lastPrice"), f"{name}.lastPrice", PRICE_USD, text=True),
                "change_24h": number(item.get("priceChangePercent"), f"{name}.priceChangePercent",
                                     CHANGE_PCT, text=True),
            }
        except InvalidResponse as exc:
            out.rejected[symbol] = str(exc)
    if out.rejected and not out:
        raise InvalidResponse("ticker/24hr: no pair had a valid price: "
                              + "; ".join(out.rejected.values())[:200])
    return out


def rsi_call(base_url: str, symbol: str = "BTC") -> Call:
    """BTC's daily candles, for its RSI(14) (the ``indicators`` section)."""
    return Call(NAME, "indicators", f"{base_url}/api/v3/klines",
                {"symbol": pair(symbol), "interval": "1d", "limit": str(KLINES_LIMIT)},
                partial(parse_rsi, key=f"{symbol.lower()}_rsi_{RSI_PERIOD}"), explain)


def parse_closes(payload: Any) -> list[float]:
    """The close of each candle, oldest first."""
    rows = expect(payload, list, "klines")
    closes = []
    for i, row in enumerate(rows):
        row = expect(row, list, f"klines[{i}]")
        closes.append(number(row[4] if len(row) > 4 else None, f"klines[{i}][4]", PRICE_USD, text=True))
    return closes


def parse_rsi(payload: Any, key: str = "btc_rsi_14") -> dict[str, float]:
    """``{key: RSI}`` from daily candles; too few candles is an invalid answer."""
    closes = parse_closes(payload)
    if len(closes) < RSI_PERIOD + 1:
        raise InvalidResponse(f"klines: {len(closes)} candles, RSI({RSI_PERIOD}) needs {RSI_PERIOD + 1}")
    return {key: round(rsi(closes, RSI_PERIOD), 4)}
