"""The live upstreams at the service's default timing, against a stand-in that answers like them.

Marked ``standin`` (not in the default run; about 5 minutes):

    .venv/bin/python -m pytest -m standin -s

Two instances of 2 workers with ``UPSTREAM=live``, every base URL pointed at
the simulated exchange, which behaves as the real APIs do from a US cloud
region: Binance refuses with 451 "restricted location", CoinGecko allows a
keyless IP 10 calls a minute and answers past that with 429 and no
Retry-After. Default timing: fetch every 5 s, TTL 10 s, CoinGecko's prices every
60 s (its cache) and `/global` every 10 minutes.

1. One minute of service: Binance is called at most twice after its 451, at
   most one CoinGecko call gets a 429, and every snapshot carries every
   configured price and the market section (fresh, or the last good one
   with its age).
2. CoinGecko answers 429 with Retry-After 120; then the leader's whole
   instance is killed (SIGKILL to master and workers): the new leader makes
   no CoinGecko call before the 120 s have passed, and calls it after.

The figures are printed, written to tests/artifacts/live_standin.json and
published in docs/PROVIDERS.md.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import ExitStack

import pytest
import requests

from lab.clients import RecordingClient
from tests.support.service import Instance
from tests.test_cluster import wait_leader
from tests.test_live_upstreams import live_env, provider_calls, sim_stats

pytestmark = pytest.mark.standin

DEFAULTS = {"FETCH_INTERVAL_SECONDS": "5", "LOCK_TTL_SECONDS": "10", "RENEW_INTERVAL_SECONDS": "3",
            "LEASE_MARGIN_SECONDS": "2", "CACHE_TTL_SECONDS": "10", "REDIS_TIMEOUT_SECONDS": "2",
            # The upstream cadences at their defaults (live_env shortens them for the fast tests).
            "COINGECKO_INTERVAL_SECONDS": "0", "COINGECKO_MARKET_INTERVAL_SECONDS": "600",
            "FEAR_GREED_INTERVAL_SECONDS": "3600"}
SYMBOLS = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "LINK"]


@pytest.mark.timeout(900)
def test_live_upstreams_at_default_timing(stack: ExitStack, redis_proc, rclient, sim, artifacts) -> None:
    requests.post(f"{sim.url}/_sim/limits", json={"coingecko_keyless_per_minute": 10},
                  timeout=5).raise_for_status()
    requests.post(f"{sim.url}/_sim/faults", json={"provider": "binance", "status": 451},
                  timeout=5).raise_for_status()
    env = {**live_env(sim.url), **DEFAULTS}
    insts = []
    for i in range(2):
        inst = Instance(f"live{i}", workers=2, redis_url=redis_proc.url, env=env)
        stack.callback(inst.stop)
        insts.append(inst)
    for inst in insts:
        inst.wait_ready()
    clients = []
    for inst in insts:
        c = RecordingClient(inst.ws_url, name=inst.name, reconnect=True).start()
        stack.callback(c.close)
        clients.append(c)
    for c in clients:
        c.wait_snapshots(1, 30)

    # 1. A minute of service.
    time.sleep(60)
    stats = sim_stats(sim.url)
    snaps = [s for c in clients for s in c.snapshots()]
    complete = [s for s in snaps if sorted(s["data"]["prices"]) == sorted(SYMBOLS) and s["data"]["market"]]
    minute = {"binance_calls": provider_calls(sim.url, "binance"),
              "binance_451": provider_calls(sim.url, "binance", "451"),
              "coingecko_calls": provider_calls(sim.url, "coingecko"),
              "coingecko_429": provider_calls(sim.url, "coingecko", "429"),
              "feargreed_calls": provider_calls(sim.url, "feargreed"),
              "snapshots": len(snaps), "complete_snapshots": len(complete),
              "by_provider_status": stats["by_provider_status"]}
    print(json.dumps({"minute": minute}, indent=2))
    assert minute["binance_451"] >= 1 and minute["binance_calls"] <= 1 + 2
    assert minute["coingecko_429"] <= 1
    assert minute["complete_snapshots"] == minute["snapshots"] > 20
    for s in snaps:
        assert s["data"]["sources"]["coingecko"]["sections"]["prices"]["age_s"] < 70
    blocked = [e for inst in insts for e in inst.proc.lines if e.get("event") == "upstream_blocked"]
    assert len(blocked) == 1 and blocked[0]["provider"] == "binance"

    # 2. A 429 with Retry-After 120, then the leader's whole instance dies.
    requests.post(f"{sim.url}/_sim/faults", json={"provider": "coingecko", "status": 429,
                                                  "retry_after": 120, "times": 1},
                  timeout=5).raise_for_status()
    before_429 = provider_calls(sim.url, "coingecko", "429")
    deadline = time.monotonic() + 75  # CoinGecko is called once a minute
    while provider_calls(sim.url, "coingecko", "429") == before_429:
        assert time.monotonic() < deadline, "CoinGecko was not called within its cadence"
        time.sleep(0.2)
    refused = time.monotonic()
    calls_at_429 = provider_calls(sim.url, "coingecko")
    time.sleep(1.0)  # the leader writes the block with its tick
    leader = wait_leader(rclient)
    owner = next(i for i in insts if leader in i.nodes)
    os.killpg(owner.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    new = wait_leader(rclient, timeout=30, not_=leader)
    took_over = time.monotonic()
    while time.monotonic() - refused < 119:
        assert provider_calls(sim.url, "coingecko") == calls_at_429, \
            f"CoinGecko called {time.monotonic() - refused:.1f} s after a 429 with Retry-After 120"
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while provider_calls(sim.url, "coingecko") == calls_at_429:
        assert time.monotonic() < deadline, "CoinGecko not called again after the Retry-After"
        time.sleep(0.2)
    resumed = time.monotonic() - refused
    failover = {"new_leader": new, "killed_after_429_s": round(killed - refused, 1),
                "new_leader_after_kill_s": round(took_over - killed, 1),
                "first_coingecko_call_after_429_s": round(resumed, 1)}
    print(json.dumps({"retry_after_across_failover": failover}, indent=2))
    assert resumed >= 119
    (artifacts / "live_standin.json").write_text(json.dumps(
        {"minute": minute, "retry_after_across_failover": failover}, indent=2))
