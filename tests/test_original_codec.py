"""The original service's protocol: every field its pages read, from our snapshot; their messages accepted.

Field names and types are the original's (docs/COMPATIBILITY.md lists each
with the file of the original that sent or read it).
"""

from __future__ import annotations

import json

import pytest

from feed.envelope import Envelope
from feed.original import market_object
from feed.ws.codecs.base import View
from feed.ws.codecs.choice import CODECS, choose, default_codec
from feed.ws.codecs.marketfeed import CODEC as MARKETFEED
from feed.ws.codecs.original import CODEC as ORIGINAL
from feed.ws.protocol import Command, CommandError
from tests.test_codecs import payload

T0 = 1795699800.0  # 2026-11-26T13:30:00Z
SEVEN = ("BTC", "ETH", "SOL", "XRP", "ADA", "LINK", "BNB")


def section(stale: bool = False) -> dict:
    return {"fetched_at": "2026-11-26T13:30:00.000Z", "age_s": 1.0, "stale": stale}


def snapshot(*, stale_market: bool = False, simulated: bool = False, **drop: bool) -> Envelope:
    src = "simulated:" if simulated else ""
    data = {
        "simulated": simulated,
        "prices": {s: {"usd": 100.0 + i, "change_24h": -1.5 + i, "source": src + "binance"}
                   for i, s in enumerate(SEVEN)},
        "market": {"total_market_cap_usd": 3.1e12, "total_volume_usd": 1.2e11, "btc_dominance": 56.1,
                   "eth_dominance": 11.8, "market_cap_change_24h": 0.8, "source": src + "coingecko"},
        "sentiment": {"value": 54, "label": "Neutral", "source": src + "feargreed"},
        "indicators": {"btc_rsi_14": 61.25, "source": src + "binance"},
        "indices": {"SPY": {"price": 601.5, "change": 2.5, "change_percent": 0.42},
                    "source": src + "finnhub"},
        "sources": {"binance": {"ok": True, "sections": {"prices": section()}},
                    "coingecko": {"ok": True, "sections": {"market": section(stale_market)}},
                    "feargreed": {"ok": True, "sections": {"sentiment": section()}}},
        "missing": [],
    }
    for part in drop:
        data[part] = None
    return Envelope(1795699841700, 42, "ws-a", T0, data, published_at=T0 + 0.25)


def test_every_field_the_pages_read_is_there_and_numeric() -> None:
    flat = market_object(snapshot())
    for coin in SEVEN:
        assert isinstance(flat[f"{coin.lower()}_price_usd"], float)
        assert isinstance(flat[f"{coin.lower()}_change_24h"], float)
    assert flat["btc_price_usd"] == 100.0 and flat["bnb_change_24h"] == 4.5
    assert flat["market_cap_usd"] == 3.1e12 and flat["volume_24h_usd"] == 1.2e11
    assert flat["market_cap_change_percentage_24h_usd"] == 0.8
    assert flat["btc_market_cap_percentage"] == 56.1 and flat["eth_market_cap_percentage"] == 11.8
    assert flat["fng_value"] == 54 and isinstance(flat["fng_value"], int)
    assert flat["btc_rsi_14"] == 61.25
    assert flat["us_stock_indices"] == {"SPY": {"symbol": "SPY", "name": "SPDR S&P 500 ETF", "price": 601.5,
                                                "change": 2.5, "change_percent": 0.42, "status": "success"}}
    assert flat["fetch_duration_ms"] == 250 and flat["partial_failure"] is False
    assert flat["last_updated"] == "2026-11-26T13:30:00.000Z"
    assert flat["timestamp"] == "2026-11-26T13:30:00.250Z"
    assert flat["stale_fields"] == [] and "simulated" not in flat


def test_a_failed_source_keeps_its_last_value_marked_stale_never_a_default() -> None:
    flat = market_object(snapshot(stale_market=True))
    assert flat["market_cap_usd"] == 3.1e12  # the last known value, not 0
    assert set(flat["stale_fields"]) == {"market_cap_usd", "volume_24h_usd",
                                         "market_cap_change_percentage_24h_usd",
                                         "btc_market_cap_percentage", "eth_market_cap_percentage"}
    # Gone past its maximum age: absent, never the original's 0 / 50 / 50.0.
    env = snapshot(sentiment=True, indicators=True, market=True)
    env.data["missing"] = ["market", "sentiment"]
    flat = market_object(env)
    assert "fng_value" not in flat and "btc_rsi_14" not in flat and "market_cap_usd" not in flat
    assert flat["partial_failure"] is True and flat["us_stock_indices"]


def test_dashboard_update_frame() -> None:
    frame = json.loads(payload(ORIGINAL.snapshot(snapshot(), View("w", "l", False))))
    assert list(frame) == ["type", "data", "timestamp", "source", "stale"]
    assert frame["type"] == "dashboard_update" and frame["source"] == "external_apis"
    assert frame["timestamp"] == "2026-11-26T13:30:00.250Z" and frame["stale"] is False
    assert frame["data"] == market_object(snapshot())
    # Simulated data says so, where the original said external_apis.
    sim = json.loads(payload(ORIGINAL.snapshot(snapshot(simulated=True), View("w", "l", False))))
    assert sim["source"] == "simulated" and sim["data"]["simulated"] is True
    # Turning stale: the data the client holds, again, marked stale.
    notice = json.loads(payload(ORIGINAL.stale_notice(snapshot(), "w", 16.0)))
    assert notice["type"] == "dashboard_update" and notice["stale"] is True
    # Replies carry no "data": the original's pages update on any message that has it.
    for reply in (ORIGINAL.pong(None, T0, "w"), ORIGINAL.no_snapshot(None),
                  ORIGINAL.error(CommandError("invalid_json", "x"))):
        assert "data" not in json.loads(payload(reply))


@pytest.mark.parametrize("codec", [ORIGINAL, MARKETFEED], ids=lambda c: c.name)
@pytest.mark.parametrize(("text", "command"), [
    ("ping", Command("ping")),
    (" PING\n", Command("ping")),
    ('{"type":"ping"}', Command("ping")),
    ('{"type":"request_market_data"}', Command("snapshot")),
    ('{"type":"request_dashboard_data","timestamp":1795699800000}', Command("snapshot")),
    ('{"op":"status","id":2}', Command("status", 2)),
])
def test_the_original_pages_messages_are_commands_in_both(codec, text: str, command: Command) -> None:
    assert codec.parse(text) == command


@pytest.mark.parametrize("text", ["pong", '{"type":"subscribe"}', "[]", '{"type": 5}',
                                  '{"type": ' + "[" * 4000])
def test_anything_else_is_still_refused_with_a_code(text: str) -> None:
    with pytest.raises(CommandError) as info:
        ORIGINAL.parse(text)
    assert "request_market_data" in info.value.message


def test_the_protocol_is_chosen_per_connection() -> None:
    assert default_codec(False) is MARKETFEED and default_codec(True) is ORIGINAL
    assert choose(None, MARKETFEED) is MARKETFEED and choose("original", MARKETFEED) is ORIGINAL
    assert choose("MarketFeed", ORIGINAL) is MARKETFEED
    with pytest.raises(ValueError, match="known: marketfeed, original"):
        choose("socketio", MARKETFEED)
    assert set(CODECS) == {"marketfeed", "original"}
