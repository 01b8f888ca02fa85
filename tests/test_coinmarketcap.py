"""CoinMarketCap as the fallback for market totals (with a key): called only while CoinGecko's fail."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from feed.config.settings import Settings
from feed.errors import FetchFailed
from feed.providers.fetcher import build_fetcher
from feed.simulator.server import SimulatedExchange

KEY = "b54bcf4d-1bca-4e8e-9a24-22ff2c3d462c"


@pytest.fixture
def sim() -> Iterator[SimulatedExchange]:
    with SimulatedExchange(seed=13) as exchange:
        yield exchange


def fetcher_for(sim: SimulatedExchange, key: str | None, **extra: object):
    settings = Settings(sim_url=sim.url, providers=("coingecko", "coinmarketcap"), symbols=("BTC",),
                        http_retries=0, cmc_api_key=key, coingecko_interval=0.01, cmc_interval=0.01,
                        coingecko_market_interval=0.01,
                        **extra)
    return build_fetcher(settings, "node-a")


def tick(fetcher) -> dict | None:
    """One fetch's data, also from a fetch whose every call failed (the leader publishes it then)."""
    try:
        return fetcher()
    except FetchFailed as exc:
        return exc.data


def cmc_calls(sim: SimulatedExchange) -> int:
    return sim.stats()["by_path"].get("/coinmarketcap/v1/global-metrics/quotes/latest", 0)


def test_standby_while_coingecko_answers_then_the_market_from_it(sim: SimulatedExchange, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fetcher = fetcher_for(sim, KEY)
    try:
        data = fetcher()
        assert data["market"]["source"] == "simulated:coingecko"
        fetcher()
        assert cmc_calls(sim) == 0  # no credit spent while CoinGecko is fine
        sim.inject(provider="coingecko", status=500)
        for _ in range(3):
            data = tick(fetcher)
            time.sleep(0.02)
        # CoinGecko's totals fail: CoinMarketCap's take their place, in the same shape.
        assert cmc_calls(sim) >= 1
        assert data["market"]["source"] == "simulated:coinmarketcap"
        assert 0 < data["market"]["btc_dominance"] < 100 and 0 < data["market"]["eth_dominance"] < 100
        assert data["market"]["total_market_cap_usd"] > 0 and "market" not in data["missing"]
        sim.clear_faults()
        for _ in range(3):
            data = tick(fetcher)
            time.sleep(0.02)
        assert data["market"]["source"] == "simulated:coingecko"
        spent = cmc_calls(sim)
        fetcher()
        assert cmc_calls(sim) == spent  # back on standby
    finally:
        fetcher.close()
    logged = " ".join(str(getattr(r, "fields", r.getMessage())) for r in caplog.records)
    assert KEY not in logged and KEY not in str(data)


def test_without_a_key_it_is_never_called(sim: SimulatedExchange) -> None:
    sim.inject(provider="coingecko", status=500)
    fetcher = fetcher_for(sim, None)
    try:
        for _ in range(2):
            tick(fetcher)
    finally:
        fetcher.close()
    assert cmc_calls(sim) == 0


def test_an_invalid_key_is_named_with_what_to_fix(sim: SimulatedExchange, caplog) -> None:
    caplog.set_level(logging.WARNING)
    sim.inject(provider="coingecko", status=500)
    fetcher = fetcher_for(sim, "invalid-key-0000")
    try:
        for _ in range(3):
            tick(fetcher)
            time.sleep(0.02)
    finally:
        fetcher.close()
    fields = [getattr(r, "fields", {}) for r in caplog.records]
    blocked = [f for f in fields
               if f.get("event") == "upstream_blocked" and f.get("provider") == "coinmarketcap"]
    assert blocked and "CMC_API_KEY" in str(blocked[0])
    assert "invalid-key-0000" not in str(fields)
