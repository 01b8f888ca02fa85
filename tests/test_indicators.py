"""BTC's daily RSI(14) from Binance's daily candles: checked against TA-Lib, through the simulator, faults."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import talib

from feed.config.settings import Settings
from feed.providers.binance import KLINES_LIMIT, parse_rsi
from feed.providers.fetcher import build_fetcher
from feed.providers.indicators import rsi
from feed.providers.validate import InvalidResponse
from feed.simulator.server import SimulatedExchange


def walk(n: int, seed: int, vol: float = 0.03) -> list[float]:
    rng = random.Random(seed)
    closes = [90_000.0]
    for _ in range(n - 1):
        closes.append(closes[-1] * (1 + rng.gauss(0.0, vol)))
    return closes


@pytest.mark.parametrize("n", [15, 16, 30, 200, 1000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rsi_matches_ta_lib(n: int, seed: int) -> None:
    closes = walk(n, seed)
    assert rsi(closes) == pytest.approx(float(talib.RSI(np.array(closes), timeperiod=14)[-1]), abs=1e-9)


def test_rsi_edges() -> None:
    rising = [float(i) for i in range(1, 40)]
    assert rsi(rising) == 100.0 and rsi(rising[::-1]) == 0.0
    assert rsi([5.0] * 20) == 50.0  # no move at all: neither side
    with pytest.raises(ValueError, match="at least 15"):
        rsi([1.0] * 14)


def candles(closes: list[float]) -> list[list]:
    day = 86_400_000
    return [[i * day, f"{c:.2f}", f"{c:.2f}", f"{c:.2f}", f"{c:.8f}", "1.0", (i + 1) * day - 1, "1.0", 10,
             "0.5", "0.5", "0"] for i, c in enumerate(closes)]


def test_klines_become_the_rsi_and_bad_candles_are_refused() -> None:
    closes = walk(KLINES_LIMIT, 9)
    value = parse_rsi(candles(closes))["btc_rsi_14"]
    assert value == pytest.approx(float(talib.RSI(np.array(closes), timeperiod=14)[-1]), abs=1e-3)
    for bad in ([], candles(closes[:10]), [["x"]] * 20, {"code": -1121}, [[0, "1", "1", "1", "NaN"]] * 20,
                [[0, "1", "1", "1", "-5"]] * 20):
        with pytest.raises(InvalidResponse):
            parse_rsi(bad)


@pytest.fixture
def sim() -> Iterator[SimulatedExchange]:
    with SimulatedExchange(seed=5) as exchange:
        yield exchange


def test_the_simulator_answers_klines_as_binance_does(sim: SimulatedExchange) -> None:
    url = f"{sim.url}/binance/api/v3/klines"
    rows = requests.get(url, params={"symbol": "BTCUSDT", "interval": "1d", "limit": "30"}, timeout=5).json()
    assert len(rows) == 30 and all(len(r) == 12 for r in rows)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)  # oldest first
    assert rows[-1][0] <= rows[-1][6] and rows[-1][6] - rows[-1][0] == 86_399_999
    for params, code in (({"interval": "1d"}, -1102), ({"symbol": "BTCUSDT"}, -1102),
                         ({"symbol": "BTCUSDT", "interval": "7x"}, -1120),
                         ({"symbol": "BTCUSDT", "interval": "1d", "limit": "5000"}, -1100),
                         ({"symbol": "NOPEUSDT", "interval": "1d"}, -1121)):
        answer = requests.get(url, params=params, timeout=5)
        assert answer.status_code == 400 and answer.json()["code"] == code, params


def test_the_rsi_section_through_the_fetcher_hourly_and_its_faults(sim: SimulatedExchange) -> None:
    settings = Settings(sim_url=sim.url, providers=("binance",), symbols=("BTC",), http_retries=0,
                        binance_interval=0.01)
    fetcher = build_fetcher(settings, "node-a")
    try:
        data = fetcher()
        first = data["indicators"]
        assert first["source"] == "simulated:binance" and 0 < first["btc_rsi_14"] < 100
        assert data["sources"]["binance"]["sections"]["indicators"]["stale"] is False
        for _ in range(3):
            data = fetcher()
        # Asked once an hour: one call for four fetches, and the value kept.
        assert sim.stats()["by_path"]["/binance/api/v3/klines"] == 1
        assert data["indicators"] == first and "indicators" not in data["missing"]
    finally:
        fetcher.close()



@pytest.mark.parametrize("mode", ["not_json", "truncated", "wrong_shape", "nan", "negative", "zero", "huge"])
def test_bad_candles_are_refused_and_cost_nothing_else(sim: SimulatedExchange, mode: str) -> None:
    # Binance answers badly (its ticker too): prices come from CoinGecko, the RSI is named missing.
    sim.inject(provider="binance", malformed=mode)
    settings = Settings(sim_url=sim.url, providers=("binance", "coingecko"), symbols=("BTC",), http_retries=0)
    fetcher = build_fetcher(settings, "node-b")
    try:
        data = fetcher()
    finally:
        fetcher.close()
    assert data["prices"]["BTC"]["usd"] > 0 and data["prices"]["BTC"]["source"] == "simulated:coingecko"
    assert data["indicators"] is None and "indicators" in data["missing"]
    assert "indicators" in data["sources"]["binance"]["failed"]
