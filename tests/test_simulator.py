"""The simulated exchange: shapes, limits, error bodies, counting, the control API and the CLI,
over real HTTP."""

from __future__ import annotations

import http.client
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from feed.simulator import cli
from feed.simulator.faults import FaultError
from feed.simulator.limits import MAX_BAN_S, Gate, LimitError, Limits
from feed.simulator.market import COINS, Market, UnknownSymbol
from feed.simulator.server import SimulatedExchange
from tests.conftest import ROOT, python_env

TIMEOUT = 5
# The start of a UTC minute (2027-01-15 08:00:00): fixed windows begin here.
T0 = 1_800_000_000.0
# What Binance must trade, at least (MATIC: listed since the POL migration, not traded).
BINANCE_BASES = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "TRX", "DOT", "LTC", "AVAX", "LINK",
                 "SHIB", "UNI", "ATOM", "XLM")
PRICE = "/coingecko/api/v3/simple/price"
PRO_PRICE = "/coingecko-pro/api/v3/simple/price"
TICKER = "/binance/api/v3/ticker/24hr"
INFO = "/binance/api/v3/exchangeInfo"
WEIGHT = "X-MBX-USED-WEIGHT-1M"


class Clock:
    """A test's own time (Unix seconds): windows, bans and caches pass at once."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def sim() -> Iterator[SimulatedExchange]:
    with SimulatedExchange(seed=11) as exchange:
        yield exchange


@pytest.fixture
def clock() -> Clock:
    return Clock()


def get(sim: SimulatedExchange, path: str, node: str | None = None, headers: dict[str, str] | None = None,
        **params: str) -> requests.Response:
    sent = {"X-Marketfeed-Node": node} if node else {}
    sent.update(headers or {})
    return requests.get(sim.url + path, params=params, headers=sent, timeout=TIMEOUT)


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status_code, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def get_from(ip: str, sim: SimulatedExchange, path: str, **params: str) -> Reply:
    """A GET from another loopback address: another client IP to the simulator."""
    conn = http.client.HTTPConnection(sim.host, sim.port, timeout=TIMEOUT, source_address=(ip, 0))
    try:
        conn.request("GET", path + ("?" + urlencode(params) if params else ""))
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def btc(sim: SimulatedExchange, path: str = PRICE, **kw: Any) -> float:
    r = get(sim, path, ids="bitcoin", vs_currencies="usd", **kw)
    assert r.status_code == 200, r.text
    return r.json()["bitcoin"]["usd"]


# --- shapes ---------------------------------------------------------------


def test_coingecko_shapes(sim: SimulatedExchange) -> None:
    r = get(sim, "/coingecko/api/v3/simple/price", ids="bitcoin,ethereum,solana,binancecoin,ripple",
            vs_currencies="usd", include_24hr_change="true")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"bitcoin", "ethereum", "solana", "binancecoin", "ripple"}
    assert set(body["bitcoin"]) == {"usd", "usd_24h_change"}
    assert isinstance(body["bitcoin"]["usd"], float) and body["bitcoin"]["usd"] > 10_000
    assert isinstance(body["ripple"]["usd_24h_change"], float)
    without_change = get(sim, "/coingecko/api/v3/simple/price", ids="bitcoin", vs_currencies="usd").json()
    assert set(without_change["bitcoin"]) == {"usd"}
    g = get(sim, "/coingecko/api/v3/global").json()
    assert {"total_market_cap", "total_volume", "market_cap_percentage",
            "market_cap_change_percentage_24h_usd", "active_cryptocurrencies"} <= set(g["data"])
    assert g["data"]["total_market_cap"]["usd"] > 1e12
    assert 0 < g["data"]["market_cap_percentage"]["btc"] < 100
    missing = get(sim, "/coingecko/api/v3/simple/price", ids="bitcoin")
    assert missing.status_code == 400


def test_binance_shapes(sim: SimulatedExchange) -> None:
    r = get(sim, "/binance/api/v3/ticker/24hr", symbols='["BTCUSDT","ETHUSDT"]')
    items = r.json()
    assert [i["symbol"] for i in items] == ["BTCUSDT", "ETHUSDT"]
    for field in ("lastPrice", "priceChangePercent", "quoteVolume", "openPrice", "volume"):
        assert isinstance(items[0][field], str)
    assert isinstance(items[0]["openTime"], int) and isinstance(items[0]["count"], int)
    assert float(items[0]["lastPrice"]) > 10_000 and float(items[1]["lastPrice"]) > 100
    single = get(sim, "/binance/api/v3/ticker/24hr", symbol="BNBUSDT").json()
    assert isinstance(single, dict) and single["symbol"] == "BNBUSDT"
    bad = get(sim, "/binance/api/v3/ticker/24hr", symbols="BTCUSDT")
    assert bad.status_code == 400 and bad.json()["code"] == -1100


def test_feargreed_shape(sim: SimulatedExchange) -> None:
    body = get(sim, "/feargreed/fng/", limit="1").json()
    assert body["name"] == "Fear and Greed Index" and body["metadata"] == {"error": None}
    entry = body["data"][0]
    assert set(entry) == {"value", "value_classification", "timestamp", "time_until_update"}
    assert entry["value"].isdigit() and 0 <= int(entry["value"]) <= 100
    assert entry["value_classification"] in ("Extreme Fear", "Fear", "Neutral", "Greed", "Extreme Greed")
    assert 0 < int(entry["time_until_update"]) <= 86_400
    assert len(get(sim, "/feargreed/fng/", limit="3").json()["data"]) == 3


def test_unknown_symbols_are_not_priced(sim: SimulatedExchange) -> None:
    invalid = {"code": -1121, "msg": "Invalid symbol."}
    for params in ({"symbol": "FOOUSDT"}, {"symbols": '["BTCUSDT","FOOUSDT"]'}, {"symbol": "XMRUSDT"}):
        r = get(sim, TICKER, **params)
        assert (r.status_code, r.json()) == (400, invalid), params  # one unknown fails the whole batch
    every = [item["symbol"] for item in get(sim, TICKER).json()]
    assert {f"{b}USDT" for b in BINANCE_BASES} <= set(every)
    assert "XMRUSDT" not in every and "USDTUSDT" not in every
    # MATICUSDT after the POL migration: listed with status BREAK, its ticker refused.
    assert "MATICUSDT" not in every
    assert (get(sim, TICKER, symbol="MATICUSDT").status_code, "BREAK") == (
        400, get(sim, "/binance/api/v3/exchangeInfo", symbol="MATICUSDT").json()["symbols"][0]["status"])
    # CoinGecko leaves out ids it does not know; a ticker is not an id.
    body = get(sim, PRICE, ids="bitcoin,foo,shib,shiba-inu,monero,matic-network",
               vs_currencies="usd").json()
    assert set(body) == {"bitcoin", "shiba-inu", "monero", "matic-network"}
    assert 0 < body["shiba-inu"]["usd"] < 0.001
    assert get(sim, PRICE, ids="foo", vs_currencies="usd").json() == {}


def test_random_walk_is_seeded_and_paced_by_ticks() -> None:
    now = [0.0]
    a = Market(seed=3, tick=1.0, clock=lambda: now[0])
    b = Market(seed=3, tick=1.0, clock=lambda: now[0])
    c = Market(seed=4, tick=1.0, clock=lambda: now[0])
    first = a.quote("BTC").price
    assert a.quote("BTC").price == first  # asking again does not move it
    now[0] = 10.0
    moved = a.quote("BTC").price
    assert moved != first
    assert b.quote("BTC").price == moved  # same seed, same tick: same price
    assert c.quote("BTC").price != moved
    # Only listed coins have a price.
    with pytest.raises(UnknownSymbol):
        a.quote("ZZZ")
    with pytest.raises(UnknownSymbol):
        a.binance_ticker("XMRUSDT")  # on CoinGecko only
    assert a.quote("XMR").price > 0 and set(BINANCE_BASES) <= set(COINS)


# --- counting ---------------------------------------------------------------


def test_stats_count_market_calls_by_path_node_and_provider(sim: SimulatedExchange) -> None:
    get(sim, "/binance/api/v3/ticker/24hr", node="n1", symbol="BTCUSDT")
    get(sim, "/binance/api/v3/ticker/24hr", node="n1", symbol="ETHUSDT")
    get(sim, "/feargreed/fng/", node="n2")
    get(sim, "/coingecko/api/v3/global")
    assert get(sim, "/nowhere").status_code == 404
    assert get(sim, "/binance/api/v3/nothing").status_code == 404
    for _ in range(3):  # control endpoints are not market calls
        requests.get(sim.url + "/_sim/stats", timeout=TIMEOUT)
        requests.get(sim.url + "/_sim/faults", timeout=TIMEOUT)
    stats = requests.get(sim.url + "/_sim/stats", timeout=TIMEOUT).json()
    assert stats["total"] == 6
    assert stats["by_path"] == {"/binance/api/v3/ticker/24hr": 2, "/feargreed/fng/": 1,
                                "/coingecko/api/v3/global": 1, "/nowhere": 1,
                                "/binance/api/v3/nothing": 1}
    assert stats["by_node"] == {"n1": 2, "n2": 1, "unknown": 3}
    assert stats["by_node_and_path"]["n1"] == {"/binance/api/v3/ticker/24hr": 2}
    assert stats["by_provider"] == {"binance": 3, "feargreed": 1, "coingecko": 1, "unknown": 1}
    assert stats["by_status"] == {"200": 4, "404": 2}
    assert stats["by_provider_status"] == {"binance": {"200": 2, "404": 1}, "feargreed": {"200": 1},
                                           "coingecko": {"200": 1}, "unknown": {"404": 1}}
    assert stats["by_ip"] == {"127.0.0.1": 6}
    assert stats["started_at"].endswith("Z")
    reset = requests.post(sim.url + "/_sim/stats/reset", timeout=TIMEOUT).json()
    assert reset["ok"] and reset["stats"]["total"] == 0 and reset["stats"]["by_node"] == {}


def test_stats_by_provider_status_and_client_ip(clock: Clock) -> None:
    with SimulatedExchange(clock=clock, limits=Limits(coingecko_keyless_per_minute=1)) as sim:
        sim.inject(provider="binance", status=451)
        for _ in range(2):
            get(sim, TICKER, symbol="BTCUSDT")
        get_from("127.0.0.2", sim, TICKER, symbol="BTCUSDT")
        assert get(sim, "/coingecko/api/v3/global").status_code == 200
        assert get(sim, "/coingecko/api/v3/global").status_code == 429
        assert get_from("127.0.0.2", sim, "/coingecko/api/v3/global").status_code == 200
        stats = sim.stats()
        assert stats["by_provider_status"] == {"binance": {"451": 3}, "coingecko": {"200": 2, "429": 1}}
        assert stats["by_ip"] == {"127.0.0.1": 4, "127.0.0.2": 2}
        assert stats["limits_applied"] == {"coingecko_429_keyless": 1}
        assert stats["faults_applied"] == {"status_451": 3}
        assert stats["cache"] == {"hits": 1, "misses": 1}
        sim.reset_stats()
        assert sim.stats()["by_provider_status"] == {} and sim.stats()["by_ip"] == {}


# --- CoinGecko: keys, budgets, the cache ---------------------------------------


def test_coingecko_keyless_budget_per_ip_and_429_without_retry_after(clock: Clock) -> None:
    with SimulatedExchange(clock=clock, limits=Limits(coingecko_keyless_per_minute=3)) as sim:
        replies = [get(sim, PRICE, ids="bitcoin", vs_currencies="usd") for _ in range(4)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429]
        refused = replies[-1]
        assert refused.json() == {"status": {"error_code": 429, "error_message": (
            "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing "
            "to subscribe to our API plans for higher rate limits.")}}
        assert "Retry-After" not in refused.headers
        # Everyone behind one IP shares it; another IP has its own.
        assert get_from("127.0.0.2", sim, PRICE, ids="bitcoin", vs_currencies="usd").status_code == 200
        assert get(sim, "/coingecko/api/v3/global").status_code == 429  # every endpoint draws on it
        clock.advance(59.9)
        assert get(sim, PRICE, ids="bitcoin", vs_currencies="usd").status_code == 429
        clock.advance(0.1)  # a fixed window: the next minute starts afresh
        assert get(sim, PRICE, ids="bitcoin", vs_currencies="usd").status_code == 200
        sim.set_limits(coingecko_keyless_per_minute=1, coingecko_retry_after=30)
        r = get(sim, PRICE, ids="bitcoin", vs_currencies="usd")
        assert r.status_code == 429 and r.headers["Retry-After"] == "30"
        assert sim.stats()["limits_applied"] == {"coingecko_429_keyless": 4}


def test_a_keyed_coingecko_429_says_when_its_window_ends(clock: Clock) -> None:
    # As CoinGecko's own (coingecko/coingecko-typescript issue 42): x-ratelimit-* headers,
    # the reset a wall-clock time, and no Retry-After; a keyless 429 carries none of them.
    limits = Limits(coingecko_keyless_per_minute=1, coingecko_demo_per_minute=1, window_s=60)
    with SimulatedExchange(clock=clock, limits=limits, demo_keys=["CG-demo"]) as sim:
        demo = {"x-cg-demo-api-key": "CG-demo"}
        assert get(sim, PRICE, headers=demo, ids="bitcoin", vs_currencies="usd").status_code == 200
        r = get(sim, PRICE, headers=demo, ids="bitcoin", vs_currencies="usd")
        assert r.status_code == 429 and "Retry-After" not in r.headers
        assert r.headers["x-ratelimit-limit"] == "1" and r.headers["x-ratelimit-remaining"] == "0"
        reset = datetime.strptime(r.headers["x-ratelimit-reset"], "%Y-%m-%d %H:%M:%S %z").timestamp()
        assert clock.now < reset <= clock.now + 61
        get(sim, PRICE, ids="bitcoin", vs_currencies="usd")
        keyless = get(sim, PRICE, ids="bitcoin", vs_currencies="usd")
        assert keyless.status_code == 429
        assert not {"x-ratelimit-reset", "Retry-After"} & set(keyless.headers)


def test_coingecko_keys_hosts_and_their_401s(clock: Clock) -> None:
    limits = Limits(coingecko_keyless_per_minute=1, coingecko_demo_per_minute=2, coingecko_pro_per_minute=2)
    with SimulatedExchange(clock=clock, limits=limits, demo_keys=["CG-demo"], pro_keys=["CG-pro"]) as sim:
        demo, pro = {"x-cg-demo-api-key": "CG-demo"}, {"x-cg-pro-api-key": "CG-pro"}
        q = {"ids": "bitcoin", "vs_currencies": "usd"}

        def cg(path: str, headers: dict[str, str] | None = None, **extra: str) -> tuple[int, Any]:
            r = get(sim, path, headers=headers, **q, **extra)
            return r.status_code, r.json()

        def error(status: int, code: int, text: str, top_level: bool = False) -> tuple[int, Any]:
            return status, {"status": {"error_code": code, "error_message": text},
                            **({"error_code": code} if top_level else {})}

        # A Demo key on api.coingecko.com, as a header or a query parameter; its own budget.
        assert cg(PRICE, demo)[0] == 200
        assert cg(PRICE, x_cg_demo_api_key="CG-demo")[0] == 200
        status, body = cg(PRICE, demo)
        assert status == 429 and body["status"]["error_code"] == 429
        assert cg(PRICE)[0] == 200  # the keyless budget is another one
        assert cg(PRICE)[0] == 429
        # A Pro key belongs on pro-api.coingecko.com.
        # A 400, the code also at the top level, as CoinGecko answers it.
        assert cg(PRICE, pro) == error(400, 10010, "If you are using Pro API key, please change your root "
                                       "URL from api.coingecko.com to pro-api.coingecko.com", True)
        assert cg(PRO_PRICE, pro)[0] == 200
        assert cg(PRO_PRICE, x_cg_pro_api_key="CG-pro")[0] == 200
        assert cg(PRO_PRICE, pro)[0] == 429
        assert get(sim, "/coingecko-pro/api/v3/global", headers=pro).status_code == 429
        # A Demo key there is the wrong host; no key, or one it never issued, is 10002.
        assert cg(PRO_PRICE, demo) == error(400, 10011, "If you are using Demo API key, please change your "
                                            "root URL from pro-api.coingecko.com to api.coingecko.com", True)
        assert cg(PRO_PRICE) == error(401, 10002, "API Key Missing")
        for path in (PRICE, PRO_PRICE):
            status, body = cg(path, {"x-cg-demo-api-key": "CG-stolen"})
            assert status == 401 and body["status"]["error_code"] == 10002
            assert "incorrect API key" in body["status"]["error_message"]
        assert sim.stats()["limits_applied"] == {
            "coingecko_429_demo": 1, "coingecko_429_keyless": 1, "coingecko_400_10010": 1,
            "coingecko_429_pro": 2, "coingecko_400_10011": 1, "coingecko_401_10002": 3}
        # Keys are replaced at run time; the budget of a key starts with the key.
        r = requests.post(sim.url + "/_sim/keys", json={"demo": ["CG-new"]}, timeout=TIMEOUT)
        assert r.json() == {"ok": True, "keys": {"demo": ["CG-new"], "pro": ["CG-pro"]}}
        assert cg(PRICE, {"x-cg-demo-api-key": "CG-new"})[0] == 200
        assert cg(PRICE, demo)[1]["status"]["error_code"] == 10002
        assert requests.get(sim.url + "/_sim/keys", timeout=TIMEOUT).json()["keys"]["demo"] == ["CG-new"]


def test_no_coingecko_key_is_known_by_default(sim: SimulatedExchange) -> None:
    r = get(sim, PRICE, headers={"x-cg-demo-api-key": "CG-anything"}, ids="bitcoin", vs_currencies="usd")
    assert r.status_code == 401 and r.json()["status"]["error_code"] == 10002
    assert get(sim, "/coingecko-pro/api/v3/global").status_code == 401
    assert get(sim, PRICE, ids="bitcoin", vs_currencies="usd").status_code == 200  # keyless is fine


def test_coingecko_demo_monthly_credits(clock: Clock) -> None:
    limits = Limits(coingecko_demo_monthly=3, coingecko_demo_per_minute=100)
    with SimulatedExchange(clock=clock, limits=limits, demo_keys=["CG-demo", "CG-other"]) as sim:
        demo = {"x-cg-demo-api-key": "CG-demo"}
        codes = [get(sim, "/coingecko/api/v3/global", headers=demo).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        clock.advance(120)  # not a per-minute limit
        r = get(sim, "/coingecko/api/v3/global", headers=demo)
        assert r.status_code == 429 and r.json()["status"]["error_code"] == 429
        assert "monthly" in r.json()["status"]["error_message"] and "Retry-After" not in r.headers
        other = get(sim, "/coingecko/api/v3/global", headers={"x-cg-demo-api-key": "CG-other"})
        assert other.status_code == 200  # credits are per key
        assert sim.gate.snapshot()["coingecko_demo_monthly"] == {"CG-demo": {"2027-01": 3},
                                                                 "CG-other": {"2027-01": 1}}
        clock.advance(31 * 86_400)  # February: credits again
        assert get(sim, "/coingecko/api/v3/global", headers=demo).status_code == 200
        assert sim.stats()["limits_applied"] == {"coingecko_429_monthly": 2}


def test_coingecko_answers_are_cached_per_host_and_query(clock: Clock) -> None:
    limits = Limits(coingecko_cache_s=10, coingecko_pro_cache_s=2)
    with SimulatedExchange(seed=3, clock=clock, limits=limits, pro_keys=["CG-pro"]) as sim:
        pro = {"x-cg-pro-api-key": "CG-pro"}
        first, first_global = btc(sim), get(sim, "/coingecko/api/v3/global").json()
        first_pro = btc(sim, PRO_PRICE, headers=pro)
        binance = get(sim, TICKER, symbol="BTCUSDT").json()["lastPrice"]
        clock.advance(1.5)
        assert get(sim, TICKER, symbol="BTCUSDT").json()["lastPrice"] != binance  # the market moved
        assert btc(sim, PRO_PRICE, headers=pro) == first_pro
        clock.advance(5)
        assert btc(sim) == first and get(sim, "/coingecko/api/v3/global").json() == first_global
        assert btc(sim, PRO_PRICE, headers=pro) != first_pro  # Pro: a shorter cache
        # Another query is another entry, filled now.
        both = get(sim, PRICE, ids="bitcoin,ethereum", vs_currencies="usd").json()
        assert both["bitcoin"]["usd"] != first
        clock.advance(4)  # 10.5 s after the first call
        assert btc(sim) != first
        sim.set_limits(coingecko_cache_s=0)
        now = btc(sim)
        clock.advance(1)
        assert btc(sim) != now
        assert sim.stats()["cache"] == {"hits": 3, "misses": 6}  # none counted while it is off


def test_coingecko_cache_is_on_by_default() -> None:
    assert Limits().coingecko_cache_s == 60 and Limits().coingecko_pro_cache_s == 20
    assert Limits().coingecko_global_cache_s == 600
    assert Limits().coingecko_keyless_per_minute is None and Limits().binance_weight_per_minute is None
    with SimulatedExchange(tick=0.001) as sim:
        first = btc(sim)
        time.sleep(0.01)  # many ticks: only the cache keeps the number
        assert btc(sim) == first


def test_cached_answers_survive_malformed_faults(clock: Clock) -> None:
    with SimulatedExchange(clock=clock) as sim:
        first = btc(sim)
        sim.inject(provider="coingecko", malformed="negative", times=1)
        assert get(sim, PRICE, ids="bitcoin", vs_currencies="usd").json()["bitcoin"]["usd"] < 0
        assert btc(sim) == first


# --- Binance: weight, bans, symbols -------------------------------------------------


def test_binance_weight_header_per_ip_and_minute(clock: Clock) -> None:
    with SimulatedExchange(clock=clock) as sim:  # counted even when no limit is enforced
        def used(r: Any) -> int:
            return int(r.headers[WEIGHT])

        assert used(get(sim, TICKER, symbol="BTCUSDT")) == 2
        assert used(get(sim, TICKER, symbols='["BTCUSDT","ETHUSDT"]')) == 4
        many = json.dumps([f"COIN{i}USDT" for i in range(21)])
        refused = get(sim, TICKER, symbols=many)
        assert refused.status_code == 400 and used(refused) == 44  # 21-100 symbols: 40, even refused
        assert used(get(sim, TICKER)) == 124  # no symbol: every pair, 80
        assert used(get(sim, INFO)) == 144  # exchangeInfo: 20
        assert int(get_from("127.0.0.2", sim, TICKER, symbol="BTCUSDT").headers[WEIGHT]) == 2
        clock.advance(60)
        assert used(get(sim, TICKER, symbol="BTCUSDT")) == 2


def test_binance_429_then_418_bans_that_grow(clock: Clock) -> None:
    clock.advance(10)  # 10 s into the minute
    with SimulatedExchange(clock=clock, limits=Limits(binance_weight_per_minute=10)) as sim:
        ok = [get(sim, TICKER, symbol="BTCUSDT") for _ in range(5)]
        assert [r.status_code for r in ok] == [200] * 5 and ok[-1].headers[WEIGHT] == "10"
        r = get(sim, TICKER, symbol="BTCUSDT")
        assert r.status_code == 429 and r.headers["Retry-After"] == "50"  # until the minute ends
        assert r.json() == {"code": -1003, "msg": "Too much request weight used; current limit is 10 "
                            "request weight per 1 MINUTE. Please use WebSocket Streams for live updates "
                            "to avoid polling the API."}
        assert r.headers[WEIGHT] == "12"
        # Calling on after a 429: banned for 2 minutes.
        r = get(sim, TICKER, symbol="BTCUSDT")
        until_ms = math.ceil((clock.now + 120) * 1000)
        assert r.status_code == 418 and r.headers["Retry-After"] == "120"
        assert r.json() == {"code": -1003, "msg": f"Way too much request weight used; IP banned until "
                            f"{until_ms}. Please use WebSocket Streams for live updates to avoid bans."}
        assert get_from("127.0.0.2", sim, TICKER, symbol="BTCUSDT").status_code == 200  # per IP
        clock.advance(100)  # a new minute, but the ban holds
        r = get(sim, INFO)
        assert r.status_code == 418 and r.headers["Retry-After"] == "20" and str(until_ms) in r.text
        clock.advance(20)
        assert get(sim, TICKER, symbol="BTCUSDT").status_code == 200
        codes = [get(sim, TICKER, symbol="BTCUSDT").status_code for _ in range(6)]
        assert codes == [200, 200, 200, 200, 429, 418]
        assert sim.stats()["by_provider_status"]["binance"] == {"200": 11, "429": 2, "418": 3}
        r = get(sim, TICKER, symbol="BTCUSDT")
        assert r.headers["Retry-After"] == "240"  # the second ban: twice as long
        bans = requests.get(sim.url + "/_sim/limits", timeout=TIMEOUT).json()["binance_bans"]
        assert list(bans) == ["127.0.0.1"] and bans["127.0.0.1"]["bans"] == 2
        requests.post(sim.url + "/_sim/limits/reset", timeout=TIMEOUT)
        assert get(sim, TICKER, symbol="BTCUSDT").status_code == 200


def test_binance_bans_double_up_to_three_days(clock: Clock) -> None:
    gate = Gate(Limits(binance_weight_per_minute=1, binance_ban_s=50_000), clock=clock)
    lengths = []
    for _ in range(5):
        while (verdict := gate.admit("binance", "/api/v3/ticker/24hr", {"symbol": ["BTCUSDT"]}, {},
                                     "10.0.0.1")).applied != "binance_418":
            pass
        assert verdict.reject is not None
        lengths.append(int(verdict.reject.headers["Retry-After"]))
        clock.advance(lengths[-1])
    assert lengths == [50_000, 100_000, 200_000, MAX_BAN_S, MAX_BAN_S]


def test_binance_exchange_info(clock: Clock) -> None:
    with SimulatedExchange(clock=clock) as sim:
        r = get(sim, INFO)
        body = r.json()
        assert r.status_code == 200 and set(body) == {"timezone", "serverTime", "rateLimits",
                                                      "exchangeFilters", "symbols"}
        assert body["timezone"] == "UTC" and isinstance(body["serverTime"], int)
        assert body["rateLimits"] == [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                       "intervalNum": 1, "limit": 6000}]
        assert body["exchangeFilters"] == []
        assert {s["symbol"] for s in body["symbols"]} == {f"{b}USDT" for b in BINANCE_BASES} | {"MATICUSDT"}
        assert {s["symbol"] for s in body["symbols"] if s["status"] != "TRADING"} == {"MATICUSDT"}
        assert body["symbols"][0] == {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC",
                                      "quoteAsset": "USDT"}
        assert [s["symbol"] for s in get(sim, INFO, symbol="SHIBUSDT").json()["symbols"]] == ["SHIBUSDT"]
        two = get(sim, INFO, symbols='["ETHUSDT","SOLUSDT"]').json()["symbols"]
        assert [s["baseAsset"] for s in two] == ["ETH", "SOL"]
        for params in ({"symbols": '["BTCUSDT","FOOUSDT"]'}, {"symbol": "XMRUSDT"}):
            r = get(sim, INFO, **params)
            assert (r.status_code, r.json()) == (400, {"code": -1121, "msg": "Invalid symbol."})
        assert get(sim, INFO, symbol="btcusdt").json()["code"] == -1100
        sim.set_limits(binance_weight_per_minute=1234)
        assert get(sim, INFO).json()["rateLimits"][0]["limit"] == 1234


# --- error bodies of injected statuses ------------------------------------------


def test_binance_451_from_a_restricted_location(sim: SimulatedExchange) -> None:
    sim.inject(provider="binance", status=451)
    for path, params in ((TICKER, {"symbol": "BTCUSDT"}), (INFO, {})):
        r = get(sim, path, **params)
        assert r.status_code == 451 and r.headers["Content-Type"] == "application/json"
        assert r.json() == {"code": 0, "msg": "Service unavailable from a restricted location according "
                            "to 'b. Eligibility' in https://www.binance.com/en/terms. Please contact "
                            "customer service if you believe you received this message in error."}
        assert "Retry-After" not in r.headers
    # Others are not blocked, and a test can bound the calls made after the 451.
    assert get(sim, "/coingecko/api/v3/global").status_code == 200
    assert sim.stats()["by_provider_status"] == {"binance": {"451": 2}, "coingecko": {"200": 1}}


@pytest.mark.parametrize(("provider", "path"), [("coingecko", PRICE), ("coingecko-pro", PRO_PRICE)])
def test_coingecko_403_is_cloudflares_html_page(sim: SimulatedExchange, provider: str, path: str) -> None:
    sim.inject(provider=provider, status=403)
    r = get(sim, path, ids="bitcoin", vs_currencies="usd")
    assert r.status_code == 403 and r.headers["Content-Type"] == "text/html"
    assert "error code: 1020" in r.text and r.text.lstrip().startswith("<!DOCTYPE html>")
    host = "pro-api.coingecko.com" if provider == "coingecko-pro" else "api.coingecko.com"
    assert f"You do not have access to {host}." in r.text


def test_fault_scopes_of_the_two_coingecko_hosts(sim: SimulatedExchange) -> None:
    sim.set_keys(pro=["CG-pro"])
    pro = {"x-cg-pro-api-key": "CG-pro"}
    sim.inject(provider="coingecko-pro", status=503)
    assert get(sim, PRO_PRICE, headers=pro, ids="bitcoin", vs_currencies="usd").status_code == 503
    assert get(sim, PRICE, ids="bitcoin", vs_currencies="usd").status_code == 200
    sim.clear_faults()
    sim.inject(provider="coingecko", status=500)  # the provider: both hosts
    assert get(sim, PRO_PRICE, headers=pro, ids="bitcoin", vs_currencies="usd").status_code == 500
    assert get(sim, PRICE, ids="bitcoin", vs_currencies="usd").status_code == 500
    assert sim.stats()["by_provider"] == {"coingecko": 4}


@pytest.mark.parametrize(("provider", "status", "content_type", "expect"), [
    ("binance", 400, "application/json", {"code": -1121, "msg": "Invalid symbol."}),
    ("binance", 500, "application/json", {"code": -1000,
                                          "msg": "An unknown error occurred while processing the request."}),
    ("coingecko", 401, "application/json", 10002),
    ("coingecko", 429, "application/json", 429),
    ("coingecko", 500, "application/json", 500),
    ("binance", 403, "text/html", "Generated by cloudfront (CloudFront)"),
    ("feargreed", 503, "application/json", {"metadata": {"error": "Service Unavailable"}, "data": []}),
])
def test_injected_statuses_answer_in_the_providers_words(sim: SimulatedExchange, provider: str, status: int,
                                                         content_type: str, expect: Any) -> None:
    sim.inject(provider=provider, status=status)
    path = {"binance": TICKER, "coingecko": PRICE, "feargreed": "/feargreed/fng/"}[provider]
    r = get(sim, path, symbol="BTCUSDT") if provider == "binance" else get(sim, path, vs_currencies="usd")
    assert r.status_code == status and r.headers["Content-Type"] == content_type
    assert "Retry-After" not in r.headers
    if isinstance(expect, str):
        assert expect in r.text
    elif isinstance(expect, int):
        assert r.json()["status"]["error_code"] == expect and r.json()["status"]["error_message"]
    else:
        assert r.json() == expect


def test_injected_binance_429_and_418_carry_retry_after(clock: Clock) -> None:
    clock.advance(45)
    with SimulatedExchange(clock=clock) as sim:
        sim.inject(provider="binance", status=429)
        r = get(sim, TICKER, symbol="BTCUSDT")
        assert r.json()["code"] == -1003 and "current limit is 6000 request weight" in r.json()["msg"]
        assert r.headers["Retry-After"] == "15"  # the rest of the minute
        sim.inject(provider="binance", status=418)
        r = get(sim, TICKER, symbol="BTCUSDT")
        assert r.headers["Retry-After"] == "120"
        assert f"IP banned until {math.ceil((clock.now + 120) * 1000)}." in r.json()["msg"]
        sim.inject(provider="binance", status=418, retry_after=600)
        r = get(sim, TICKER, symbol="BTCUSDT")
        assert r.headers["Retry-After"] == "600"
        assert f"IP banned until {math.ceil((clock.now + 600) * 1000)}." in r.json()["msg"]
        assert WEIGHT not in r.headers  # answered in front of the exchange: no weight counted
        sim.inject(provider="coingecko", status=429, retry_after=9)
        assert get(sim, "/coingecko/api/v3/global").headers["Retry-After"] == "9"


# --- /_sim/limits and /_sim/keys ----------------------------------------------------


def test_limits_control_endpoint(sim: SimulatedExchange) -> None:
    url = sim.url + "/_sim/limits"
    shown = requests.get(url, timeout=TIMEOUT).json()
    assert shown["limits"] == Limits().to_dict() and shown["keys"] == {"demo": 0, "pro": 0}
    assert set(shown) == {"limits", "keys", "window", "binance_bans", "coingecko_demo_monthly",
                          "cache_entries"}
    r = requests.post(url, json={"preset": "real", "coingecko_demo_per_minute": 30}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["ok"]
    assert r.json()["limits"] == Limits.real(coingecko_demo_per_minute=30).to_dict()
    assert Limits.real().binance_weight_per_minute == 6000 and Limits.real().coingecko_demo_per_minute == 100
    assert Limits.real().coingecko_demo_monthly == 10_000
    # Without a preset, the fields given change and the rest stay.
    r = requests.post(url, json={"binance_weight_per_minute": None, "window_s": 2}, timeout=TIMEOUT)
    limits = r.json()["limits"]
    assert limits["binance_weight_per_minute"] is None and limits["window_s"] == 2
    assert limits["coingecko_demo_per_minute"] == 30
    get(sim, TICKER, symbol="BTCUSDT")
    assert requests.get(url, timeout=TIMEOUT).json()["window"]["counts"] == {"binance": {"127.0.0.1": 2}}
    reset = requests.post(url + "/reset", timeout=TIMEOUT).json()
    assert reset["ok"] and reset["window"]["counts"] == {}
    assert requests.post(url, json={"preset": "off"}, timeout=TIMEOUT).json()["limits"] == Limits().to_dict()
    assert requests.delete(url, timeout=TIMEOUT).status_code == 405
    assert requests.get(url + "/reset", timeout=TIMEOUT).status_code == 405
    with pytest.raises(LimitError):
        sim.set_limits(binance_ban_s=0)


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    b"{}",
    b'{"binance_weight": 6000}',
    b'{"binance_weight_per_minute": 0}',
    b'{"binance_weight_per_minute": "6000"}',
    b'{"binance_weight_per_minute": true}',
    b'{"binance_weight_per_minute": 1.5}',
    b'{"coingecko_cache_s": -1}',
    b'{"coingecko_cache_s": null}',
    b'{"coingecko_retry_after": 1e9}',
    b'{"binance_ban_s": 0}',
    b'{"window_s": 0}',
    b'{"preset": "strict"}',
    b'{"preset": "real", "coingecko_demo_monthly": -5}',
])
def test_bad_limits_requests_get_400(sim: SimulatedExchange, body: bytes) -> None:
    url = sim.url + "/_sim/limits"
    r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert requests.get(url, timeout=TIMEOUT).json()["limits"] == Limits().to_dict()  # unchanged
    assert get(sim, TICKER, symbol="BTCUSDT").status_code == 200


def test_limit_errors_say_what_is_allowed(sim: SimulatedExchange) -> None:
    def error(body: Any) -> str:
        return requests.post(sim.url + "/_sim/limits", json=body, timeout=TIMEOUT).json()["error"]

    assert error({"binance_weight_per_minute": 0}) == ("binance_weight_per_minute must be an integer "
                                                       "from 1 to 1000000000 or null (off), got 0")
    assert "allowed: preset, coingecko_keyless_per_minute" in error({"limit": 1})
    assert error({"preset": "strict"}) == "preset must be one of off, real, got 'strict'"


@pytest.mark.parametrize("body", [
    b"[]",
    b"{}",
    b'{"demo": "CG-key"}',
    b'{"demo": [""]}',
    b'{"demo": ["two words"]}',
    b'{"demo": [5]}',
    b'{"gold": ["CG-key"]}',
    b'{"demo": ["CG-key"], "pro": ["CG-key"]}',
])
def test_bad_keys_requests_get_400(sim: SimulatedExchange, body: bytes) -> None:
    url = sim.url + "/_sim/keys"
    r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert r.status_code == 400 and r.json()["error"]
    assert requests.get(url, timeout=TIMEOUT).json() == {"keys": {"demo": [], "pro": []}}


def test_a_key_cannot_be_demo_and_pro() -> None:
    with pytest.raises(LimitError):
        SimulatedExchange(demo_keys=["CG-k"], pro_keys=["CG-k"])
    sim = SimulatedExchange(demo_keys=["CG-k"])
    with pytest.raises(LimitError):
        sim.set_keys(pro=["CG-k"])  # still a Demo key
    sim.set_keys(demo=[], pro=["CG-k"])
    assert sim.gate.keys() == {"demo": [], "pro": ["CG-k"]}


# --- the fault API ------------------------------------------------------------


def test_fault_set_show_scope_and_clear(sim: SimulatedExchange) -> None:
    faults = sim.url + "/_sim/faults"
    r = requests.post(faults, json={"provider": "binance", "status": 500}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["faults"] == {"binance": {"status": 500}}
    requests.post(faults, json={"latency_ms": 1}, timeout=TIMEOUT)
    shown = requests.get(faults, timeout=TIMEOUT).json()["faults"]
    assert shown == {"binance": {"status": 500}, "*": {"latency_ms": 1}}
    assert get(sim, "/binance/api/v3/ticker/24hr", symbol="BTCUSDT").status_code == 500
    # The provider's own spec wins; others get the global one (here: harmless latency).
    assert get(sim, "/feargreed/fng/").status_code == 200
    cleared = requests.delete(faults, params={"provider": "binance"}, timeout=TIMEOUT).json()
    assert cleared["faults"] == {"*": {"latency_ms": 1}}
    assert get(sim, "/binance/api/v3/ticker/24hr", symbol="BTCUSDT").status_code == 200
    assert requests.delete(faults, timeout=TIMEOUT).json()["faults"] == {}
    assert sim.stats()["faults_applied"] == {"status_500": 1, "latency": 2}


def test_fault_times_then_cleared(sim: SimulatedExchange) -> None:
    sim.inject(provider="feargreed", status=503, times=2)
    codes = [get(sim, "/feargreed/fng/").status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert requests.get(sim.url + "/_sim/faults", timeout=TIMEOUT).json()["faults"] == {}


def test_fixed_status_sends_retry_after(sim: SimulatedExchange) -> None:
    sim.inject(provider="coingecko", status=429, retry_after=7)
    r = get(sim, "/coingecko/api/v3/global")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["status"]["error_code"] == 429


@pytest.mark.parametrize("body", [
    b"not json",
    b"[1, 2]",
    b"{}",
    b'{"status": 200}',
    b'{"statuss": 500}',
    b'{"provider": "kraken", "status": 500}',
    b'{"error_rate": 1.5}',
    b'{"error_rate": "half"}',
    b'{"latency_ms": -1}',
    b'{"malformed": "garbled"}',
    b'{"retry_after": 5}',
    b'{"oversized_bytes": 1000, "chunked": "yes"}',
    b'{"chunked": true, "status": 500}',
    b'{"stall_s": true}',
    b'{"times": 0, "status": 500}',
])
def test_bad_fault_requests_get_400(sim: SimulatedExchange, body: bytes) -> None:
    r = requests.post(sim.url + "/_sim/faults", data=body,
                      headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert requests.get(sim.url + "/_sim/faults", timeout=TIMEOUT).json()["faults"] == {}
    assert get(sim, "/feargreed/fng/").status_code == 200  # still serving


def test_bad_control_requests(sim: SimulatedExchange) -> None:
    assert requests.delete(sim.url + "/_sim/faults", params={"provider": "kraken"},
                           timeout=TIMEOUT).status_code == 400
    assert requests.put(sim.url + "/_sim/faults", timeout=TIMEOUT).status_code == 501
    assert requests.post(sim.url + "/_sim/stats", timeout=TIMEOUT).status_code == 405
    assert requests.get(sim.url + "/_sim/nothing", timeout=TIMEOUT).status_code == 404
    assert requests.post(sim.url + "/binance/api/v3/ticker/24hr", timeout=TIMEOUT).status_code == 405
    with pytest.raises(FaultError):
        sim.inject(provider="binance")


def test_stop_ends_stalls_and_closes_kept_alive_connections() -> None:
    sim = SimulatedExchange().start()
    session = requests.Session()
    assert session.get(sim.url + "/feargreed/fng/", timeout=TIMEOUT).status_code == 200
    sim.inject(stall_s=60)
    started = time.monotonic()
    errors: list[BaseException] = []

    def stalled() -> None:
        try:
            requests.get(sim.url + "/feargreed/fng/", timeout=30)
        except requests.RequestException as exc:
            errors.append(exc)

    t = threading.Thread(target=stalled)
    t.start()
    time.sleep(0.2)
    sim.stop()
    t.join(10)
    assert not t.is_alive() and errors, "a stalled request must end when the simulator stops"
    assert time.monotonic() - started < 10
    with pytest.raises(requests.ConnectionError):
        session.get(sim.url + "/feargreed/fng/", timeout=TIMEOUT)
    session.close()


# --- the CLI ------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_url_and_exits_cleanly_on_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "feed", "sim", "--port", "0", "--seed", "5", "--limits", "real",
         "--coingecko-demo-per-minute", "30", "--demo-key", "CG-cli", "--pro-key", "CG-cli-pro"],
        cwd=str(ROOT), env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        event = json.loads(line)
        assert set(event) == {"event", "url"} and event["event"] == "sim_listening"
        assert event["url"].startswith("http://127.0.0.1:") and not event["url"].endswith(":0")
        r = requests.get(event["url"] + "/feargreed/fng/", headers={"X-Marketfeed-Node": "cli"},
                         timeout=TIMEOUT)
        assert r.status_code == 200
        stats = requests.get(event["url"] + "/_sim/stats", timeout=TIMEOUT).json()
        assert stats["by_node"] == {"cli": 1}
        limits = requests.get(event["url"] + "/_sim/limits", timeout=TIMEOUT).json()["limits"]
        assert limits == Limits.real(coingecko_demo_per_minute=30).to_dict()
        keys = requests.get(event["url"] + "/_sim/keys", timeout=TIMEOUT).json()["keys"]
        assert keys == {"demo": ["CG-cli"], "pro": ["CG-cli-pro"]}
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == b"", "exactly one line goes to stdout"
    assert b'"sim_stopped"' in err


def test_cli_refuses_a_bad_port() -> None:
    done = subprocess.run([sys.executable, "-m", "feed", "sim", "--port", "70000"], cwd=str(ROOT),
                          env=python_env(), capture_output=True, timeout=30)
    assert done.returncode == 2 and b"--port" in done.stderr and done.stdout == b""


def test_cli_limit_flags() -> None:
    args, limits = cli.options(["--binance-weight-per-minute", "1200", "--coingecko-cache-s", "0",
                                "--window-s", "5", "--demo-key", "a", "--demo-key", "b"])
    assert limits == Limits(binance_weight_per_minute=1200, coingecko_cache_s=0.0, window_s=5.0)
    assert args.demo_key == ["a", "b"] and args.pro_key == []
    _, real = cli.options(["--limits", "real", "--coingecko-keyless-per-minute", "off"])
    assert real == Limits.real(coingecko_keyless_per_minute=None)
    assert cli.options([])[1] == Limits()


@pytest.mark.parametrize(("argv", "named"), [
    (["--binance-weight-per-minute", "lots"], "--binance-weight-per-minute"),
    (["--coingecko-demo-per-minute", "0"], "--coingecko-demo-per-minute"),
    (["--binance-ban-s", "off"], "--binance-ban-s"),
    (["--demo-key", "two words"], "demo key"),
])
def test_cli_refuses_bad_limit_flags(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert named in err and out == ""
