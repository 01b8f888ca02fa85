"""Merging the providers' answers into the one normalised ``data`` dict.

Shape (clients and the dashboard depend on it; see docs/PROVIDERS.md)::

    {"prices": {"BTC": {"usd": 91234.5, "change_24h": -1.2, "source": "binance"}},
     "market": {"total_market_cap_usd": ..., "total_volume_usd": ..., "btc_dominance": ...,
                "market_cap_change_24h": ..., "source": "coingecko"} | null,
     "sentiment": {"value": 54, "label": "Neutral", "source": "feargreed"} | null,
     "sources": {"coingecko": {"ok": true}, "binance": {"ok": false, "error": "timeout", ...}},
     "missing": ["prices.SOL", "sentiment"]}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from feed.providers.transport import Call, CallFailed

__all__ = ["PRICE_PREFERENCE", "CallResult", "assemble", "has_data"]

# One price per symbol from one place: Binance's last trade is the fresher
# number, CoinGecko's aggregate fills in what Binance lacks.
PRICE_PREFERENCE = ("binance", "coingecko")


@dataclass(frozen=True)
class CallResult:
    call: Call
    value: Any = None
    error: CallFailed | None = None


def assemble(symbols: Iterable[str], providers: Iterable[str], results: Iterable[CallResult]) -> dict:
    """The snapshot ``data`` for ``symbols`` from the calls' results."""
    symbols = tuple(symbols)
    sources: dict[str, dict[str, Any]] = {p: {"ok": True} for p in providers}
    prices_from: dict[str, dict[str, dict]] = {}
    market = sentiment = None
    for r in results:
        provider = r.call.provider
        if r.error is not None:
            _note_failure(sources.setdefault(provider, {"ok": True}), r.call, r.error)
            continue
        if r.call.part == "prices":
            prices_from[provider] = r.value
        elif r.call.part == "market":
            market = {**r.value, "source": provider}
        elif r.call.part == "sentiment":
            sentiment = {**r.value, "source": provider}
    order = [p for p in PRICE_PREFERENCE if p in prices_from]
    order += [p for p in prices_from if p not in order]
    prices: dict[str, dict[str, Any]] = {}
    for symbol in symbols:
        for provider in order:
            quote = prices_from[provider].get(symbol)
            if quote is not None:
                prices[symbol] = {**quote, "source": provider}
                break
    missing: list[str] = []
    if not prices:
        missing.append("prices")
    else:
        missing += [f"prices.{s}" for s in symbols if s not in prices]
    if market is None:
        missing.append("market")
    if sentiment is None:
        missing.append("sentiment")
    return {"prices": prices, "market": market, "sentiment": sentiment,
            "sources": sources, "missing": missing}


def has_data(data: dict) -> bool:
    """True if the snapshot carries anything a client could show."""
    return bool(data.get("prices") or data.get("market") or data.get("sentiment"))


def _note_failure(source: dict[str, Any], call: Call, error: CallFailed) -> None:
    # A skipped call is reported as what it is for the client: rate limited.
    reason = "rate_limited" if error.outcome == "skipped" else error.outcome
    if source.get("ok", True):
        source.update(ok=False, error=reason, detail=f"{call.part}: {error.detail}")
    else:
        source["detail"] += f"; {call.part}: {error.detail}"
    if error.retry_after is not None:
        source["retry_after_s"] = round(error.retry_after, 3)
    source.setdefault("failed", []).append(call.part)
