"""The original service's market object: flat, snake_case, derived from one of our snapshots.

The original (a Rust service) sent this object as ``data`` in its
``dashboard_update`` frames, kept it in Redis under ``latest_market_data``
and appended it to ``market_data_stream``; its pages and its main web
service read these fields by name. docs/COMPATIBILITY.md lists each.

Every value comes from the snapshot: a section that failed keeps its last
good value (the snapshot keeps it, flagged stale, until its maximum age), its
fields are named in ``stale_fields``, and a field nothing ever supplied is
left out. Never a made-up default: the original sent 0.0 prices, an index of
50 and an RSI of 50.0 when a source failed, which a page shows as real.

Standard library only: the wire codec (feed/ws/codecs/original.py) and the
fenced write (feed/election/fence.py) both use it.
"""

from __future__ import annotations

from typing import Any

from feed.envelope import Envelope
from feed.times import iso_utc

__all__ = ["COINS", "INDICES", "market_object"]

#: The original's coins, in its order; each gives ``<coin>_price_usd`` and ``<coin>_change_24h``.
COINS = ("BTC", "ETH", "SOL", "XRP", "ADA", "LINK", "BNB")
#: The US index ETFs it showed, and their names as it sent them.
INDICES = {"DIA": "SPDR Dow Jones Industrial Average ETF", "SPY": "SPDR S&P 500 ETF",
           "QQQM": "Invesco NASDAQ 100 ETF"}

# (flat field, section, field in our section)
_MARKET = (
    ("market_cap_usd", "market", "total_market_cap_usd"),
    ("volume_24h_usd", "market", "total_volume_usd"),
    ("market_cap_change_percentage_24h_usd", "market", "market_cap_change_24h"),
    ("btc_market_cap_percentage", "market", "btc_dominance"),
    ("eth_market_cap_percentage", "market", "eth_dominance"),
    ("btc_rsi_14", "indicators", "btc_rsi_14"),
)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _stale_parts(data: dict[str, Any]) -> set[tuple[str, str]]:
    """``(provider, part)`` of every section the snapshot flags stale."""
    out: set[tuple[str, str]] = set()
    sources = data.get("sources")
    for provider, src in (sources.items() if isinstance(sources, dict) else ()):
        sections = src.get("sections") if isinstance(src, dict) else None
        for part, sec in (sections.items() if isinstance(sections, dict) else ()):
            if isinstance(sec, dict) and sec.get("stale") is True:
                out.add((provider, part))
    return out


def _is_stale(section: dict[str, Any], part: str, stale: set[tuple[str, str]]) -> bool:
    source = section.get("source")
    provider = source.removeprefix("simulated:") if isinstance(source, str) else ""
    return (provider, part) in stale


def market_object(env: Envelope) -> dict[str, Any]:
    """The original's flat ``data`` object for ``env``; see the module docstring."""
    data = env.data if isinstance(env.data, dict) else {}
    stale = _stale_parts(data)
    out: dict[str, Any] = {}
    stale_fields: list[str] = []
    prices = data.get("prices") if isinstance(data.get("prices"), dict) else {}
    # The original's seven first, in its order; any other configured coin after.
    for symbol in [*(s for s in COINS if s in prices), *(s for s in prices if s not in COINS)]:
        quote = prices[symbol]
        if not isinstance(quote, dict) or _number(quote.get("usd")) is None:
            continue
        coin = symbol.lower()
        out[f"{coin}_price_usd"] = _number(quote["usd"])
        change = _number(quote.get("change_24h"))
        if change is not None:
            out[f"{coin}_change_24h"] = change
        if _is_stale(quote, "prices", stale):
            stale_fields += [f"{coin}_price_usd", f"{coin}_change_24h"]
    for flat, part, name in _MARKET:
        section = data.get(part)
        value = _number(section.get(name)) if isinstance(section, dict) else None
        if value is not None:
            out[flat] = value
            if _is_stale(section, part, stale):
                stale_fields.append(flat)
    sentiment = data.get("sentiment")
    fng = _number(sentiment.get("value")) if isinstance(sentiment, dict) else None
    if fng is not None:
        out["fng_value"] = int(fng)
        if _is_stale(sentiment, "sentiment", stale):
            stale_fields.append("fng_value")
    out["us_stock_indices"] = _indices(data.get("indices"))
    published = env.published_at if env.published_at is not None else env.fetched_at
    out["fetch_duration_ms"] = max(0, round((published - env.fetched_at) * 1000))
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    out["partial_failure"] = bool(data.get("missing")) or any(
        isinstance(s, dict) and s.get("ok") is False for s in sources.values())
    out["last_updated"] = iso_utc(env.fetched_at)
    out["timestamp"] = iso_utc(published)
    # Beyond the original's fields, for clients that can use them.
    out["stale_fields"] = stale_fields
    if data.get("simulated") is True:
        out["simulated"] = True
    return out


def _indices(section: object) -> dict[str, Any]:
    """``us_stock_indices`` as the original sent it: per symbol, or ``{}`` when there is none."""
    if not isinstance(section, dict):
        return {}
    out: dict[str, Any] = {}
    for symbol, quote in section.items():
        if not isinstance(quote, dict) or _number(quote.get("price")) is None:
            continue
        out[symbol] = {"symbol": symbol, "name": INDICES.get(symbol, symbol),
                       "price": _number(quote["price"]), "change": _number(quote.get("change")),
                       "change_percent": _number(quote.get("change_percent")), "status": "success"}
    return out
