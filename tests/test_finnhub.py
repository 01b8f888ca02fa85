"""The US index ETFs from Finnhub, with a key: through the simulator, its refusals, the original's field."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from feed.config.settings import Settings
from feed.envelope import Envelope
from feed.original import market_object
from feed.providers.fetcher import build_fetcher
from feed.simulator.server import SimulatedExchange

KEY = "d4finnhubtestkey0001"


@pytest.fixture
def sim() -> Iterator[SimulatedExchange]:
    with SimulatedExchange(seed=11) as exchange:
        yield exchange


def fetch(sim: SimulatedExchange, key: str | None, node: str = "node-a", **extra: object) -> dict:
    settings = Settings(sim_url=sim.url, providers=("binance", "finnhub"), symbols=("BTC",), http_retries=0,
                        finnhub_api_key=key, rsi_interval=0, **extra)
    fetcher = build_fetcher(settings, node)
    try:
        return fetcher()
    finally:
        fetcher.close()


def test_the_three_etfs_with_a_key_and_none_without(sim: SimulatedExchange, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    data = fetch(sim, KEY)
    indices = data["indices"]
    assert indices["source"] == "simulated:finnhub"
    assert [s for s in indices if s in ("DIA", "SPY", "QQQM")] == ["DIA", "SPY", "QQQM"]
    assert all(indices[s]["price"] > 0 and isinstance(indices[s]["change_percent"], float)
               for s in ("DIA", "SPY", "QQQM"))
    assert sim.stats()["by_path"]["/finnhub/api/v1/quote"] == 3
    # As the original sent them to its pages.
    flat = market_object(Envelope(1, 1, "a", 1795699800.0, data))
    assert sorted(flat["us_stock_indices"]) == ["DIA", "QQQM", "SPY"]
    assert flat["us_stock_indices"]["SPY"]["status"] == "success"
    assert flat["us_stock_indices"]["SPY"]["name"] == "SPDR S&P 500 ETF"
    # The key went in its header only: in no log line, no URL, no snapshot.
    logged = " ".join(str(getattr(r, "fields", r.getMessage())) for r in caplog.records)
    assert KEY not in logged and KEY not in str(data)
    # Without a key Finnhub is not called at all, and nothing says it failed.
    data = fetch(sim, None, "node-b")
    assert "indices" not in data and "finnhub" not in data["sources"]
    assert sim.stats()["by_path"]["/finnhub/api/v1/quote"] == 3


def test_a_bad_key_is_named_and_costs_nothing_else(sim: SimulatedExchange, caplog) -> None:
    caplog.set_level(logging.WARNING)
    data = fetch(sim, "invalidkey12345")
    assert data["sources"]["finnhub"]["ok"] is False and data["sources"]["finnhub"]["error"] == "unauthorized"
    assert data["indices"] is None and "indices" in data["missing"]
    assert data["prices"]["BTC"]["usd"] > 0
    logged = " ".join(str(getattr(r, "fields", r.getMessage())) for r in caplog.records)
    assert "FINNHUB_API_KEY" in logged  # what to fix
    assert "invalidkey12345" not in logged  # a secret, even a wrong one


def test_past_sixty_a_minute_finnhub_refuses_as_it_does(sim: SimulatedExchange) -> None:
    sim.set_limits(finnhub_per_minute=4)
    data = fetch(sim, KEY, finnhub_interval=0.01)
    assert data["sources"]["finnhub"]["ok"] is True
    data = fetch(sim, KEY, "node-b", finnhub_interval=0.01)  # calls 4..6 of this minute
    assert data["sources"]["finnhub"]["error"] == "rate_limited"
    # Clients get fixed words; Finnhub's own text is in the log only.
    detail = data["sources"]["finnhub"]["detail"]
    assert detail == "the provider's rate limit was reached; waiting as it asks (HTTP 429)"
