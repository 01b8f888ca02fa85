"""The market endpoints the simulated exchange serves, and their failure bodies.

Paths and parameters follow the public APIs under a per-host prefix (see
:data:`PREFIXES`): ``/coingecko/api/v3/simple/price``, ``/coingecko/api/v3/global``
(the same under ``/coingecko-pro``), ``/binance/api/v3/ticker/24hr``,
``/binance/api/v3/exchangeInfo``, ``/binance/api/v3/klines`` (daily candles),
``/feargreed/fng/`` and ``/finnhub/api/v1/quote``. Error bodies are
the ones the real APIs send for the same status, so a client's handling of
them can be tested here.
"""

from __future__ import annotations

import http
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from feed.simulator.market import BINANCE_QUOTE, Market, UnknownSymbol

__all__ = [
    "BINANCE_DEFAULT_WEIGHT_LIMIT",
    "CACHEABLE",
    "COINGECKO_KEY_PARAMS",
    "HOSTS",
    "PAD_MARKER",
    "PREFIXES",
    "Answer",
    "binance_weight",
    "coingecko_error",
    "error_answer",
    "malform",
    "padded",
    "route",
]

PAD_MARKER = "__SIM_PADDING__"
_BINANCE_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")

#: URL prefix -> the provider it belongs to. CoinGecko has two hosts:
#: api.coingecko.com (keyless and Demo keys) and pro-api.coingecko.com (Pro keys).
PREFIXES: dict[str, str] = {
    "coingecko": "coingecko",
    "coingecko-pro": "coingecko",
    "binance": "binance",
    "feargreed": "feargreed",
    "finnhub": "finnhub",
    "coinmarketcap": "coinmarketcap",
}
#: The real host each prefix stands in for (named in error texts).
HOSTS: dict[str, str] = {
    "coingecko": "api.coingecko.com",
    "coingecko-pro": "pro-api.coingecko.com",
    "binance": "api.binance.com",
    "feargreed": "api.alternative.me",
    "finnhub": "finnhub.io",
    "coinmarketcap": "pro-api.coinmarketcap.com",
}
#: CoinMarketCap's error codes and texts (its API documentation's error table).
CMC_ERRORS = {1001: (401, "This API Key is invalid."), 1002: (401, "API key missing."),
              1008: (429, "You've exceeded your API Key's HTTP request rate limit. Rate limits reset every "
                          "minute."),
              1006: (403, "Your API Key subscription plan doesn't support this endpoint.")}
#: Finnhub's answers to a missing token, a bad one, and too many calls (as its users report them).
FINNHUB_SIGN_UP = "API limit reached. Please sign up for a free account to continue using the API."
FINNHUB_KEY_INVALID = "Invalid API key"
FINNHUB_RATE_LIMIT = "API limit reached. Please try again later. Remaining Limit: 0"
#: CoinGecko's key query parameters (its headers are x-cg-demo-api-key / x-cg-pro-api-key).
COINGECKO_KEY_PARAMS = ("x_cg_pro_api_key", "x_cg_demo_api_key")
#: The CoinGecko paths its CDN caches.
CACHEABLE = ("/api/v3/simple/price", "/api/v3/global")
#: What Binance's exchangeInfo states as the weight limit when the simulator enforces none.
BINANCE_DEFAULT_WEIGHT_LIMIT = 6000


@dataclass
class Answer:
    status: int
    payload: Any  # JSON-able; the page's text when content_type is not JSON
    kind: str | None = None  # which endpoint made it: simple_price | global | ticker | exchange_info | fng
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def body(self) -> bytes:
        if self.content_type == "application/json":
            return json.dumps(self.payload).encode()
        return str(self.payload).encode()


def route(market: Market, prefix: str, path: str, query: dict[str, list[str]], *,
          weight_limit: int = BINANCE_DEFAULT_WEIGHT_LIMIT) -> Answer:
    """The answer to ``GET /{prefix}{path}?{query}``, limits aside."""
    def arg(name: str, default: str | None = None) -> str | None:
        values = query.get(name)
        return values[-1] if values else default

    provider = PREFIXES.get(prefix, prefix)
    if provider == "coingecko" and path == "/api/v3/simple/price":
        currencies = [c.strip().lower() for c in (arg("vs_currencies") or "").split(",") if c.strip()]
        if not currencies:
            return Answer(400, {"error": "Missing parameter vs_currencies"})
        ids = [i.strip().lower() for i in (arg("ids") or "").split(",") if i.strip()]
        with_change = (arg("include_24hr_change") or "").lower() == "true"
        return Answer(200, market.coingecko_simple_price(ids, currencies, with_change), "simple_price")
    if provider == "coingecko" and path == "/api/v3/global":
        return Answer(200, market.coingecko_global(), "global")
    if provider == "binance" and path == "/api/v3/ticker/24hr":
        return _binance_ticker(market, arg("symbols"), arg("symbol"))
    if provider == "binance" and path == "/api/v3/exchangeInfo":
        return _binance_exchange_info(market, arg("symbols"), arg("symbol"), weight_limit)
    if provider == "binance" and path == "/api/v3/klines":
        return _binance_klines(market, arg("symbol"), arg("interval"), arg("limit"))
    if provider == "finnhub" and path == "/api/v1/quote":
        symbol = (arg("symbol") or "").strip().upper()
        if not symbol:
            return Answer(422, {"error": "Wrong symbol"}, "quote")
        return Answer(200, market.finnhub_quote(symbol), "quote")
    if provider == "coinmarketcap" and path == "/v1/global-metrics/quotes/latest":
        return Answer(200, market.cmc_global_metrics(), "cmc_global")
    if provider == "feargreed" and path in ("/fng", "/fng/"):
        raw = arg("limit", "1") or "1"
        limit = int(raw) if raw.isdigit() else 1
        return Answer(200, market.fear_greed(min(30, limit or 30)), "fng")
    return error_answer(prefix, 404, f"no such endpoint: {path}")


def binance_weight(path: str, query: dict[str, list[str]]) -> int:
    """The request weight Binance charges for ``GET /api/v3{path}`` (documented values)."""
    if path == "/api/v3/exchangeInfo":
        return 20
    if path == "/api/v3/klines":
        return 2
    if path != "/api/v3/ticker/24hr":
        return 1
    if query.get("symbols"):
        try:
            names = json.loads(query["symbols"][-1])
        except ValueError:
            names = None
        count = len(names) if isinstance(names, list) else 1
        return 2 if count <= 20 else 40 if count <= 100 else 80
    if query.get("symbol"):
        return 2
    return 80  # every pair at once


def _requested_pairs(symbols: str | None, symbol: str | None) -> list[str] | Answer | None:
    """The pairs a ``symbol`` / ``symbols`` parameter names (None: all), or the 400 answer."""
    if symbols is not None:
        try:
            names = json.loads(symbols)
        except ValueError:
            names = None
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) and _BINANCE_SYMBOL.fullmatch(n) for n in names)):
            return Answer(400, {"code": -1100, "msg": "Illegal characters found in parameter "
                                "'symbols'; legal range is '[\"BTCUSDT\",\"ETHUSDT\"]'."})
        return list(dict.fromkeys(names))
    if symbol is not None:
        if not _BINANCE_SYMBOL.fullmatch(symbol):
            return Answer(400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbol'; "
                                "legal range is '^[A-Z0-9-_.]{1,20}$'."})
        return [symbol]
    return None


def _binance_klines(market: Market, symbol: str | None, interval: str | None, limit: str | None) -> Answer:
    # The real API's answers to a missing or bad parameter (codes -1102, -1120, -1100).
    if not symbol:
        return Answer(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was "
                                                  "empty/null, or malformed."})
    if not interval:
        return Answer(400, {"code": -1102, "msg": "Mandatory parameter 'interval' was not sent, was "
                                                  "empty/null, or malformed."})
    if interval != "1d":
        # The simulator draws daily candles only; the real API knows 1s..1M.
        return Answer(400, {"code": -1120, "msg": "Invalid interval."})
    count = 500 if limit is None else int(limit) if limit.isdigit() else -1
    if not 1 <= count <= 1000:
        return Answer(400, {"code": -1100, "msg": "Illegal characters found in parameter 'limit'; legal "
                                                  "range is '1-1000'."})
    if not _BINANCE_SYMBOL.fullmatch(symbol):
        return Answer(400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbol'; "
                                                  "legal range is '^[A-Z0-9-_.]{1,20}$'."})
    try:
        return Answer(200, market.binance_daily_klines(symbol, count), "klines")
    except UnknownSymbol:
        return _invalid_symbol()


def _invalid_symbol() -> Answer:
    # One unlisted pair fails the whole request, as on the real API.
    return Answer(400, {"code": -1121, "msg": "Invalid symbol."})


def _binance_ticker(market: Market, symbols: str | None, symbol: str | None) -> Answer:
    pairs = _requested_pairs(symbols, symbol)
    if isinstance(pairs, Answer):
        return pairs
    if pairs is None:  # without a symbol Binance answers for every pair it lists
        return Answer(200, [market.binance_ticker(p) for p in market.binance_pairs()
                            if market.binance_status(p) == "TRADING"], "ticker")
    try:
        items = [market.binance_ticker(p) for p in pairs]
    except UnknownSymbol:
        return _invalid_symbol()
    return Answer(200, items if symbols is not None else items[0], "ticker")


def _binance_exchange_info(market: Market, symbols: str | None, symbol: str | None,
                           weight_limit: int) -> Answer:
    pairs = _requested_pairs(symbols, symbol)
    if isinstance(pairs, Answer):
        return pairs
    listed = market.binance_pairs()
    if pairs is None:
        pairs = list(listed)
    if any(p not in listed for p in pairs):
        return _invalid_symbol()
    return Answer(200, {
        "timezone": "UTC",
        "serverTime": int(time.time() * 1000),
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                        "limit": weight_limit}],
        "exchangeFilters": [],
        "symbols": [{"symbol": p, "status": market.binance_status(p), "baseAsset": listed[p],
                     "quoteAsset": BINANCE_QUOTE}
                    for p in pairs],
    }, "exchange_info")


# --- error bodies ---------------------------------------------------------

BINANCE_TOO_MUCH_WEIGHT = ("Too much request weight used; current limit is {limit} request weight "
                           "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                           "polling the API.")
BINANCE_BANNED = ("Way too much request weight used; IP banned until {until_ms}. Please use WebSocket "
                  "Streams for live updates to avoid bans.")
BINANCE_RESTRICTED = ("Service unavailable from a restricted location according to 'b. Eligibility' in "
                      "https://www.binance.com/en/terms. Please contact customer service if you believe you "
                      "received this message in error.")
BINANCE_UNKNOWN = "An unknown error occurred while processing the request."
COINGECKO_RATE_LIMIT = ("You've exceeded the Rate Limit. Please visit "
                        "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for "
                        "higher rate limits.")
# CoinGecko does not publish this text; it says what the real one means.
COINGECKO_MONTHLY = ("You've exceeded your monthly API call credits. Please visit "
                     "https://www.coingecko.com/en/api/pricing to upgrade your plan, or wait for your "
                     "credits to reset next month.")
COINGECKO_KEY_MISSING = "API Key Missing"
COINGECKO_KEY_INVALID = ("You have provided incorrect API key credentials. Please check your keys in "
                         "developer dashboard and ensure that your request is authorized")
COINGECKO_PRO_ON_PUBLIC = ("If you are using Pro API key, please change your root URL from api.coingecko.com "
                           "to pro-api.coingecko.com")
COINGECKO_DEMO_ON_PRO = ("If you are using Demo API key, please change your root URL from "
                         "pro-api.coingecko.com to api.coingecko.com")

# Cloudflare's block page, as CoinGecko's CDN firewall serves it.
_CLOUDFLARE_1020 = """<!DOCTYPE html>
<html lang="en-US">
<head><meta charset="UTF-8"><title>Access denied | {host} used Cloudflare to restrict access</title></head>
<body>
<div id="cf-wrapper"><div id="cf-error-details">
<h1>Access denied</h1>
<p>error code: 1020</p>
<p>You do not have access to {host}.</p>
<p>The site owner may have set restrictions that prevent you from accessing the site.</p>
<p>Cloudflare Ray ID: 8e1f2a3b4c5d6e7f</p>
</div></div>
</body>
</html>
"""
# CloudFront's page, as Binance's WAF serves it.
_CLOUDFRONT_403 = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN" \
"http://www.w3.org/TR/html4/loose.dtd">
<HTML><HEAD><META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=iso-8859-1">
<TITLE>ERROR: The request could not be satisfied</TITLE>
</HEAD><BODY>
<H1>403 ERROR</H1>
<H2>The request could not be satisfied.</H2>
<HR noshade size="1px">
Request blocked.
We can't connect to the server for this app or website at this time. There might be too much traffic or a \
configuration error. Try again later, or contact the app or website owner.
<BR clear="all">
<HR noshade size="1px">
<PRE>
Generated by cloudfront (CloudFront)
Request ID: sim-waf-0000000000000000000000000000000000000000000000000000
</PRE>
<ADDRESS>
</ADDRESS>
</BODY></HTML>
"""


def coingecko_error(status: int, code: int, message: str, retry_after: int | None = None, *,
                    top_level: bool = False) -> Answer:
    """CoinGecko's ``{"status": {"error_code", "error_message"}}`` answer.

    ``top_level``: the code also beside ``status``, as CoinGecko's 400s for
    a key on the wrong host (10010 / 10011) carry it.
    """
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    body: dict[str, Any] = {"status": {"error_code": code, "error_message": message}}
    if top_level:
        body["error_code"] = code
    return Answer(status, body, headers=headers)


def cmc_error(code: int, headers: dict[str, str] | None = None) -> Answer:
    """CoinMarketCap's error answer for one of :data:`CMC_ERRORS`."""
    status, text = CMC_ERRORS[code]
    return Answer(status, {"status": {"error_code": code, "error_message": text, "credit_count": 0}},
                  headers=headers or {})


def error_answer(prefix: str, status: int, message: str | None = None, *, retry_after: int | None = None,
                 now: float | None = None, banned_until: float | None = None,
                 weight_limit: int = BINANCE_DEFAULT_WEIGHT_LIMIT) -> Answer:
    """A ``status`` answer as the provider behind ``prefix`` sends it.

    ``message`` replaces the text of the generic bodies only; the bodies the
    real APIs word precisely (Binance 400/403/418/429/451, CoinGecko
    401/403/429) keep their wording. ``Retry-After`` is sent when
    ``retry_after`` is given. A Binance 418 names the end of its ban:
    ``banned_until``, else ``now`` + ``retry_after`` (Unix seconds).
    """
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    provider = PREFIXES.get(prefix, prefix)
    host = HOSTS.get(prefix, "the simulated exchange")
    text = message or _phrase(status)
    if provider == "binance":
        if status == 403:
            return Answer(403, _CLOUDFRONT_403, headers=headers, content_type="text/html")
        if status == 429:
            body = {"code": -1003, "msg": BINANCE_TOO_MUCH_WEIGHT.format(limit=weight_limit)}
        elif status == 418:
            until = banned_until
            if until is None:
                until = (time.time() if now is None else now) + (retry_after or 0)
            body = {"code": -1003, "msg": BINANCE_BANNED.format(until_ms=math.ceil(until * 1000))}
        elif status == 451:
            body = {"code": 0, "msg": BINANCE_RESTRICTED}
        elif status == 400:
            body = _invalid_symbol().payload
        else:
            body = {"code": -1000, "msg": message or BINANCE_UNKNOWN}
        return Answer(status, body, headers=headers)
    if provider == "coingecko":
        if status == 403:
            return Answer(403, _CLOUDFLARE_1020.format(host=host), headers=headers, content_type="text/html")
        if status == 429:
            return coingecko_error(429, 429, COINGECKO_RATE_LIMIT, retry_after)
        if status == 401:
            return coingecko_error(401, 10002, COINGECKO_KEY_INVALID, retry_after)
        return coingecko_error(status, status, text, retry_after)
    if provider == "coinmarketcap":
        code = {401: 1001, 429: 1008, 403: 1006}.get(status)
        return cmc_error(code, headers) if code else Answer(
            status, {"status": {"error_code": status, "error_message": message or text, "credit_count": 0}},
            headers=headers)
    if provider == "finnhub":
        body = {429: FINNHUB_RATE_LIMIT, 401: FINNHUB_KEY_INVALID}.get(status, message or text)
        return Answer(status, {"error": body}, headers=headers)
    return Answer(status, {"metadata": {"error": text}, "data": []}, headers=headers)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


# --- malformed bodies ---------------------------------------------------

_WRONG_SHAPE = {
    "simple_price": [{"id": "bitcoin", "price": "unknown"}],
    "global": {"data": ["unexpected"]},
    "ticker": {"code": 0, "msg": "unexpected object"},
    "exchange_info": {"symbols": {"BTCUSDT": "TRADING"}},
    "klines": {"candles": [[0, "1", "1", "1", "1"]]},
    "quote": [{"symbol": "SPY", "price": "unknown"}],
    "cmc_global": {"status": {"error_code": 0}, "data": [{"quote": "USD"}]},
    "fng": {"name": "Fear and Greed Index", "data": {"value": "50"}, "metadata": {"error": None}},
}
_NOT_JSON = (b"<html><head><title>502 Bad Gateway</title></head>"
             b"<body><center><h1>502 Bad Gateway</h1></center></body></html>")


def _one_zero(kind: str, payload: Any) -> Any:
    """``payload`` with the first coin's price zero and everything else as it was."""
    if kind == "simple_price":
        for entry in payload.values():
            if "usd" in entry:
                entry["usd"] = 0
                break
    elif kind == "ticker":
        items = payload if isinstance(payload, list) else [payload]
        if items:
            items[0]["lastPrice"] = "0.00000000"
    else:
        return _poison(kind, payload, "zero")
    return payload


def _poison(kind: str, payload: Any, mode: str) -> Any:
    """``payload`` with its key numbers replaced as ``mode`` says."""
    def bad(x: float) -> float:
        return {"nan": float("nan"), "negative": -abs(x) - 1.0, "zero": 0.0, "huge": 1e300}[mode]

    def bad_text(x: float) -> str:
        return {"nan": "NaN", "negative": f"{-abs(x) - 1.0:.8f}", "zero": "0.00000000",
                "huge": "1e+300"}[mode]

    if kind == "simple_price":
        for entry in payload.values():
            if "usd" in entry:
                entry["usd"] = bad(entry["usd"])
    elif kind == "global":
        table = payload["data"]["total_market_cap"]
        table["usd"] = bad(table["usd"])
    elif kind == "ticker":
        for item in payload if isinstance(payload, list) else [payload]:
            item["lastPrice"] = bad_text(float(item["lastPrice"]))
    elif kind == "exchange_info":
        payload["rateLimits"][0]["limit"] = bad(payload["rateLimits"][0]["limit"])
    elif kind == "cmc_global":
        usd = payload["data"]["quote"]["USD"]
        usd["total_market_cap"] = bad(usd["total_market_cap"])
    elif kind == "quote":
        payload["c"] = bad(payload["c"]) if payload.get("c") else payload.get("c")
    elif kind == "klines":
        row = payload[-1]
        row[4] = bad_text(float(row[4]))
    elif kind == "fng":
        entry = payload["data"][0]
        # 0 is a legal reading of the index ("Extreme Fear"), so zero stays legal here.
        entry["value"] = {"nan": "NaN", "negative": "-5", "zero": "0", "huge": "100000"}[mode]
    return payload


#: Errors some providers answer with HTTP 200 (CoinGecko's status object, Binance's code/msg).
_ERROR_200 = {
    "simple_price": {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit. "
                                "Please visit https://www.coingecko.com/en/api/pricing to subscribe to our "
                                "API plans for higher rate limits."}},
    "global": {"error": "coin not found"},
}


def malform(kind: str, payload: Any, mode: str) -> tuple[bytes, str]:
    """``(body, content_type)`` of a malformed answer for endpoint ``kind``."""
    if mode == "error_200":
        body = _ERROR_200.get(kind, {"code": -1000,
                                     "msg": "An unknown error occurred while processing the request."})
        return json.dumps(body).encode(), "application/json"
    if mode == "one_zero":
        return json.dumps(_one_zero(kind, payload)).encode(), "application/json"
    if mode == "not_json":
        return _NOT_JSON, "text/html"
    if mode == "truncated":
        body = json.dumps(payload).encode()
        return body[: max(1, len(body) // 2)], "application/json"
    if mode == "wrong_shape":
        return json.dumps(_WRONG_SHAPE[kind]).encode(), "application/json"
    # allow_nan: a NaN must reach the wire as the bare literal broken APIs send.
    return json.dumps(_poison(kind, payload, mode), allow_nan=True).encode(), "application/json"


def padded(payload: Any) -> tuple[bytes, bytes]:
    """``(head, tail)`` around where padding goes, keeping the payload valid JSON."""
    if isinstance(payload, list):
        payload = [*payload, {"symbol": "PADDING", "padding": PAD_MARKER}]
    else:
        payload = {**payload, "padding": PAD_MARKER}
    head, _, tail = json.dumps(payload).encode().partition(PAD_MARKER.encode())
    return head, tail
