"""The market endpoints the simulated exchange serves, and their failure bodies.

Paths and parameters follow the public APIs under a per-provider prefix:
``/coingecko/api/v3/simple/price``, ``/coingecko/api/v3/global``,
``/binance/api/v3/ticker/24hr`` and ``/feargreed/fng/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from feed.simulator.market import Market

__all__ = ["PAD_MARKER", "Answer", "error_payload", "malform", "padded", "route"]

PAD_MARKER = "__SIM_PADDING__"
_BINANCE_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")


@dataclass
class Answer:
    status: int
    payload: Any
    kind: str | None = None  # which endpoint made it: simple_price | global | ticker | fng
    headers: dict[str, str] = field(default_factory=dict)


def route(market: Market, provider: str, path: str, query: dict[str, list[str]]) -> Answer:
    """The answer to ``GET /{provider}{path}?{query}``."""
    def arg(name: str, default: str | None = None) -> str | None:
        values = query.get(name)
        return values[-1] if values else default

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
    if provider == "feargreed" and path in ("/fng", "/fng/"):
        raw = arg("limit", "1") or "1"
        limit = int(raw) if raw.isdigit() else 1
        return Answer(200, market.fear_greed(min(30, limit or 30)), "fng")
    return Answer(404, error_payload(provider, 404, f"no such endpoint: {path}"))


def _binance_ticker(market: Market, symbols: str | None, symbol: str | None) -> Answer:
    if symbols is not None:
        try:
            names = json.loads(symbols)
        except ValueError:
            names = None
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) and _BINANCE_SYMBOL.fullmatch(n) for n in names)):
            return Answer(400, {"code": -1100, "msg": "Illegal characters found in parameter "
                                "'symbols'; legal range is '[\"BTCUSDT\",\"ETHUSDT\"]'."})
        return Answer(200, [market.binance_ticker(n) for n in dict.fromkeys(names)], "ticker")
    if symbol is not None:
        if not _BINANCE_SYMBOL.fullmatch(symbol):
            return Answer(400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbol'."})
        return Answer(200, market.binance_ticker(symbol), "ticker")
    # Without a symbol Binance answers for every pair it lists.
    return Answer(200, [market.binance_ticker(f"{s}USDT") for s in market.known_symbols()], "ticker")


def error_payload(provider: str, status: int, message: str) -> Any:
    """An error body in the provider's own style."""
    if provider == "binance":
        code = {429: -1003, 418: -1003, 404: -1121}.get(status, -1000)
        return {"code": code, "msg": message}
    if provider == "coingecko":
        return {"status": {"error_code": status, "error_message": message}}
    return {"metadata": {"error": message}, "data": []}


# --- malformed bodies ---------------------------------------------------

_WRONG_SHAPE = {
    "simple_price": [{"id": "bitcoin", "price": "unknown"}],
    "global": {"data": ["unexpected"]},
    "ticker": {"code": 0, "msg": "unexpected object"},
    "fng": {"name": "Fear and Greed Index", "data": {"value": "50"}, "metadata": {"error": None}},
}
_NOT_JSON = (b"<html><head><title>502 Bad Gateway</title></head>"
             b"<body><center><h1>502 Bad Gateway</h1></center></body></html>")


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
    elif kind == "fng":
        entry = payload["data"][0]
        # 0 is a legal reading of the index ("Extreme Fear"), so zero stays legal here.
        entry["value"] = {"nan": "NaN", "negative": "-5", "zero": "0", "huge": "100000"}[mode]
    return payload


def malform(kind: str, payload: Any, mode: str) -> tuple[bytes, str]:
    """``(body, content_type)`` of a malformed answer for endpoint ``kind``."""
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
