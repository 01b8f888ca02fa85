"""CoinGecko: prices with 24 h change (``/simple/price``) and market totals (``/global``).

Documented shapes (https://docs.coingecko.com/reference/simple-price and
/reference/crypto-global)::

    GET /api/v3/simple/price?ids=bitcoin&vs_currencies=usd&include_24hr_change=true
    {"bitcoin": {"usd": 91234.5, "usd_24h_change": -1.2}}

    GET /api/v3/global
    {"data": {"total_market_cap": {"usd": ...}, "total_volume": {"usd": ...},
              "market_cap_percentage": {"btc": ...},
              "market_cap_change_percentage_24h_usd": ...}}
"""

from __future__ import annotations

from functools import partial
from typing import Any

from feed.providers.transport import Call
from feed.providers.validate import CAP_USD, CHANGE_PCT, PERCENT, PRICE_USD, Range, expect, number

__all__ = ["COINGECKO_IDS", "LIVE_URL", "NAME", "calls", "coin_id", "parse_global", "parse_prices"]

NAME = "coingecko"
LIVE_URL = "https://api.coingecko.com"

# CoinGecko names coins by id, not ticker. Tickers not listed here are tried
# as their lower-case form, which is right for many coins and harmless (an
# unknown id is simply absent from the answer) for the rest.
COINGECKO_IDS = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "SOL": "solana",
    "BNB": "binancecoin",
    "XRP": "ripple",
    "ADA": "cardano",
    "DOGE": "dogecoin",
    "TRX": "tron",
    "DOT": "polkadot",
    "LTC": "litecoin",
    "AVAX": "avalanche-2",
    "LINK": "chainlink",
}

# A whole-market 24 h move of several hundred % is not a market, it is a bug.
MARKET_CHANGE_PCT = Range(-100.0, 1000.0, what="a 24 h market-cap change in %")


def coin_id(symbol: str) -> str:
    return COINGECKO_IDS.get(symbol.upper(), symbol.lower())


def calls(base_url: str, symbols: tuple[str, ...]) -> list[Call]:
    """The two requests this provider makes per fetch."""
    ids = ",".join(dict.fromkeys(coin_id(s) for s in symbols))
    return [
        Call(NAME, "prices", f"{base_url}/api/v3/simple/price",
             {"ids": ids, "vs_currencies": "usd", "include_24hr_change": "true"},
             partial(parse_prices, symbols=symbols)),
        Call(NAME, "market", f"{base_url}/api/v3/global", {}, parse_global),
    ]


def parse_prices(payload: Any, symbols: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``{SYM: {"usd", "change_24h"}}`` for the symbols present in the answer."""
    expect(payload, dict, "simple/price")
    out: dict[str, dict[str, Any]] = {}
    for symbol in symbols:
        cid = coin_id(symbol)
        entry = payload.get(cid)
        if entry is None:
            continue  # CoinGecko leaves out ids it does not know
        expect(entry, dict, f"simple/price.{cid}")
        if "usd" not in entry:
            continue
        usd = number(entry["usd"], f"simple/price.{cid}.usd", PRICE_USD)
        change = entry.get("usd_24h_change")
        # CoinGecko sends null when it has no 24 h history for a coin.
        if change is not None:
            change = number(change, f"simple/price.{cid}.usd_24h_change", CHANGE_PCT)
        out[symbol] = {"usd": usd, "change_24h": change}
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
        "market_cap_change_24h": number(
            data.get("market_cap_change_percentage_24h_usd"),
            "global.data.market_cap_change_percentage_24h_usd", MARKET_CHANGE_PCT),
    }
