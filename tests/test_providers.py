"""Providers: parsing the documented response shapes, validation, merging, URLs,
and whole fetches over real HTTP from the simulated exchange."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from feed.config.settings import Settings
from feed.errors import ConfigError
from feed.providers.binance import parse_ticker
from feed.providers.coingecko import coin_id, parse_global, parse_prices
from feed.providers.feargreed import parse_fng
from feed.providers.fetcher import base_urls, build_fetcher
from feed.providers.snapshot import CallResult, assemble
from feed.providers.transport import USER_AGENT, Call, CallFailed, parse_retry_after
from feed.providers.validate import PRICE_USD, InvalidResponse, loads_strict, number
from feed.simulator.server import SimulatedExchange

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP")


def fixture(name: str) -> object:
    return loads_strict((FIXTURES / name).read_bytes())


# --- parsing the documented shapes --------------------------------------


def test_coingecko_simple_price_fixture() -> None:
    prices = parse_prices(fixture("coingecko_simple_price.json"), SYMBOLS)
    assert set(prices) == set(SYMBOLS)
    assert prices["BTC"] == {"usd": 91234.5, "change_24h": pytest.approx(-1.2043851)}
    assert prices["XRP"]["usd"] == 2.1874
    # CoinGecko sends null when it has no 24 h history; that is not an error.
    assert prices["BNB"] == {"usd": 612.08, "change_24h": None}


def test_coingecko_unknown_ids_are_absent_not_errors() -> None:
    prices = parse_prices(fixture("coingecko_simple_price.json"), ("BTC", "NOPE"))
    assert list(prices) == ["BTC"]
    assert coin_id("BNB") == "binancecoin" and coin_id("FOO") == "foo"


def test_coingecko_global_fixture() -> None:
    market = parse_global(fixture("coingecko_global.json"))
    assert market == {
        "total_market_cap_usd": 3095012345678.9,
        "total_volume_usd": 120143567891.2,
        "btc_dominance": 56.12,
        "market_cap_change_24h": 0.8123,
    }


def test_binance_ticker_list_fixture() -> None:
    prices = parse_ticker(fixture("binance_ticker_24hr.json"), SYMBOLS)
    # The fixture lists three of the five symbols; the others are just absent.
    assert set(prices) == {"BTC", "ETH", "SOL"}
    assert prices["BTC"] == {"usd": 91234.49, "change_24h": -1.204}
    assert prices["ETH"]["change_24h"] == 2.446


def test_binance_ticker_single_object_fixture() -> None:
    prices = parse_ticker(fixture("binance_ticker_24hr_single.json"), ("BNB",))
    assert prices == {"BNB": {"usd": 612.1, "change_24h": -0.665}}


def test_feargreed_fixture() -> None:
    assert parse_fng(fixture("feargreed_fng.json")) == {"value": 54, "label": "Neutral"}


# --- validation -----------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"<html>502 Bad Gateway</html>",
    b'{"bitcoin": {"usd": 1.0}',          # truncated
    b'{"bitcoin": {"usd": NaN}}',         # Python would accept this literal
    b'{"bitcoin": {"usd": Infinity}}',
    b'{"bitcoin": {"usd": -Infinity}}',
    b"\xff\xfe\xfa",
])
def test_loads_strict_rejects_non_json(body: bytes) -> None:
    with pytest.raises(InvalidResponse):
        loads_strict(body)


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-Infinity", "1_000", "", "12abc", " ", True, None,
                                   [], {}, float("nan"), float("inf"), 0, 0.0, -5, 1e300, 10**400])
def test_price_numbers_refused(value: object) -> None:
    with pytest.raises(InvalidResponse):
        number(value, "x", PRICE_USD, text=True)


def test_price_numbers_accepted() -> None:
    assert number("91234.50000000", "x", PRICE_USD, text=True) == 91234.5
    assert number("1.5e-3", "x", PRICE_USD, text=True) == 0.0015
    assert number(7, "x", PRICE_USD) == 7.0
    with pytest.raises(InvalidResponse):
        number("7", "x", PRICE_USD)  # strings only where the provider sends strings


BAD_PAYLOADS = [
    # (parser, payload): each must be refused as invalid
    ("coingecko_prices", [1, 2, 3]),
    ("coingecko_prices", {"bitcoin": 91000}),
    ("coingecko_prices", {"bitcoin": {"usd": -1.0}}),
    ("coingecko_prices", {"bitcoin": {"usd": 0}}),
    ("coingecko_prices", {"bitcoin": {"usd": "91000"}}),
    ("coingecko_prices", {"bitcoin": {"usd": 1e12}}),
    ("coingecko_prices", {"bitcoin": {"usd": 90000.0, "usd_24h_change": -250.0}}),
    ("coingecko_global", {"data": []}),
    ("coingecko_global", {"data": {"total_market_cap": {"usd": 0}}}),
    ("coingecko_global", {"nodata": {}}),
    ("binance", {"code": -1121, "msg": "Invalid symbol."}),
    ("binance", [{"symbol": "BTCUSDT", "lastPrice": "NaN", "priceChangePercent": "1.0"}]),
    ("binance", [{"symbol": "BTCUSDT", "lastPrice": "-3.0", "priceChangePercent": "1.0"}]),
    ("binance", [{"symbol": "BTCUSDT", "lastPrice": "1e+300", "priceChangePercent": "1.0"}]),
    ("binance", ["BTCUSDT"]),
    ("feargreed", {"data": {"value": "50"}}),
    ("feargreed", {"data": []}),
    ("feargreed", {"data": [{"value": "101", "value_classification": "Greed"}]}),
    ("feargreed", {"data": [{"value": "-5", "value_classification": "Fear"}]}),
    ("feargreed", {"data": [{"value": "NaN", "value_classification": "Fear"}]}),
    ("feargreed", {"data": [{"value": "50", "value_classification": ""}]}),
    ("feargreed", {"data": [{"value": "50", "value_classification": "Neutral"}],
                   "metadata": {"error": "limit must be a number"}}),
]
PARSERS = {
    "coingecko_prices": lambda p: parse_prices(p, ("BTC",)),
    "coingecko_global": parse_global,
    "binance": lambda p: parse_ticker(p, ("BTC",)),
    "feargreed": parse_fng,
}


@pytest.mark.parametrize(("parser", "payload"), BAD_PAYLOADS)
def test_bad_payloads_refused(parser: str, payload: object) -> None:
    with pytest.raises(InvalidResponse):
        PARSERS[parser](payload)


def test_retry_after_forms() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 120 ") == 120.0
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --- merging ----------------------------------------------------------------


def _ok(provider: str, part: str, value: object) -> CallResult:
    return CallResult(Call(provider, part, "http://x"), value=value)


def _err(provider: str, part: str, outcome: str, retry_after: float | None = None) -> CallResult:
    return CallResult(Call(provider, part, "http://x"),
                      error=CallFailed(outcome, "boom", retry_after=retry_after))


def test_binance_preferred_coingecko_fills_in_per_symbol() -> None:
    data = assemble(("BTC", "ETH", "DOGE"), ("coingecko", "binance", "feargreed"), [
        _ok("coingecko", "prices", {"BTC": {"usd": 1.0, "change_24h": 0.1},
                                    "ETH": {"usd": 2.0, "change_24h": 0.2}}),
        _ok("binance", "prices", {"BTC": {"usd": 1.5, "change_24h": 0.3}}),
        _ok("coingecko", "market", {"total_market_cap_usd": 3.0}),
        _ok("feargreed", "sentiment", {"value": 54, "label": "Neutral"}),
    ])
    assert data["prices"] == {"BTC": {"usd": 1.5, "change_24h": 0.3, "source": "binance"},
                              "ETH": {"usd": 2.0, "change_24h": 0.2, "source": "coingecko"}}
    assert data["missing"] == ["prices.DOGE"]
    assert data["market"]["source"] == "coingecko"
    assert data["sentiment"] == {"value": 54, "label": "Neutral", "source": "feargreed"}
    assert all(s == {"ok": True} for s in data["sources"].values())


def test_failures_reported_per_source() -> None:
    data = assemble(("BTC",), ("coingecko", "binance", "feargreed"), [
        _err("coingecko", "prices", "timeout"),
        _err("coingecko", "market", "invalid"),
        _err("binance", "prices", "skipped", retry_after=12.5),
        _err("feargreed", "sentiment", "http_error"),
    ])
    assert data["prices"] == {} and data["market"] is None and data["sentiment"] is None
    assert data["missing"] == ["prices", "market", "sentiment"]
    assert data["sources"]["coingecko"]["error"] == "timeout"
    assert data["sources"]["coingecko"]["failed"] == ["prices", "market"]
    # A call skipped while waiting out a Retry-After is reported as rate limited.
    assert data["sources"]["binance"] == {"ok": False, "error": "rate_limited", "detail": "prices: boom",
                                          "retry_after_s": 12.5, "failed": ["prices"]}
    assert data["sources"]["feargreed"]["ok"] is False


# --- base URLs ----------------------------------------------------------------


def test_sim_urls_use_provider_prefixes() -> None:
    urls = base_urls(Settings(sim_url="http://127.0.0.1:8090/"))
    assert urls == {"coingecko": "http://127.0.0.1:8090/coingecko",
                    "binance": "http://127.0.0.1:8090/binance",
                    "feargreed": "http://127.0.0.1:8090/feargreed"}


def test_override_wins_over_sim_and_live() -> None:
    s = Settings(sim_url="http://sim:1", binance_url="http://mirror.example/")
    assert base_urls(s)["binance"] == "http://mirror.example"
    live = base_urls(Settings(upstream="live", coingecko_url="http://cg.example"))
    assert live == {"coingecko": "http://cg.example", "binance": "https://api.binance.com",
                    "feargreed": "https://api.alternative.me"}


def test_sim_without_sim_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_fetcher(Settings(), "n1")
    assert info.value.setting == "SIM_URL"
    assert "SIM_URL" in str(info.value) and "python -m feed sim" in str(info.value)
    # Not needed when every configured provider has its own URL.
    only = Settings(providers=("feargreed",), feargreed_url="http://127.0.0.1:9")
    build_fetcher(only, "n1").close()


def test_settings_from_env_drive_the_fetcher() -> None:
    s = Settings.from_env({"PROVIDERS": "binance, feargreed", "SYMBOLS": "btc,eth",
                           "SIM_URL": "http://127.0.0.1:9"})
    fetcher = build_fetcher(s, "n1")
    try:
        assert [c.provider for c in fetcher.calls] == ["binance", "feargreed"]
        assert json.loads(fetcher.calls[0].params["symbols"]) == ["BTCUSDT", "ETHUSDT"]
    finally:
        fetcher.close()


# --- over real HTTP from the simulator ---------------------------------------


@pytest.fixture
def sim() -> SimulatedExchange:
    with SimulatedExchange(seed=7) as exchange:
        yield exchange


def test_full_snapshot_from_the_simulator(sim: SimulatedExchange) -> None:
    calls: list[tuple[str, str, float]] = []
    fetcher = build_fetcher(Settings(sim_url=sim.url), "node-a", on_call=lambda *c: calls.append(c))
    try:
        data = fetcher()
    finally:
        fetcher.close()
    assert set(data) == {"prices", "market", "sentiment", "sources", "missing"}
    assert list(data["prices"]) == list(SYMBOLS)
    for quote in data["prices"].values():
        assert quote["source"] == "binance" and quote["usd"] > 0
        assert isinstance(quote["change_24h"], float)
    assert data["market"]["source"] == "coingecko"
    assert 0 < data["market"]["btc_dominance"] < 100
    assert data["sentiment"]["source"] == "feargreed" and 0 <= data["sentiment"]["value"] <= 100
    assert data["sources"] == {p: {"ok": True} for p in ("coingecko", "binance", "feargreed")}
    assert data["missing"] == []
    json.dumps(data, allow_nan=False)  # what the envelope will do with it
    # One on_call per HTTP call: two CoinGecko endpoints, one each for the others.
    assert sorted((p, o) for p, o, _ in calls) == [
        ("binance", "ok"), ("coingecko", "ok"), ("coingecko", "ok"), ("feargreed", "ok")]
    assert all(seconds >= 0 for _, _, seconds in calls)
    stats = sim.stats()
    assert stats["by_node"] == {"node-a": 4}
    assert stats["user_agents"] == {USER_AGENT: 4}
    assert USER_AGENT.startswith("marketfeed/")


def test_connections_are_reused(sim: SimulatedExchange) -> None:
    fetcher = build_fetcher(Settings(sim_url=sim.url), "node-a")
    try:
        for _ in range(5):
            fetcher()
    finally:
        fetcher.close()
    stats = sim.stats()
    assert stats["total"] == 20
    # Four concurrent calls per fetch need at most four pooled connections.
    assert stats["connections"] <= 4


def test_configured_subset_only(sim: SimulatedExchange) -> None:
    s = Settings(sim_url=sim.url, providers=("binance",), symbols=("BTC", "FOO"))
    fetcher = build_fetcher(s, "node-a")
    try:
        data = fetcher()
    finally:
        fetcher.close()
    assert set(data["prices"]) == {"BTC", "FOO"}  # unknown symbols get a simulated price too
    assert data["market"] is None and data["sentiment"] is None
    assert data["missing"] == ["market", "sentiment"]
    assert set(sim.stats()["by_provider"]) == {"binance"}


def test_coingecko_alone_supplies_prices(sim: SimulatedExchange) -> None:
    s = Settings(sim_url=sim.url, providers=("coingecko",), symbols=("BTC", "ETH"))
    fetcher = build_fetcher(s, "node-a")
    try:
        data = fetcher()
    finally:
        fetcher.close()
    assert {q["source"] for q in data["prices"].values()} == {"coingecko"}
    assert data["missing"] == ["sentiment"]
