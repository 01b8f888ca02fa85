"""CoinGecko: prices with 24 h change (``/simple/price``) and market totals (``/global``).

Documented shapes (https://docs.coingecko.com/reference/simple-price and
/reference/crypto-global)::

    GET /api/v3/simple/price?ids=bitcoin&vs_currencies=usd&include_24hr_change=true
    {"bitcoin": {"usd": 91234.5, "usd_24h_change": -1.2}}

    GET /api/v3/global
    {"data": {"total_market_cap": {"usd": ...}, "total_volume": {"usd": ...},
              "market_cap_percentage": {"btc": ...},
              "market_cap_change_percentage_24h_usd": ...}}

What CoinGecko does that the service must live with:

* keyless access is limited per IP and shared with everyone behind it (a
  cloud's egress): 429, with no Retry-After promised. A keyed 429 carries
  ``x-ratelimit-reset: 2025-07-25 14:54:00 +0000`` (when the minute's
  window ends; coingecko/coingecko-typescript issue 42) and no Retry-After:
  that time is the wait. A Demo key (header
  ``x-cg-demo-api-key``, on api.coingecko.com) has its own budget, about
  10,000 calls a month; a Pro key goes in ``x-cg-pro-api-key`` to
  pro-api.coingecko.com. A key on the wrong host is 400 with error code
  10010 / 10011, the code at the top level beside ``status`` (its users'
  captured answers; rotki issue 10292), a missing or unknown key 401 with
  10002: each a refused key, not a passing error. Error answers are
  ``{"status": {"error_code": N, "error_message": "..."}}`` (or
  ``{"error": "..."}``); its CDN firewall answers 403 with an HTML page
  ("error code: 1020");
* ``/simple/price`` is cached about 60 s for keyless and Demo users: calling
  more often buys nothing;
* ids are not tickers (SHIB is ``shiba-inu``): a ticker is priced only when
  its id is known, from the table below or ``COINGECKO_IDS``, never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from feed.providers.transport import Call
from feed.providers.validate import (
    CAP_USD,
    CHANGE_PCT,
    MARKET_CHANGE_PCT,
    PERCENT,
    PRICE_USD,
    InvalidResponse,
    Quotes,
    code_of,
    error_json,
    expect,
    number,
)

__all__ = ["COINGECKO_IDS", "LIVE_URL", "NAME", "PRO_URL", "RESET_FORMAT", "auth", "explain", "global_call",
           "ids_for", "parse_global", "parse_prices", "price_call", "rate_limit_reset"]

NAME = "coingecko"
LIVE_URL = "https://api.coingecko.com"
PRO_URL = "https://pro-api.coingecko.com"
KEY_HEADERS = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}

# Ticker -> CoinGecko id, for coins whose ids are known; anything else
# needs COINGECKO_IDS (an id is never guessed from a ticker).
COINGECKO_IDS = {
    "BTC": "bitcoin", "ETH": "ethereum", "SOL": "solana", "BNB": "binancecoin", "XRP": "ripple",
    "ADA": "cardano", "DOGE": "dogecoin", "TRX": "tron", "DOT": "polkadot", "LTC": "litecoin",
    "AVAX": "avalanche-2", "LINK": "chainlink", "SHIB": "shiba-inu", "MATIC": "matic-network",
    "UNI": "uniswap", "ATOM": "cosmos", "XLM": "stellar", "BCH": "bitcoin-cash",
    "ETC": "ethereum-classic", "FIL": "filecoin", "NEAR": "near", "APT": "aptos", "ARB": "arbitrum",
    "OP": "optimism", "SUI": "sui", "TON": "the-open-network", "PEPE": "pepe",
    "USDT": "tether", "USDC": "usd-coin", "HBAR": "hedera-hashgraph", "ICP": "internet-computer",
}

# A whole-market 24 h move of several hundred % is not a market, it is a bug.


def ids_for(symbols: tuple[str, ...], extra: tuple[str, ...] = ()) -> tuple[dict[str, str], list[str]]:
    """``({SYM: id}, [unknown SYM])``: the shipped table, overridden by ``SYM=id`` pairs."""
    table = {**COINGECKO_IDS, **dict(p.split("=", 1) for p in extra)}
    known = {s: table[s] for s in symbols if s in table}
    return known, [s for s in symbols if s not in known]


def auth(plan: str, key: str | None) -> tuple[str, dict[str, str]]:
    """``(live base URL, headers)`` for a plan and key: the host and header each plan needs."""
    if not key:
        return LIVE_URL, {}
    return (PRO_URL if plan == "pro" else LIVE_URL), {KEY_HEADERS[plan]: key}


def explain(status: int, body: bytes, content_type: str) -> tuple[int | None, str]:
    """CoinGecko's error answer: ``status.error_code``, ``error``, or its CDN's HTML page."""
    if "html" in content_type.lower() or body.lstrip()[:1] == b"<":
        text = body.decode("utf-8", "replace")
        return (1020, "blocked by CoinGecko's CDN firewall (error code 1020)") if "1020" in text \
            else (None, "an HTML page (a CDN or proxy in the way)")
    obj, text = error_json(body)
    if text is not None:
        return None, text
    if not isinstance(obj, dict):
        return None, ""
    error = obj.get("error")
    if isinstance(error, dict):  # {"error": {"status": {...}}}, seen on some 401s
        obj = error
    top = code_of(obj.get("error_code"))  # beside status on the wrong-host 400s
    status_obj = obj.get("status")
    if isinstance(status_obj, dict):
        return top or code_of(status_obj.get("error_code")), str(status_obj.get("error_message", ""))[:240]
    if top is not None:
        return top, str(obj.get("error_message") or obj.get("error") or "")[:240]
    return None, str(error)[:240] if error else ""


RESET_FORMAT = "%Y-%m-%d %H:%M:%S %z"
_RESET = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}")


def rate_limit_reset(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until ``x-ratelimit-reset`` (CoinGecko's wall-clock window end), at least 1.

    None when the header is absent or not in that shape; never negative, so a
    clock running ahead of CoinGecko's still waits a second rather than not at all.
    """
    raw = (headers.get("x-ratelimit-reset") or "").strip()
    if not _RESET.fullmatch(raw):
        return None
    try:
        when = datetime.strptime(raw, RESET_FORMAT).timestamp()
    except ValueError:
        return None
    return max(1.0, when - now)


def price_call(base_url: str, ids: dict[str, str], headers: dict[str, str]) -> Call:
    """``/simple/price`` for the symbols whose ids are known (``{SYM: id}``)."""
    return Call(NAME, "prices", f"{base_url}/api/v3/simple/price",
                {"ids": ",".join(dict.fromkeys(ids.values())), "vs_currencies": "usd",
                 "include_24hr_change": "true"},
                partial(parse_prices, ids=ids), explain, headers, rate_limit_reset)


def global_call(base_url: str, headers: dict[str, str]) -> Call:
    return Call(NAME, "market", f"{base_url}/api/v3/global", {}, parse_global, explain, headers,
                rate_limit_reset)


def parse_prices(payload: Any, ids: dict[str, str]) -> Quotes:
    """``{SYM: {"usd", "change_24h"}}`` for the symbols present in the answer.

    An error object answered with HTTP 200 is an invalid answer, not an
    empty one. A coin whose numbers are impossible (a zero price, an absurd
    change) is dropped and named in ``rejected``; the others stand.
    """
    expect(payload, dict, "simple/price")
    if isinstance(payload.get("status"), dict) or "error" in payload:
        code, message = explain(200, json.dumps(payload).encode(), "application/json")
        raise InvalidResponse(f"simple/price: an error answered with HTTP 200 (code {code}): {message[:120]}")
    out = Quotes()
    for symbol, cid in ids.items():
        entry = payload.get(cid)
        if entry is None:
            continue  # CoinGecko leaves out ids it does not know
        expect(entry, dict, f"simple/price.{cid}")
        if "usd" not in entry:
            continue
        try:
            usd = number(entry["usd"], f"simple/price.{cid}.usd", PRICE_USD)
            change = entry.get("usd_24h_change")
            # CoinGecko sends null when it has no 24 h history for a coin.
            if change is not None:
                change = number(change, f"simple/price.{cid}.usd_24h_change", CHANGE_PCT)
        except InvalidResponse as exc:
            out.rejected[symbol] = str(exc)
            continue
        out[symbol] = {"usd": usd, "change_24h": change}
    if out.rejected and not out:
        raise InvalidResponse("simple/price: no coin had a valid price: "
                              + "; ".join(out.rejected.values())[:200])
    return out


def parse_global(payload: Any) -> dict[str, Any]:
    """The market totals in the snapshot's ``market`` shape (without ``source``)."""
    data = expect(expect(payload, dict, "global").get("data"), dict, "global.data")

    def usd(name: str) -> float:
        table = expect(data.get(name), dict, f"global.data.{name}")
        return number(table.get("usd"), f"global.data.{name}.usd", CAP_USD)

    shares = expect(data.get("market_cap_percentage"), dict, "global.data.market_cap_percentage")
    return {
        "total_market_cap_usd": usd("total_market_cap"),
        "total_volume_usd": usd("total_volume"),
        "btc_dominance": number(shares.get("btc"), "global.data.market_cap_percentage.btc", PERCENT),
        # ETH's share (the original showed it): absent rather than invented if CoinGecko leaves it out.
        **({"eth_dominance": number(shares["eth"], "global.data.market_cap_percentage.eth", PERCENT)}
           if shares.get("eth") is not None else {}),
        "market_cap_change_24h": number(
            data.get("market_cap_change_percentage_24h_usd"),
            "global.data.market_cap_change_percentage_24h_usd", MARKET_CHANGE_PCT),
    }
