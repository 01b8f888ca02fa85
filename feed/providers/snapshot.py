"""Merging the newest good value of every section into the one normalised ``data`` dict.

Shape (clients and the dashboard depend on it; see docs/PROVIDERS.md)::

    {"simulated": false,
     "prices": {"BTC": {"usd": 91234.5, "change_24h": -1.2, "source": "binance",
                        "fetched_at": "2026-11-26T13:00:00.123Z"}},
     "market": {"total_market_cap_usd": ..., "total_volume_usd": ..., "btc_dominance": ...,
                "market_cap_change_24h": ..., "source": "coingecko", "fetched_at": "..."} | null,
     "sentiment": {"value": 54, "label": "Neutral", "source": "feargreed", "fetched_at": "..."} | null,
     "sources": {"binance": {"ok": false, "error": "restricted",
                             "detail": "the provider refuses this region (HTTP 451, code 0)",
                             "blocked_for_s": 3540.0, "failed": ["prices"],
                             "sections": {"prices": {"fetched_at": "...", "age_s": 65.0,
                                                     "stale": true}},
                             "unknown": []}, ...},
     "missing": ["prices.SOL", "sentiment"]}

A section is one provider endpoint's answer (``binance.prices``,
``coingecko.prices``, ``coingecko.market``, ``feargreed.sentiment``). Nothing
vanishes when a call fails: its last good value stays, with its own
``fetched_at``, flagged ``stale`` once it is older than its cadence allows,
and dropped (listed in ``missing``) only past its maximum age. Each price
comes from one provider: the first in :data:`PRICE_PREFERENCE` whose quote
is not stale, else the freshest quote any provider gave.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from feed.providers.transport import Call, CallFailed
from feed.times import iso_utc

__all__ = ["BASE_PARTS", "DESCRIPTIONS", "PARTS", "PRICE_PREFERENCE", "SIMULATED", "CallResult", "Freshness",
           "Kept", "ProviderStatus", "assemble", "describe", "has_data", "provider_of"]

# One price per symbol from one place: Binance's last trade is the fresher
# number, CoinGecko's aggregate fills in what Binance lacks.
PRICE_PREFERENCE = ("binance", "coingecko")
PARTS = ("prices", "market", "sentiment", "indicators", "indices")
#: The parts besides prices a snapshot always names (null when unknown).
BASE_PARTS = ("market", "sentiment")
#: What a simulated section's ``source`` starts with (``simulated:binance``):
#: a client that reads one price alone can still tell it is not real.
SIMULATED = "simulated:"


#: What clients are told of a failed call, per outcome: fixed words, never the
#: provider's own body (an HTML page, an echo of what we sent), which goes to
#: the log only (feed/providers/transport.py, trimmed and masked).
DESCRIPTIONS = {
    "http_error": "the provider answered with an error",
    "timeout": "the provider did not answer in time",
    "connection_error": "the provider could not be reached",
    "invalid": "the provider's answer was not valid data",
    "too_large": "the provider's answer was too large",
    "rate_limited": "the provider's rate limit was reached; waiting as it asks",
    "banned": "the provider banned this address for a while",
    "restricted": "the provider refuses this region",
    "forbidden": "the provider's firewall refused the call",
    "unauthorized": "the provider refused the API key",
    "quota": "this month's calls to the provider are used up",
    "skipped": "not called while the provider is blocked",
}


def describe(outcome: str, status: int | None = None, code: int | None = None) -> str:
    """The client-facing words for a failure: a fixed text, the HTTP status and the provider's code."""
    text = DESCRIPTIONS.get(outcome, "the call failed")
    if status is not None:
        text += f" (HTTP {status}" + (f", code {code}" if code is not None else "") + ")"
    return text


def provider_of(source: object) -> str | None:
    """The provider a section's ``source`` names, simulated or not."""
    if not isinstance(source, str):
        return None
    return source.removeprefix(SIMULATED)


@dataclass(frozen=True)
class CallResult:
    call: Call
    value: Any = None
    error: CallFailed | None = None


@dataclass(frozen=True)
class Kept:
    """A section's last good value and when its call began (unix seconds)."""

    value: Any
    fetched_at: float


@dataclass(frozen=True)
class Freshness:
    """How old a section may be: ``stale_after`` flags it, past ``max_age`` it is dropped."""

    stale_after: float
    max_age: float


@dataclass
class ProviderStatus:
    """How a provider is doing, for its entry under ``sources``."""

    ok: bool = True
    error: str | None = None  # the outcome of the last failure
    detail: str | None = None  # what clients are told (:func:`describe`), never the provider's body
    retry_after_s: float | None = None
    blocked_for_s: float | None = None
    failed: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()  # configured symbols this provider does not list


def assemble(symbols: Iterable[str], providers: Iterable[str], kept: Mapping[str, Kept],
             freshness: Mapping[str, Freshness], status: Mapping[str, ProviderStatus], now: float, *,
             simulated: bool = False, parts: Iterable[str] = BASE_PARTS) -> dict:
    """The snapshot ``data`` at ``now`` from every section's kept value.

    ``parts``: the sections besides prices this configuration supplies
    (``market``, ``sentiment``, ``indicators``, ``indices``), each ``null``
    and listed in ``missing`` when no good value is kept.
    ``simulated``: the upstream is the simulated exchange; the snapshot says
    ``"simulated": true`` and every section's source reads ``simulated:<provider>``.

    ``kept`` and ``freshness`` are keyed by endpoint (``provider.part``);
    a ``prices`` section's value is ``{SYM: {"usd", "change_24h"}}``.
    """
    symbols = tuple(symbols)
    sources: dict[str, dict[str, Any]] = {}
    live: dict[str, Kept] = {}  # sections young enough to use, by endpoint
    stale: dict[str, bool] = {}
    for provider in providers:
        st = status.get(provider, ProviderStatus())
        entry: dict[str, Any] = {"ok": st.ok, "sections": {}}
        for name, value in (("error", st.error), ("detail", st.detail), ("retry_after_s", st.retry_after_s),
                            ("blocked_for_s", st.blocked_for_s)):
            if value is not None:
                entry[name] = round(value, 3) if isinstance(value, float) else value
        if st.failed:
            entry["failed"] = list(st.failed)
        if st.unknown:
            entry["unknown"] = list(st.unknown)
        sources[provider] = entry
    for endpoint, section in kept.items():
        provider, _, part = endpoint.partition(".")
        if provider not in sources:
            continue
        fresh = freshness.get(endpoint)
        age = max(0.0, now - section.fetched_at)
        if fresh is not None and age > fresh.max_age:
            continue  # too old to show at all
        live[endpoint] = section
        stale[endpoint] = fresh is not None and age > fresh.stale_after
        sources[provider]["sections"][part] = {"fetched_at": iso_utc(section.fetched_at),
                                               "age_s": round(age, 1), "stale": stale[endpoint]}

    def stamped(endpoint: str, value: dict[str, Any]) -> dict[str, Any]:
        provider = endpoint.partition(".")[0]
        return {**value, "source": SIMULATED + provider if simulated else provider,
                "fetched_at": iso_utc(live[endpoint].fetched_at)}

    prices: dict[str, dict[str, Any]] = {}
    order = [p for p in PRICE_PREFERENCE if f"{p}.prices" in live]
    order += [e.partition(".")[0] for e in live if e.endswith(".prices") and e.partition(".")[0] not in order]
    for symbol in symbols:
        quotes = [(p, live[f"{p}.prices"]) for p in order if symbol in live[f"{p}.prices"].value]
        if not quotes:
            continue
        fresh = [(p, k) for p, k in quotes if not stale[f"{p}.prices"]]
        provider, _ = fresh[0] if fresh else max(quotes, key=lambda q: q[1].fetched_at)
        prices[symbol] = stamped(f"{provider}.prices", live[f"{provider}.prices"].value[symbol])
    out: dict[str, Any] = {"simulated": simulated, "prices": prices}
    parts = tuple(parts)
    for part in parts:
        candidates = sorted((e for e in live if e.endswith(f".{part}")),
                            key=lambda e: (stale[e], -live[e].fetched_at))
        out[part] = stamped(candidates[0], live[candidates[0]].value) if candidates else None
    missing: list[str] = []
    if not prices:
        missing.append("prices")
    else:
        missing += [f"prices.{s}" for s in symbols if s not in prices]
    missing += [part for part in parts if out[part] is None]
    out["sources"] = sources
    out["missing"] = missing
    return out


def has_data(data: dict) -> bool:
    """True if the snapshot carries anything a client could show."""
    return bool(data.get("prices") or data.get("market") or data.get("sentiment"))
