"""Every fault of the simulated exchange, through the real fetcher over real HTTP;
and with a real redis-server: health-based step-down, and nothing written when
every provider fails."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import redis

from feed.config.settings import Settings
from feed.election.term import Term
from feed.envelope import Envelope
from feed.errors import FetchFailed
from feed.keys import Keys
from feed.node.node import FeedNode
from feed.observer import Quiet
from feed.providers.budget import RedisBudgetStore
from feed.providers.fetcher import Fetcher, build_fetcher
from feed.redisconn.client import connect
from feed.redisconn.embedded import free_port
from feed.simulator.limits import Limits
from feed.simulator.server import SimulatedExchange

# The three that need no key (Finnhub and CoinMarketCap have tests of their own).
PROVIDERS = ("coingecko", "binance", "feargreed")


def wait_until(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``check`` until truthy; the timeout only catches hangs."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Recorder(Quiet):
    """An observer of upstream calls, as the app's metrics are."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def upstream_call(self, provider: str, outcome: str, seconds: float) -> None:
        self.calls.append((provider, outcome, seconds))

    def count(self, provider: str, outcome: str) -> int:
        return sum(1 for p, o, _ in self.calls if p == provider and o == outcome)


@pytest.fixture
def sim() -> Iterator[SimulatedExchange]:
    with SimulatedExchange(seed=21) as exchange:
        yield exchange


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[Fetcher, Recorder]]]:
    """Build fetchers against a simulator; closes them at the end."""
    made: list[Fetcher] = []

    def factory(sim: SimulatedExchange, node: str = "node-a", **overrides: object
                ) -> tuple[Fetcher, Recorder]:
        # Every endpoint due on every fetch: these tests call the fetcher in a loop.
        options: dict[str, object] = {"sim_url": sim.url, "http_retries": 0,
                                      "http_read_timeout": 2.0, "max_response_bytes": 64 * 1024,
                                      "coingecko_interval": 0.01, "coingecko_market_interval": 0.01,
                                      "feargreed_interval": 0.01,
                                      "binance_interval": 0.01,
                                      # BTC's daily candles have tests of their own (test_indicators.py).
                                      "rsi_interval": 0, "symbols": ("BTC", "ETH", "SOL", "BNB", "XRP")}
        options.update(overrides)
        recorder = Recorder()
        fetcher = build_fetcher(Settings(**options).validate(), node, observer=recorder)
        made.append(fetcher)
        return fetcher, recorder

    yield factory
    for fetcher in made:
        fetcher.close()


def sim_calls(sim: SimulatedExchange, provider: str, node: str | None = None) -> int:
    stats = sim.stats()
    if node is None:
        return stats["by_provider"].get(provider, 0)
    paths = stats["by_node_and_path"].get(node, {})
    return sum(n for path, n in paths.items() if path.startswith(f"/{provider}/"))


# --- malformed bodies ---------------------------------------------------------

MALFORMED = ("not_json", "truncated", "wrong_shape", "nan", "negative", "zero", "huge")


@pytest.mark.parametrize("mode", MALFORMED)
def test_malformed_binance_rejected_prices_fall_back(sim: SimulatedExchange, make, mode: str) -> None:
    sim.inject(provider="binance", malformed=mode)
    fetcher, rec = make(sim)
    data = fetcher()
    assert fetcher.stats[("binance", "invalid")] == 1 and rec.count("binance", "invalid") == 1
    assert data["sources"]["binance"]["ok"] is False
    assert data["sources"]["binance"]["error"] == "invalid"
    # CoinGecko's prices stand in for every symbol; nothing is missing.
    assert {q["source"] for q in data["prices"].values()} == {"simulated:coingecko"}
    assert len(data["prices"]) == 5 and data["missing"] == []
    assert all(q["usd"] > 0 for q in data["prices"].values())


@pytest.mark.parametrize("mode", MALFORMED)
def test_malformed_coingecko_rejected(sim: SimulatedExchange, make, mode: str) -> None:
    sim.inject(provider="coingecko", malformed=mode)
    fetcher, _ = make(sim)
    data = fetcher()
    assert fetcher.stats[("coingecko", "invalid")] == 2  # simple/price and /global
    assert data["market"] is None and data["missing"] == ["market"]
    assert {q["source"] for q in data["prices"].values()} == {"simulated:binance"}
    assert data["sources"]["coingecko"]["failed"] == ["prices", "market"]


@pytest.mark.parametrize("mode", MALFORMED)
def test_malformed_feargreed(sim: SimulatedExchange, make, mode: str) -> None:
    sim.inject(provider="feargreed", malformed=mode)
    fetcher, _ = make(sim)
    data = fetcher()
    if mode == "zero":
        # 0 is a legal reading of the index ("Extreme Fear"), not a broken answer.
        assert fetcher.stats[("feargreed", "ok")] == 1 and data["sentiment"]["value"] == 0
        return
    assert fetcher.stats[("feargreed", "invalid")] == 1
    assert data["sentiment"] is None and data["missing"] == ["sentiment"]
    assert data["market"] is not None and len(data["prices"]) == 5


# --- oversized bodies ------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_body_rejected(sim: SimulatedExchange, make, chunked: bool) -> None:
    # chunked: no Content-Length at all, so only the streamed read can catch it.
    sim.inject(provider="feargreed", oversized_bytes=5_000_000, chunked=chunked)
    fetcher, rec = make(sim, max_response_bytes=64 * 1024)
    data = fetcher()
    assert fetcher.stats[("feargreed", "too_large")] == 1 and rec.count("feargreed", "too_large") == 1
    assert "sentiment" in data["missing"]
    assert data["sources"]["feargreed"]["error"] == "too_large"
    # Below the cap the same padded answer is fine: the cap, not the shape, refused it.
    sim.inject(provider="feargreed", oversized_bytes=10_000, chunked=chunked)
    assert fetcher()["sentiment"] is not None


# --- HTTP errors, retries ---------------------------------------------------------


def test_error_rate_retried_then_counted(sim: SimulatedExchange, make) -> None:
    sim.inject(provider="binance", error_rate=1.0)
    fetcher, rec = make(sim, http_retries=2)
    data = fetcher()
    # One call, two retries: three attempts, each seen by on_call and by the simulator.
    assert fetcher.stats[("binance", "http_error")] == 3 == rec.count("binance", "http_error")
    assert sim_calls(sim, "binance") == 3
    assert data["sources"]["binance"]["error"] == "http_error"
    assert {q["source"] for q in data["prices"].values()} == {"simulated:coingecko"}


def test_one_500_then_retry_succeeds(sim: SimulatedExchange, make) -> None:
    sim.inject(provider="binance", status=500, times=1)
    fetcher, _ = make(sim, http_retries=2)
    data = fetcher()
    # The symbol lookup got the 500 (and its retry succeeded), then the ticker.
    assert fetcher.stats[("binance", "http_error")] == 1 and fetcher.stats[("binance", "ok")] == 2
    assert data["sources"]["binance"]["ok"] is True and "error" not in data["sources"]["binance"]
    assert {q["source"] for q in data["prices"].values()} == {"simulated:binance"}


def test_a_source_that_stays_down_gets_one_probe_per_due_time(sim: SimulatedExchange, make) -> None:
    # The first failure may be a blip: retried. Once failing, each due time is one call,
    # so a source that stays down costs what its back-off allows, not three times that.
    sim.inject(provider="feargreed", status=500)
    fetcher, _ = make(sim, http_retries=2, providers=("binance", "feargreed"))
    seen = []
    for _ in range(3):
        seen.append(fetcher()["sources"]["feargreed"].get("error"))
        time.sleep(0.05)  # past the back-off (the cadence here is 0.01 s)
    assert seen == ["http_error"] * 3
    assert sim.stats()["by_provider_status"]["feargreed"] == {"500": 3 + 1 + 1}
    sim.clear_faults()
    time.sleep(0.05)
    assert fetcher()["sources"]["feargreed"]["ok"] is True


def test_4xx_is_not_retried(sim: SimulatedExchange, make) -> None:
    sim.inject(provider="feargreed", status=404)
    fetcher, _ = make(sim, http_retries=3)
    data = fetcher()
    assert fetcher.stats[("feargreed", "http_error")] == 1 and sim_calls(sim, "feargreed") == 1
    assert data["missing"] == ["sentiment"]


def test_latency_within_timeout_is_fine(sim: SimulatedExchange, make) -> None:
    sim.inject(latency_ms=100)
    fetcher, _ = make(sim)
    data = fetcher()
    # The symbol lookup and four calls.
    assert data["missing"] == [] and sum(fetcher.stats[(p, "ok")] for p in PROVIDERS) == 5


def test_latency_beyond_read_timeout_is_a_timeout(sim: SimulatedExchange, make) -> None:
    sim.inject(provider="coingecko", latency_ms=1500)
    fetcher, rec = make(sim, http_read_timeout=0.3)
    data = fetcher()
    assert fetcher.stats[("coingecko", "timeout")] == 2 == rec.count("coingecko", "timeout")
    assert data["missing"] == ["market"]
    assert {q["source"] for q in data["prices"].values()} == {"simulated:binance"}


def test_stall_is_a_timeout_and_others_still_arrive(sim: SimulatedExchange, make) -> None:
    sim.inject(provider="binance", stall_s=30)
    fetcher, _ = make(sim, http_read_timeout=0.3)
    started = time.monotonic()
    data = fetcher()
    assert time.monotonic() - started < 10  # bounded; only a hang would fail this
    assert fetcher.stats[("binance", "timeout")] == 1
    assert data["sources"]["binance"]["error"] == "timeout"
    assert len(data["prices"]) == 5 and data["market"] and data["sentiment"]


def test_whole_fetch_bounded_by_budget(sim: SimulatedExchange, make) -> None:
    # Read timeout (5 s) longer than the budget (0.8 x 1 s, at least 1 s):
    # every wait is clamped to what is left of the fetch.
    sim.inject(stall_s=30)
    fetcher, _ = make(sim, fetch_interval=1.0, http_read_timeout=5.0, http_retries=3)
    assert fetcher.deadline == 1.0
    started = time.monotonic()
    with pytest.raises(FetchFailed) as info:
        fetcher()
    assert time.monotonic() - started < 4.5  # generous: a hang would take 5 s x 4 tries
    assert info.value.failures == {p: "timeout" for p in PROVIDERS}


def test_connection_refused(sim: SimulatedExchange, make) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    fetcher, rec = make(sim, binance_url=dead, http_retries=1)
    data = fetcher()
    assert fetcher.stats[("binance", "connection_error")] == 2  # first try and one retry
    assert rec.count("binance", "connection_error") == 2
    assert data["sources"]["binance"]["error"] == "connection_error"
    assert {q["source"] for q in data["prices"].values()} == {"simulated:coingecko"}


# --- Retry-After ----------------------------------------------------------------


def test_retry_after_honoured_across_fetches(sim: SimulatedExchange, make) -> None:
    sim.inject(provider="binance", status=429, retry_after=1)
    fetcher, rec = make(sim, http_retries=2)
    first = fetcher()
    assert fetcher.stats[("binance", "rate_limited")] == 1  # a 429 is not retried at once
    assert sim_calls(sim, "binance") == 1
    assert first["sources"]["binance"]["error"] == "rate_limited"
    sim.clear_faults()  # the exchange would answer now, but we promised to wait
    skipped = 0
    while fetcher.blocked_for("binance") > 0.05:
        data = fetcher()
        skipped += 1
        assert sim_calls(sim, "binance") == 1, "called before Retry-After expired"
        assert data["sources"]["binance"]["error"] == "rate_limited"
        assert data["sources"]["binance"]["retry_after_s"] > 0
        assert data["sources"]["binance"]["blocked_for_s"] > 0
        assert {q["source"] for q in data["prices"].values()} == {"simulated:coingecko"}
        time.sleep(0.1)
    assert skipped >= 1
    assert fetcher.stats[("binance", "skipped")] == skipped
    assert all(s == 0.0 for p, o, s in rec.calls if o == "skipped")
    wait_until(lambda: fetcher.blocked_for("binance") == 0, 5, "the Retry-After to pass")
    data = fetcher()
    # The symbol lookup the 429 refused, then the ticker.
    assert data["sources"]["binance"]["ok"] is True and sim_calls(sim, "binance") == 3


def test_a_keyed_coingecko_429_waits_until_its_window_resets() -> None:
    # CoinGecko's keyed 429 has no Retry-After but says when its window ends
    # (x-ratelimit-reset): the cluster waits until then, not its own 60 s.
    limits = Limits(coingecko_demo_per_minute=1, window_s=3)
    with SimulatedExchange(seed=5, limits=limits, demo_keys=["CG-demo"]) as sim:
        settings = Settings(sim_url=sim.url, coingecko_api_key="CG-demo", providers=("coingecko",),
                            coingecko_interval=0.01, coingecko_market_interval=0.01, http_retries=0)
        fetcher = build_fetcher(settings.validate(), "node-a")
        try:
            try:
                data = fetcher()
            except FetchFailed as exc:
                data = exc.data
            assert sim.stats()["limits_applied"] == {"coingecko_429_demo": 1}
            source = data["sources"]["coingecko"]
            assert source["error"] == "rate_limited"
            assert 0 < source["blocked_for_s"] <= 4.5, source  # the window's end, not 60 s
            wait_until(lambda: fetcher.blocked_for("coingecko") == 0, 10, "the window to reset")
        finally:
            fetcher.close()


def test_429_without_retry_after_still_backs_off(sim: SimulatedExchange, make) -> None:
    sim.inject(provider="feargreed", status=429, times=1)
    fetcher, _ = make(sim)
    fetcher()
    assert fetcher.blocked_for("feargreed") > 20  # the default back-off, not zero
    fetcher()
    assert sim_calls(sim, "feargreed") == 1 and fetcher.stats[("feargreed", "skipped")] == 1


# --- partial and total failure -------------------------------------------------------


@pytest.mark.parametrize(("down", "missing"), [
    (("binance",), []),
    (("coingecko",), ["market"]),
    (("feargreed",), ["sentiment"]),
    (("binance", "coingecko"), ["prices", "market"]),
    (("coingecko", "feargreed"), ["market", "sentiment"]),
])
def test_partial_snapshots(sim: SimulatedExchange, make, down: tuple[str, ...], missing: list[str]) -> None:
    for provider in down:
        sim.inject(provider=provider, status=503)
    fetcher, _ = make(sim)
    data = fetcher()
    assert data["missing"] == missing
    for provider in PROVIDERS:
        assert data["sources"][provider]["ok"] is (provider not in down)
    if "feargreed" not in down:
        assert data["sentiment"]["source"] == "simulated:feargreed"


def test_every_provider_down_raises_fetch_failed(sim: SimulatedExchange, make) -> None:
    sim.inject(status=500)
    fetcher, _ = make(sim)
    with pytest.raises(FetchFailed) as info:
        fetcher()
    assert info.value.failures == {p: "http_error" for p in PROVIDERS}


# --- the simulator's counts match the fetchers', per node ------------------------------


def test_sim_counts_match_fetcher_counts_per_node(sim: SimulatedExchange, make) -> None:
    sim.inject(provider="binance", error_rate=0.5)  # seeded: some attempts fail, some retry
    sim.inject(provider="feargreed", status=429, retry_after=30, times=1)
    a, rec_a = make(sim, node="node-a", http_retries=1)
    b, rec_b = make(sim, node="node-b", http_retries=1)
    for _ in range(4):
        for fetcher in (a, b):
            fetcher()
    for fetcher, rec in ((a, rec_a), (b, rec_b)):
        for provider in PROVIDERS:
            sent = sum(n for (p, o), n in fetcher.stats.items() if p == provider and o != "skipped")
            assert sent == sim_calls(sim, provider, fetcher.node_id), (fetcher.node_id, provider)
        assert Counter((p, o) for p, o, _ in rec.calls) == fetcher.stats
    assert set(sim.stats()["by_node"]) == {"node-a", "node-b"}
    # The one 429 went to exactly one node, which then held off; the other did not.
    limited = [f for f in (a, b) if f.stats[("feargreed", "rate_limited")]]
    assert len(limited) == 1 and limited[0].stats[("feargreed", "skipped")] == 3


# --- with a real Redis: step-down and "nothing written" ----------------------------------


def node_settings(redis_url: str, sim: SimulatedExchange, **overrides: object) -> Settings:
    options: dict[str, object] = {
        "redis_url": redis_url, "sim_url": sim.url, "lock_ttl": 1.0, "renew_interval": 0.3,
        "lease_margin": 0.2, "fetch_interval": 0.2, "cache_ttl": 30.0, "http_retries": 0,
    }
    options.update(overrides)
    return Settings(**options).validate()


def read_snapshot(client: redis.Redis) -> Envelope | None:
    raw = client.get(Keys().data)
    return None if raw is None else Envelope.from_json(raw)


def test_step_down_after_failures_moves_leadership(redis_url: str, rclient: redis.Redis) -> None:
    with SimulatedExchange() as bad, SimulatedExchange() as good:
        bad.inject(status=500)  # every provider fails for node A only
        sa = node_settings(redis_url, bad, step_down_after=3)
        sb = node_settings(redis_url, good, step_down_after=3)
        fa, fb = build_fetcher(sa, "node-a"), build_fetcher(sb, "node-b")
        lost: list[dict] = []

        class Events(Quiet):
            def lost(self, node: str, epoch: int, reason: str) -> None:
                lost.append({"node": node, "epoch": epoch, "reason": reason})

        ca, cb = connect(redis_url), connect(redis_url)
        a = FeedNode(sa, ca, fetch=fa, node_id="node-a", observer=Events())
        b = FeedNode(sb, cb, fetch=fb, node_id="node-b")
        try:
            a.start()
            wait_until(lambda: a.is_leader, 5, "node A to lead")
            b.start()
            wait_until(lambda: rclient.get(Keys().leader) == b"node-b", 10, "node B to take over")
            wait_until(lambda: (s := read_snapshot(rclient)) is not None and s.leader == "node-b",
                       5, "node B's first snapshot")
            assert not a.is_leader
            assert any(e.get("reason") == "stepped_down" for e in lost)
            stream = rclient.xrange(Keys().leadership_log)
            assert any(f.get(b"event") == b"stepped_down" and f.get(b"node") == b"node-a"
                       for _, f in stream)
            # A failed at least N fetches in a row before giving up.
            assert sum(n for (_, o), n in fa.stats.items() if o == "http_error") >= 3
            assert set(bad.stats()["by_node"]) == {"node-a"}
            assert set(good.stats()["by_node"]) == {"node-b"}
            snapshot = read_snapshot(rclient)
            assert snapshot is not None and snapshot.data["missing"] == []
        finally:
            a.stop()
            b.stop()
            fa.close()
            fb.close()
            ca.close()
            cb.close()


def test_every_provider_failing_keeps_sections_then_writes_nothing(redis_url: str,
                                                                   rclient: redis.Redis) -> None:
    """Nothing vanishes at once: kept sections go out flagged stale, until their maximum age."""
    with SimulatedExchange() as sim:
        s = node_settings(redis_url, sim, step_down_after=0, coingecko_interval=0.2,
                          coingecko_market_interval=0.2, feargreed_interval=0.2, section_max_age=1.5)
        fetcher = build_fetcher(s, "node-w")
        client = connect(redis_url)
        node = FeedNode(s, client, fetch=fetcher, node_id="node-w")
        try:
            node.start()
            wait_until(lambda: (e := read_snapshot(rclient)) is not None and e.seq >= 2, 10,
                       "two snapshots")
            good = read_snapshot(rclient)
            sim.inject(status=500)
            wait_until(lambda: node.leader.failures >= 1, 5, "a failed fetch")
            # The failed fetches still publish the last good sections, marked stale as they age.
            kept = wait_until(lambda: (e := read_snapshot(rclient)) is not None and e.sections_stale and e,
                              5, "a snapshot of stale sections")
            assert kept.data["prices"].keys() == good.data["prices"].keys()
            assert kept.data["prices"]["BTC"]["fetched_at"] <= good.data["prices"]["BTC"]["fetched_at"] \
                or kept.data["prices"]["BTC"]["usd"] > 0
            assert all(not src["ok"] for src in kept.data["sources"].values())
            # Past their maximum age nothing is left: nothing is written any more.
            wait_until(lambda: node.leader.failures >= 12, 10, "more failed fetches")
            before = read_snapshot(rclient)
            calls_before = sim.stats()["total"]
            wait_until(lambda: node.leader.failures >= 16, 10, "more failed fetches")
            after = read_snapshot(rclient)
            assert before is not None and after is not None
            assert after.key == before.key and after.fetched_at == before.fetched_at
            assert sim.stats()["total"] > calls_before  # it kept trying upstream
            assert node.is_leader and node.role == "leader"  # and kept running
            assert rclient.get(Keys().leader) == b"node-w"
            sim.clear_faults()
            wait_until(lambda: (e := read_snapshot(rclient)) is not None and e.seq > before.seq
                       and not e.sections_stale, 10, "a fresh snapshot once the upstream recovers")
            assert node.leader.failures == 0
        finally:
            node.stop()
            fetcher.close()
            client.close()


def test_the_schedule_is_the_budget_s_and_a_publish_does_not_move_it(
        redis_url: str, rclient: redis.Redis, sim: SimulatedExchange) -> None:
    # Two fetchers as two leaders of one cluster, one after the other.
    settings = node_settings(redis_url, sim, fetch_interval=5.0, providers=("binance",))
    store = RedisBudgetStore(rclient, Keys())
    first, second = (build_fetcher(settings, n, store=store) for n in ("node-a", "node-b"))
    try:
        rclient.set(Keys().leader, "node-a")
        rclient.set(Keys().epoch, 7)
        term = Term("node-a", 7)
        began = time.time()
        first(term)
        due = first.next_due(term)
        assert due is not None and began + 5.0 - 0.001 <= due <= time.time() + 5.0  # stored in ms
        # A publish between fetches (a newer snapshot, as a stream tick would
        # make) changes neither this leader's schedule nor the next one's.
        later = Envelope(7, 9, "node-a", time.time() + 3.0, {"prices": {}}, published_at=time.time() + 3.0)
        first.sections.adopt(later, ("binance",))
        assert first.next_due(term) == due
        rclient.set(Keys().leader, "node-b")
        rclient.set(Keys().epoch, 8)
        assert second.next_due(Term("node-b", 8)) == due  # the handover keeps it
    finally:
        first.close()
        second.close()


def test_an_error_page_reaches_the_log_not_the_clients(sim: SimulatedExchange, make, caplog) -> None:
    # Binance's CDN answers 403 with an HTML page; CoinGecko a 503 with its own words.
    caplog.set_level(logging.WARNING)
    sim.inject(provider="binance", status=403)
    sim.inject(provider="coingecko", status=503)
    fetcher, _ = make(sim)
    try:
        fetcher()
    except FetchFailed as exc:
        data = exc.data
    else:
        data = None
    assert data is None or all("<" not in (s.get("detail") or "") for s in data["sources"].values())
    sim.clear_faults(provider="coingecko")
    data = fetcher()
    binance = data["sources"]["binance"]
    assert binance["detail"] == "the provider's firewall refused the call (HTTP 403)"
    # The page itself is in the operator's log, trimmed.
    logged = [getattr(r, "fields", {}) for r in caplog.records]
    pages = [f["detail"] for f in logged
             if f.get("event") == "upstream_call_failed" and f.get("provider") == "binance"]
    assert pages and all(len(p) <= 300 for p in pages) and any("HTTP 403" in p for p in pages)


def test_an_error_answered_with_200_is_invalid_not_empty(sim: SimulatedExchange, make) -> None:
    # CoinGecko sometimes answers its error object with HTTP 200: no success, no "unknown" coins.
    sim.inject(provider="coingecko", malformed="error_200")
    fetcher, _ = make(sim, providers=("coingecko", "binance"))
    data = fetcher()
    cg = data["sources"]["coingecko"]
    assert cg["ok"] is False and cg["error"] == "invalid" and "unknown" not in cg
    assert sorted(cg["failed"]) == ["market", "prices"]
    assert {q["source"] for q in data["prices"].values()} == {"simulated:binance"}


@pytest.mark.parametrize("provider", ["coingecko", "binance"])
def test_one_coin_priced_zero_drops_that_coin_not_the_batch(sim: SimulatedExchange, make, caplog,
                                                           provider: str) -> None:
    caplog.set_level(logging.WARNING)
    sim.inject(provider=provider, malformed="one_zero")
    fetcher, _ = make(sim, providers=(provider,))
    data = fetcher()
    rejected = [getattr(r, "fields", {}) for r in caplog.records
                if getattr(r, "fields", {}).get("event") == "quotes_rejected"]
    assert len(rejected) == 1 and len(rejected[0]["symbols"]) == 1
    bad = rejected[0]["symbols"][0]
    # The others are priced; the bad one is missing, not "unknown"; the provider is fine.
    assert bad not in data["prices"] and len(data["prices"]) == 4
    assert f"prices.{bad}" in data["missing"]
    src = data["sources"][provider]
    assert "prices" not in src.get("failed", []) and bad not in src.get("unknown", [])
    fetcher()
    assert len([r for r in caplog.records if getattr(r, "fields", {}).get("event") == "quotes_rejected"]) == 1


def test_the_node_header_goes_to_the_simulator_only(sim: SimulatedExchange, make) -> None:
    # UPSTREAM=sim, but CoinGecko overridden to another host (here a second exchange standing in
    # for a real one): our node id names a host and a pid, so it goes to SIM_URL's exchange only.
    with SimulatedExchange(seed=3) as elsewhere:
        fetcher, _ = make(sim, coingecko_url=f"{elsewhere.url}/coingecko")
        fetcher()
        assert set(elsewhere.stats()["by_node"]) == {"unknown"} and elsewhere.stats()["total"] == 2
    assert set(sim.stats()["by_node"]) == {"node-a"}


def test_only_good_answers_cost_a_credit(sim: SimulatedExchange, make) -> None:
    # A plan of 2 credits a month: two refused calls first, then two good ones. The quota is
    # reached after the 2nd good answer, not after the 2nd call (CoinGecko's Demo docs: only
    # successful calls use credits).
    sim.inject(provider="coingecko", status=500, times=2)
    fetcher, _ = make(sim, providers=("coingecko",), coingecko_monthly_calls=2, fetch_interval=0.01)
    seen = []
    for _ in range(5):
        try:
            data = fetcher()
        except FetchFailed as exc:
            data = exc.data
        seen.append(data and data["sources"]["coingecko"].get("error"))
        time.sleep(0.02)
    counts = sim.stats()["by_provider_status"]["coingecko"]
    assert counts == {"500": 2, "200": 2}, counts
    assert seen[-1] == "quota", seen


def test_the_docs_back_off_table_is_the_code_s() -> None:
    from pathlib import Path

    from feed.providers.fetcher import BLOCKS

    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROVIDERS.md").read_text()
    table = doc.split("| outcome | first block | doubling on each incident in a row, up to |", 1)[1]
    units = {"s": 1, "min": 60, "h": 3600, "day": 86400, "days": 86400}

    def seconds(text: str) -> float:
        parts = text.split()
        return sum(float(n) * units[u] for n, u in zip(parts[::2], parts[1::2], strict=True))

    rows = {}
    for line in table.strip().splitlines()[1:]:
        if not line.startswith("|"):
            break
        outcome, first, longest = (c.strip() for c in line.strip("|").split("|"))
        rows[outcome.split("`")[1]] = (seconds(first), seconds(longest))
    assert rows == {k: v for k, v in BLOCKS.items() if k != "quota"}


def test_back_off_forgets_after_a_good_answer(sim: SimulatedExchange, make) -> None:
    # A 403 (no Retry-After) blocks for 10 min; after it ended and a call succeeded, the
    # next 403 is a first block again, not a doubled one.
    fetcher, _ = make(sim, providers=("feargreed",))
    clock = [time.time()]
    fetcher.budget.clock = lambda: clock[0]
    fetcher.wall = lambda: clock[0]
    sim.inject(provider="feargreed", status=403, times=1)
    with pytest.raises(FetchFailed) as info:
        fetcher()
    assert info.value.data is None or info.value.data["sources"]["feargreed"]["blocked_for_s"] == 600.0
    clock[0] += 601
    assert fetcher()["sources"]["feargreed"]["ok"] is True
    clock[0] += 3601
    sim.inject(provider="feargreed", status=403, times=1)
    with pytest.raises(FetchFailed):
        fetcher()
    assert fetcher.budget.block("feargreed").repeats == 1
    assert round(fetcher.budget.block("feargreed").until - clock[0]) == 600


def test_two_endpoints_refused_in_one_tick_are_one_incident(sim: SimulatedExchange, make, caplog) -> None:
    # CoinGecko's prices and market both answer 429 without Retry-After: a first block, 60 s, one line.
    caplog.set_level(logging.WARNING)
    sim.inject(provider="coingecko", status=429)
    fetcher, _ = make(sim, providers=("coingecko", "binance"))
    data = fetcher()
    assert data["sources"]["coingecko"]["blocked_for_s"] == 60.0
    blocked = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "upstream_blocked"]
    assert len(blocked) == 1 and blocked[0].fields["blocked_for_s"] == 60.0


def test_each_coingecko_endpoint_at_its_cache_time(sim: SimulatedExchange) -> None:
    # Defaults, keyless: /simple/price every 60 s, /global every 10 minutes (CoinGecko's cache times).
    fetcher = build_fetcher(Settings(sim_url=sim.url, providers=("coingecko",), symbols=("BTC",),
                                     http_retries=0), "node-a")
    clock = [time.time()]
    fetcher.budget.clock = lambda: clock[0]
    fetcher.wall = lambda: clock[0]
    try:
        for _ in range(21):  # twenty minutes, a tick every minute
            fetcher()
            clock[0] += 60.5
    finally:
        fetcher.close()
    paths = sim.stats()["by_path"]
    assert paths["/coingecko/api/v3/simple/price"] == 21
    assert paths["/coingecko/api/v3/global"] == 3  # at 0, ~10 and ~20 minutes


def test_matic_after_the_pol_migration_comes_from_coingecko(sim: SimulatedExchange, make) -> None:
    # Binance lists MATICUSDT with status BREAK: not asked for on the ticker, named unknown there.
    fetcher, _ = make(sim, symbols=("BTC", "MATIC"), providers=("binance", "coingecko"))
    data = fetcher()
    assert data["sources"]["binance"]["unknown"] == ["MATIC"]
    assert data["prices"]["MATIC"]["source"] == "simulated:coingecko"
    assert data["prices"]["BTC"]["source"] == "simulated:binance"
    assert sim.stats()["by_provider_status"]["binance"].get("400", 0) == 0  # never a -1121 batch


def test_a_refusal_stands_when_another_endpoint_answers_in_the_same_tick(sim: SimulatedExchange,
                                                                          make) -> None:
    # One 429 (the first call of the tick), the other endpoint answers: CoinGecko stays blocked.
    sim.inject(provider="coingecko", status=429, times=1)
    fetcher, _ = make(sim, providers=("coingecko", "binance"))
    data = fetcher()
    assert data["sources"]["coingecko"]["blocked_for_s"] == 60.0
    assert fetcher.blocked_for("coingecko") > 50
