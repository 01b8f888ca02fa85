"""The simulated exchange: shapes, counting, the fault API and the CLI, over real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from feed.providers.binance import parse_ticker
from feed.providers.coingecko import parse_global, parse_prices
from feed.providers.feargreed import parse_fng
from feed.simulator.faults import FaultError
from feed.simulator.market import Market
from feed.simulator.server import SimulatedExchange
from tests.conftest import ROOT, python_env

TIMEOUT = 5


@pytest.fixture
def sim() -> Iterator[SimulatedExchange]:
    with SimulatedExchange(seed=11) as exchange:
        yield exchange


def get(sim: SimulatedExchange, path: str, node: str | None = None, **params: str) -> requests.Response:
    headers = {"X-Marketfeed-Node": node} if node else {}
    return requests.get(sim.url + path, params=params, headers=headers, timeout=TIMEOUT)


# --- shapes ---------------------------------------------------------------


def test_coingecko_shapes(sim: SimulatedExchange) -> None:
    r = get(sim, "/coingecko/api/v3/simple/price", ids="bitcoin,ethereum,solana,binancecoin,ripple",
            vs_currencies="usd", include_24hr_change="true")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"bitcoin", "ethereum", "solana", "binancecoin", "ripple"}
    assert set(body["bitcoin"]) == {"usd", "usd_24h_change"}
    assert parse_prices(body, ("BTC", "ETH", "SOL", "BNB", "XRP"))["BTC"]["usd"] > 10_000
    without_change = get(sim, "/coingecko/api/v3/simple/price", ids="bitcoin", vs_currencies="usd").json()
    assert set(without_change["bitcoin"]) == {"usd"}
    g = get(sim, "/coingecko/api/v3/global").json()
    assert {"total_market_cap", "total_volume", "market_cap_percentage",
            "market_cap_change_percentage_24h_usd", "active_cryptocurrencies"} <= set(g["data"])
    assert parse_global(g)["total_market_cap_usd"] > 1e12
    missing = get(sim, "/coingecko/api/v3/simple/price", ids="bitcoin")
    assert missing.status_code == 400


def test_binance_shapes(sim: SimulatedExchange) -> None:
    r = get(sim, "/binance/api/v3/ticker/24hr", symbols='["BTCUSDT","ETHUSDT"]')
    items = r.json()
    assert [i["symbol"] for i in items] == ["BTCUSDT", "ETHUSDT"]
    for field in ("lastPrice", "priceChangePercent", "quoteVolume", "openPrice", "volume"):
        assert isinstance(items[0][field], str)
    assert isinstance(items[0]["openTime"], int) and isinstance(items[0]["count"], int)
    assert set(parse_ticker(items, ("BTC", "ETH"))) == {"BTC", "ETH"}
    single = get(sim, "/binance/api/v3/ticker/24hr", symbol="BNBUSDT").json()
    assert isinstance(single, dict) and single["symbol"] == "BNBUSDT"
    bad = get(sim, "/binance/api/v3/ticker/24hr", symbols="BTCUSDT")
    assert bad.status_code == 400 and bad.json()["code"] == -1100


def test_feargreed_shape(sim: SimulatedExchange) -> None:
    body = get(sim, "/feargreed/fng/", limit="1").json()
    assert body["name"] == "Fear and Greed Index" and body["metadata"] == {"error": None}
    entry = body["data"][0]
    assert set(entry) == {"value", "value_classification", "timestamp", "time_until_update"}
    assert entry["value"].isdigit()
    assert parse_fng(body)["label"] == entry["value_classification"]
    assert len(get(sim, "/feargreed/fng/", limit="3").json()["data"]) == 3


def test_unknown_symbols_get_stable_prices(sim: SimulatedExchange) -> None:
    a = get(sim, "/binance/api/v3/ticker/24hr", symbol="FOOUSDT").json()
    b = get(sim, "/coingecko/api/v3/simple/price", ids="foo", vs_currencies="usd").json()
    assert float(a["lastPrice"]) > 0
    # The same symbol on both providers is the same simulated coin.
    assert b["foo"]["usd"] == pytest.approx(float(a["lastPrice"]), rel=1e-3)


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
    # An unknown symbol starts from a price derived from its name alone.
    assert (Market(seed=1, clock=lambda: 0.0).quote("ZZZ").price
            == Market(seed=2, clock=lambda: 0.0).quote("ZZZ").price)


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
    assert stats["started_at"].endswith("Z")
    reset = requests.post(sim.url + "/_sim/stats/reset", timeout=TIMEOUT).json()
    assert reset["ok"] and reset["stats"]["total"] == 0 and reset["stats"]["by_node"] == {}


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
        [sys.executable, "-m", "feed", "sim", "--port", "0", "--seed", "5"],
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
