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
from feed.observer import Quiet
from feed.providers.binance import pair, parse_ticker
from feed.providers.coingecko import (
    COINGECKO_IDS,
    auth,
    ids_for,
    parse_global,
    parse_prices,
    rate_limit_reset,
)
from feed.providers.feargreed import parse_fng
from feed.providers.fetcher import base_urls, build_fetcher
from feed.providers.snapshot import Freshness, Kept, ProviderStatus, assemble
from feed.providers.transport import USER_AGENT, parse_retry_after
from feed.providers.validate import PRICE_USD, InvalidResponse, loads_strict, number
from feed.simulator.server import SimulatedExchange

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP")
IDS = {s: COINGECKO_IDS[s] for s in SYMBOLS}
PAIRS = {pair(s): s for s in SYMBOLS}


def every_call_due(**kw: object) -> Settings:
    """Settings under which every endpoint is due on every fetch (tests call in a loop)."""
    base = {"fetch_interval": 0.01, "coingecko_interval": 0.01, "coingecko_market_interval": 0.01,
            "feargreed_interval": 0.01}
    return Settings(**{**base, **kw})


def fixture(name: str) -> object:
    return loads_strict((FIXTURES / name).read_bytes())


# --- parsing the documented shapes --------------------------------------


def test_coingecko_simple_price_fixture() -> None:
    prices = parse_prices(fixture("coingecko_simple_price.json"), IDS)
    assert set(prices) == set(SYMBOLS)
    assert prices["BTC"] == {"usd": 91234.5, "change_24h": pytest.approx(-1.2043851)}
    assert prices["XRP"]["usd"] == 2.1874
    # CoinGecko sends null when it has no 24 h history; that is not an error.
    assert prices["BNB"] == {"usd": 612.08, "change_24h": None}


def test_coingecko_unknown_ids_are_absent_not_errors() -> None:
    prices = parse_prices(fixture("coingecko_simple_price.json"), {"BTC": "bitcoin", "NOPE": "nope"})
    assert list(prices) == ["BTC"]


def test_coingecko_ids_are_never_guessed() -> None:
    known, unknown = ids_for(("BTC", "SHIB", "FOO"))
    assert known == {"BTC": "bitcoin", "SHIB": "shiba-inu"} and unknown == ["FOO"]
    known, unknown = ids_for(("BTC", "FOO"), ("FOO=foo-token", "BTC=wrapped-bitcoin"))
    assert known == {"BTC": "wrapped-bitcoin", "FOO": "foo-token"} and unknown == []


def test_coingecko_key_picks_host_and_header() -> None:
    assert auth("demo", None) == ("https://api.coingecko.com", {})
    assert auth("demo", "CG-k") == ("https://api.coingecko.com", {"x-cg-demo-api-key": "CG-k"})
    assert auth("pro", "CG-k") == ("https://pro-api.coingecko.com", {"x-cg-pro-api-key": "CG-k"})


def test_coingecko_global_fixture() -> None:
    market = parse_global(fixture("coingecko_global.json"))
    assert market == {
        "total_market_cap_usd": 3095012345678.9,
        "total_volume_usd": 120143567891.2,
        "btc_dominance": 56.12,
        "eth_dominance": 11.77,
        "market_cap_change_24h": 0.8123,
    }


def test_binance_ticker_list_fixture() -> None:
    prices = parse_ticker(fixture("binance_ticker_24hr.json"), PAIRS)
    # The fixture lists three of the five symbols; the others are just absent.
    assert set(prices) == {"BTC", "ETH", "SOL"}
    assert prices["BTC"] == {"usd": 91234.49, "change_24h": -1.204}
    assert prices["ETH"]["change_24h"] == 2.446


def test_binance_ticker_single_object_fixture() -> None:
    prices = parse_ticker(fixture("binance_ticker_24hr_single.json"), {"BNBUSDT": "BNB"})
    assert prices == {"BNB": {"usd": 612.1, "change_24h": -0.665}}


def test_feargreed_fixture() -> None:
    fng = parse_fng(fixture("feargreed_fng.json"))
    assert fng["value"] == 54 and fng["label"] == "Neutral"
    assert fng["next_update_s"] == 36512  # the fixture's time_until_update, in seconds


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
    "coingecko_prices": lambda p: parse_prices(p, {"BTC": "bitcoin"}),
    "coingecko_global": parse_global,
    "binance": lambda p: parse_ticker(p, {"BTCUSDT": "BTC"}),
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


def test_coingecko_rate_limit_reset_forms() -> None:
    now = 1_753_455_210.0  # 2025-07-25 14:53:30 UTC
    assert rate_limit_reset({"x-ratelimit-reset": "2025-07-25 14:54:00 +0000"}, now) == 30.0
    assert rate_limit_reset({"x-ratelimit-reset": "2025-07-25 16:54:00 +0200"}, now) == 30.0
    # Our clock ahead of CoinGecko's: wait a second, not zero.
    assert rate_limit_reset({"x-ratelimit-reset": "2025-07-25 14:53:00 +0000"}, now) == 1.0
    for odd in ("", "soon", "1753455240", "2025-07-25T14:54:00Z", "2025-13-45 99:99:99 +0000",
                "2025-07-25 14:54:00 +0000; x"):
        assert rate_limit_reset({"x-ratelimit-reset": odd}, now) is None, odd
    assert rate_limit_reset({}, now) is None


# --- merging ----------------------------------------------------------------

NOW = 1_800_000_000.0
FRESH = {"binance.prices": Freshness(10, 1800), "coingecko.prices": Freshness(70, 1800),
         "coingecko.market": Freshness(70, 1800), "feargreed.sentiment": Freshness(3700, 7200)}
PROVIDERS3 = ("coingecko", "binance", "feargreed")


def test_binance_preferred_coingecko_fills_in_per_symbol() -> None:
    kept = {
        "coingecko.prices": Kept({"BTC": {"usd": 1.0, "change_24h": 0.1},
                                  "ETH": {"usd": 2.0, "change_24h": 0.2}}, NOW - 30),
        "binance.prices": Kept({"BTC": {"usd": 1.5, "change_24h": 0.3}}, NOW),
        "coingecko.market": Kept({"total_market_cap_usd": 3.0}, NOW - 30),
        "feargreed.sentiment": Kept({"value": 54, "label": "Neutral"}, NOW - 600),
    }
    data = assemble(("BTC", "ETH", "DOGE"), PROVIDERS3, kept, FRESH, {}, NOW)
    assert data["prices"]["BTC"]["source"] == "binance" and data["prices"]["BTC"]["usd"] == 1.5
    assert data["prices"]["ETH"] == {"usd": 2.0, "change_24h": 0.2, "source": "coingecko",
                                     "fetched_at": "2027-01-15T07:59:30.000Z"}
    assert data["missing"] == ["prices.DOGE"]
    assert data["market"]["source"] == "coingecko"
    assert data["sentiment"]["value"] == 54 and data["sentiment"]["source"] == "feargreed"
    assert data["sources"]["coingecko"]["sections"]["prices"] == {
        "fetched_at": "2027-01-15T07:59:30.000Z", "age_s": 30.0, "stale": False}
    assert all(s["ok"] for s in data["sources"].values())


def test_a_stale_binance_price_gives_way_to_a_fresh_coingecko_one() -> None:
    kept = {"binance.prices": Kept({"BTC": {"usd": 1.5, "change_24h": 0.3}}, NOW - 60),
            "coingecko.prices": Kept({"BTC": {"usd": 1.4, "change_24h": 0.2}}, NOW - 20)}
    data = assemble(("BTC",), PROVIDERS3, kept, FRESH, {}, NOW)
    assert data["prices"]["BTC"]["source"] == "coingecko"
    assert data["sources"]["binance"]["sections"]["prices"]["stale"] is True
    # When both are stale, the fresher one.
    kept["coingecko.prices"] = Kept({"BTC": {"usd": 1.4, "change_24h": 0.2}}, NOW - 100)
    assert assemble(("BTC",), PROVIDERS3, kept, FRESH, {}, NOW)["prices"]["BTC"]["source"] == "binance"


def test_nothing_vanishes_until_its_maximum_age() -> None:
    kept = {"coingecko.market": Kept({"total_market_cap_usd": 3.0}, NOW - 1000)}
    status = {"coingecko": ProviderStatus(ok=False, error="rate_limited", detail="HTTP 429 429: slow down",
                                          blocked_for_s=42.0, failed=("market",))}
    data = assemble(("BTC",), PROVIDERS3, kept, FRESH, status, NOW)
    assert data["market"]["total_market_cap_usd"] == 3.0
    src = data["sources"]["coingecko"]
    assert src["ok"] is False and src["error"] == "rate_limited" and src["blocked_for_s"] == 42.0
    assert src["detail"] == "HTTP 429 429: slow down" and src["failed"] == ["market"]
    assert src["sections"]["market"]["stale"] is True and src["sections"]["market"]["age_s"] == 1000.0
    kept["coingecko.market"] = Kept({"total_market_cap_usd": 3.0}, NOW - 1801)
    data = assemble(("BTC",), PROVIDERS3, kept, FRESH, status, NOW)
    assert data["market"] is None and "market" in data["missing"]
    assert "market" not in data["sources"]["coingecko"]["sections"]


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
    # Binance's host for public market data, not api.binance.com.
    assert live == {"coingecko": "http://cg.example", "binance": "https://data-api.binance.vision",
                    "feargreed": "https://api.alternative.me"}
    pro = base_urls(Settings(upstream="live", coingecko_api_key="CG-pro-key", coingecko_api_plan="pro"))
    assert pro["coingecko"] == "https://pro-api.coingecko.com"
    assert base_urls(Settings(sim_url="http://sim:1", coingecko_api_key="CG-k", coingecko_api_plan="pro"))[
        "coingecko"] == "http://sim:1/coingecko-pro"


def test_sim_without_sim_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_fetcher(Settings(), "n1")
    assert info.value.setting == "SIM_URL"
    assert "SIM_URL" in str(info.value) and "python -m feed sim" in str(info.value)
    # Not needed when every configured provider has its own URL.
    only = Settings(providers=("feargreed",), feargreed_url="http://127.0.0.1:9")
    build_fetcher(only, "n1").close()


# --- over real HTTP from the simulator ---------------------------------------


class Calls(Quiet):
    """Records every upstream call, as the app's metrics see them."""

    def __init__(self, calls: list[tuple[str, str, float]]) -> None:
        self.calls = calls

    def upstream_call(self, provider: str, outcome: str, seconds: float) -> None:
        self.calls.append((provider, outcome, seconds))


@pytest.fixture
def sim() -> SimulatedExchange:
    with SimulatedExchange(seed=7) as exchange:
        yield exchange


def test_full_snapshot_from_the_simulator(sim: SimulatedExchange) -> None:
    calls: list[tuple[str, str, float]] = []
    fetcher = build_fetcher(Settings(sim_url=sim.url), "node-a", observer=Calls(calls))
    try:
        data = fetcher()
    finally:
        fetcher.close()
    assert set(data) == {"simulated", "prices", "market", "sentiment", "indicators", "sources", "missing"}
    # The simulator's data says so, in the snapshot and in every section's source.
    assert data["simulated"] is True
    # The default symbols: the original service's seven coins, each priced.
    assert list(data["prices"]) == ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "LINK"]
    for quote in data["prices"].values():
        assert quote["source"] == "simulated:binance" and quote["usd"] > 0
        assert quote["fetched_at"].endswith("Z")
        assert isinstance(quote["change_24h"], float)
    assert data["market"]["source"] == "simulated:coingecko"
    assert 0 < data["market"]["btc_dominance"] < 100
    assert data["sentiment"]["source"] == "simulated:feargreed" and 0 <= data["sentiment"]["value"] <= 100
    assert "next_update_s" not in data["sentiment"]
    # BTC's daily RSI(14), from Binance's daily candles.
    assert data["indicators"]["source"] == "simulated:binance" and 0 < data["indicators"]["btc_rsi_14"] < 100
    assert {p: s["ok"] for p, s in data["sources"].items()} == {p: True for p in PROVIDERS3}
    assert set(data["sources"]["coingecko"]["sections"]) == {"prices", "market"}
    assert data["missing"] == []
    json.dumps(data, allow_nan=False)  # what the envelope will do with it
    # One on_call per HTTP call: the symbol lookup, the ticker and the daily candles, two CoinGecko
    # endpoints, one for Fear & Greed.
    assert sorted((p, o) for p, o, _ in calls) == [
        ("binance", "ok"), ("binance", "ok"), ("binance", "ok"), ("coingecko", "ok"), ("coingecko", "ok"),
        ("feargreed", "ok")]
    assert all(seconds >= 0 for _, _, seconds in calls)
    stats = sim.stats()
    assert stats["by_node"] == {"node-a": 6}
    assert stats["by_path"]["/binance/api/v3/exchangeInfo"] == 1
    assert stats["by_path"]["/binance/api/v3/klines"] == 1
    assert stats["user_agents"] == {USER_AGENT: 6}
    assert USER_AGENT.startswith("marketfeed/")


def test_each_endpoint_keeps_its_own_cadence(sim: SimulatedExchange) -> None:
    s = Settings(sim_url=sim.url, fetch_interval=0.2, coingecko_interval=0.6, coingecko_market_interval=0.6,
                 feargreed_interval=3600)
    fetcher = build_fetcher(s, "node-a")
    try:
        for _ in range(7):
            data = fetcher()
            time.sleep(0.2)
    finally:
        fetcher.close()
    paths = sim.stats()["by_path"]
    assert paths["/binance/api/v3/ticker/24hr"] == 7  # every fetch
    assert 2 <= paths["/coingecko/api/v3/simple/price"] <= 3  # every 0.6 s
    assert paths["/feargreed/fng/"] == 1  # once an hour at most
    assert paths["/binance/api/v3/exchangeInfo"] == 1  # symbols looked up once
    # What was not due this time is kept, with its own age.
    assert data["sentiment"] is not None
    assert data["sources"]["feargreed"]["sections"]["sentiment"]["age_s"] > 1


def test_connections_are_reused(sim: SimulatedExchange) -> None:
    fetcher = build_fetcher(every_call_due(sim_url=sim.url), "node-a")
    try:
        for _ in range(5):
            fetcher()
            time.sleep(0.02)
    finally:
        fetcher.close()
    stats = sim.stats()
    assert stats["total"] == 22  # the lookup and BTC's daily candles (hourly), then four calls per fetch
    # The first fetch makes five calls at once (the candles too), the others four: at most
    # five pooled connections, where a client without reuse would open one per call (22).
    assert stats["connections"] <= 5


def test_configured_subset_only(sim: SimulatedExchange) -> None:
    s = Settings(sim_url=sim.url, providers=("binance",), symbols=("BTC", "FOO"))
    fetcher = build_fetcher(s, "node-a")
    try:
        data = fetcher()
    finally:
        fetcher.close()
    # FOO is not listed: no invented price, no failed batch, named as unknown.
    assert set(data["prices"]) == {"BTC"}
    assert data["sources"]["binance"]["unknown"] == ["FOO"]
    assert data["market"] is None and data["sentiment"] is None
    assert data["missing"] == ["prices.FOO", "market", "sentiment"]
    assert set(sim.stats()["by_provider"]) == {"binance"}


def test_many_unknown_symbols_are_looked_up_a_few_a_tick_then_never_again(sim: SimulatedExchange) -> None:
    # One unknown symbol fails Binance's whole batch lookup; the rest are asked
    # one by one (weight 20 each), a few a tick, and the answer is kept.
    unknown = tuple(f"C{i:02}" for i in range(20))
    s = Settings(sim_url=sim.url, providers=("binance",), symbols=("BTC", "ETH", *unknown),
                 fetch_interval=0.01, binance_interval=0.01)
    fetcher = build_fetcher(s, "node-a")
    lookups = []
    try:
        for _ in range(6):
            before = sim.stats()["by_path"].get("/binance/api/v3/exchangeInfo", 0)
            data = fetcher()
            lookups.append(sim.stats()["by_path"].get("/binance/api/v3/exchangeInfo", 0) - before)
            time.sleep(0.02)
    finally:
        fetcher.close()
    # 1 batch + 8 singles, then 8, then the last 6; then none.
    assert lookups == [9, 8, 6, 0, 0, 0]
    assert set(data["prices"]) == {"BTC", "ETH"}
    assert data["sources"]["binance"]["unknown"] == list(unknown)
    assert sim.stats()["by_path"]["/binance/api/v3/ticker/24hr"] == 6  # priced from the first tick on


def test_coingecko_alone_supplies_prices(sim: SimulatedExchange) -> None:
    s = Settings(sim_url=sim.url, providers=("coingecko",), symbols=("BTC", "ETH"))
    fetcher = build_fetcher(s, "node-a")
    try:
        data = fetcher()
    finally:
        fetcher.close()
    assert {q["source"] for q in data["prices"].values()} == {"simulated:coingecko"}
    assert data["missing"] == ["sentiment"]


def test_a_monthly_quota_stretches_the_cadence_then_stops_the_calls(sim: SimulatedExchange) -> None:
    s = Settings(sim_url=sim.url, providers=("coingecko",), symbols=("BTC",), fetch_interval=0.01,
                 coingecko_interval=0.01, coingecko_market_interval=0.01, coingecko_monthly_calls=6)
    fetcher = build_fetcher(s, "node-a")
    try:
        fetcher()
        # 2 of 6 calls used: the 2 pairs left are spread over the rest of the month.
        from feed.providers.adapters import month_end as _month_end

        now = time.time()
        expected = max(0.01, (_month_end(now) - now) / 2)
        assert fetcher._interval("coingecko.prices", now) == pytest.approx(expected, rel=0.01)
        fetcher.budget.set_next_due("coingecko.prices", 0)  # as if the stretched cadence had passed
        fetcher.budget.set_next_due("coingecko.market", 0)
        fetcher()
        fetcher.budget.set_next_due("coingecko.prices", 0)
        fetcher.budget.set_next_due("coingecko.market", 0)
        fetcher()
        assert fetcher.budget.calls("coingecko")["month"] == 6
        data = fetcher()
        # The month's calls are used: blocked until the month ends, the kept prices stay.
        assert sim.stats()["by_provider"]["coingecko"] == 6
        assert data["sources"]["coingecko"]["error"] == "quota"
        assert fetcher.blocked_for("coingecko") > 0 and data["prices"]["BTC"]["usd"] > 0
    finally:
        fetcher.close()


@pytest.mark.parametrize("name", ["coingecko", "binance", "feargreed", "finnhub", "coinmarketcap"])
def test_error_bodies_nested_past_the_parser_s_limit_are_text_not_a_crash(name: str) -> None:
    import importlib

    module = importlib.import_module(f"feed.providers.{name}")
    code, text = module.explain(400, b"[" * 5000, "application/json")
    assert code is None and text.startswith("[")
