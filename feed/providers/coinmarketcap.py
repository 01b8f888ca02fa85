"""CoinMarketCap: global market totals, the fallback the original used when CoinGecko's failed (with a key).

Documented shapes (https://coinmarketcap.com/api/documentation/v1/#operation/getV1GlobalmetricsQuotesLatest)::

    GET /v1/global-metrics/quotes/latest        header X-CMC_PRO_API_KEY: <key>
    {"status": {"error_code": 0, "error_message": null, "credit_count": 1, ...},
     "data": {"btc_dominance": 56.1, "eth_dominance": 11.8,
              "quote": {"USD": {"total_market_cap": 3.1e12, "total_volume_24h": 1.2e11,
                                "total_market_cap_yesterday_percentage_change": 0.8, ...}}, ...}}

What CoinMarketCap does that the service must live with: the Basic (free)
plan has 10,000 credits a month and 30 requests a minute, one credit per
call here; errors carry ``status.error_code``: 401 with 1001 (an invalid
key) or 1002 (none), 429 with 1008 (the minute's limit), 1009 (the day's)
or 1010 (the month's), 403 with 1005-1007 (the plan does not cover it).
The key goes in the header, never in the URL. It is called only while
CoinGecko's market totals fail (feed/providers/adapters.py), every 5
minutes at most: a whole month of CoinGecko failures stays within Basic.
"""

from __future__ import annotations

from typing import Any

from feed.providers.transport import Call
from feed.providers.validate import CAP_USD, MARKET_CHANGE_PCT, PERCENT, code_of, error_json, expect, number

__all__ = ["LIVE_URL", "NAME", "auth", "explain", "global_call", "parse_global"]

NAME = "coinmarketcap"
LIVE_URL = "https://pro-api.coinmarketcap.com"
KEY_HEADER = "X-CMC_PRO_API_KEY"


def auth(key: str | None) -> dict[str, str]:
    return {KEY_HEADER: key} if key else {}


def explain(status: int, body: bytes, content_type: str) -> tuple[int | None, str]:
    """CoinMarketCap's ``{"status": {"error_code", "error_message"}}`` answer."""
    obj, text = error_json(body)
    if text is not None:
        return None, text
    status_obj = obj.get("status") if isinstance(obj, dict) else None
    if isinstance(status_obj, dict):
        return code_of(status_obj.get("error_code")), str(status_obj.get("error_message") or "")[:240]
    return None, ""


def global_call(base_url: str, headers: dict[str, str]) -> Call:
    return Call(NAME, "market", f"{base_url}/v1/global-metrics/quotes/latest", {}, parse_global, explain,
                headers)


def parse_global(payload: Any) -> dict[str, Any]:
    """The market totals in the snapshot's ``market`` shape (without ``source``)."""
    data = expect(expect(payload, dict, "global-metrics").get("data"), dict, "global-metrics.data")
    usd = expect(expect(data.get("quote"), dict, "data.quote").get("USD"), dict, "data.quote.USD")
    return {
        "total_market_cap_usd": number(usd.get("total_market_cap"), "quote.USD.total_market_cap", CAP_USD),
        "total_volume_usd": number(usd.get("total_volume_24h"), "quote.USD.total_volume_24h", CAP_USD),
        "btc_dominance": number(data.get("btc_dominance"), "data.btc_dominance", PERCENT),
        "eth_dominance": number(data.get("eth_dominance"), "data.eth_dominance", PERCENT),
        "market_cap_change_24h": number(usd.get("total_market_cap_yesterday_percentage_change"),
                                        "quote.USD.total_market_cap_yesterday_percentage_change",
                                        MARKET_CHANGE_PCT),
    }
