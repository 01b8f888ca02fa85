"""The upstream APIs as they really behave, through the running service.

Real Gunicorn instances with ``UPSTREAM=live`` and their base URLs pointed at
the simulated exchange, which answers as the real APIs do (Binance's 451 from
a restricted region, CoinGecko's 429 and keys, unknown symbols); real Redis,
real WebSocket clients. Timing is scaled down (fetch every 0.5 s, CoinGecko
every 1 s) and so are the waits; tests/test_live_standin.py runs the same at
the default timing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import ExitStack

import psutil
import requests

from lab.clients import RecordingClient
from tests.support.service import Instance
from tests.test_cluster import wait_leader

# The default SYMBOLS: the original service's seven coins.
SYMBOLS = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "LINK"]


def live_env(sim_url: str, **extra: str) -> dict[str, str]:
    return {"UPSTREAM": "live", "COINGECKO_BASE_URL": f"{sim_url}/coingecko",
            "BINANCE_BASE_URL": f"{sim_url}/binance", "FEAR_GREED_BASE_URL": f"{sim_url}/feargreed",
            "COINGECKO_INTERVAL_SECONDS": "1", "COINGECKO_MARKET_INTERVAL_SECONDS": "1",
            "FEAR_GREED_INTERVAL_SECONDS": "1", **extra}


def start(stack: ExitStack, n: int, redis_url: str, env: dict[str, str], workers: int = 1) -> list[Instance]:
    insts = []
    for i in range(n):
        inst = Instance(f"lv{i}", workers=workers, redis_url=redis_url, env=env)
        stack.callback(inst.stop)
        insts.append(inst)
    for inst in insts:
        inst.wait_ready()
    return insts


def watch(stack: ExitStack, inst: Instance, name: str) -> RecordingClient:
    c = RecordingClient(inst.ws_url, name=name, reconnect=True).start()
    stack.callback(c.close)
    return c


def sim_stats(sim_url: str) -> dict:
    return requests.get(f"{sim_url}/_sim/stats", timeout=5).json()


def provider_calls(sim_url: str, provider: str, status: str | None = None) -> int:
    counts = sim_stats(sim_url)["by_provider_status"].get(provider, {})
    return counts.get(status, 0) if status else sum(counts.values())


def fault(sim_url: str, **body: object) -> None:
    requests.post(f"{sim_url}/_sim/faults", json=body, timeout=5).raise_for_status()


def output(insts: list[Instance]) -> list[dict]:
    return [e for inst in insts for e in inst.proc.lines]


def test_a_451_from_binance_blocks_it_for_the_whole_cluster(stack, redis_proc, rclient, sim) -> None:
    fault(sim.url, provider="binance", status=451)
    insts = start(stack, 2, redis_proc.url, live_env(sim.url), workers=2)
    clients = [watch(stack, inst, f"c{i}") for i, inst in enumerate(insts)]
    for c in clients:
        c.wait_snapshots(8, 20)
    # Binance was asked once (the symbol lookup), refused, and left alone.
    assert provider_calls(sim.url, "binance") == provider_calls(sim.url, "binance", "451") == 1
    blocked = [e for e in output(insts) if e.get("event") == "upstream_blocked"]
    assert len(blocked) == 1, blocked
    assert blocked[0]["level"] == "error" and blocked[0]["outcome"] == "restricted"
    # The operator's log has Binance's own words; clients and /status get fixed ones.
    assert "BINANCE_BASE_URL" in blocked[0]["fix"] and "restricted location" in blocked[0]["detail"]
    # Every snapshot has every price (from CoinGecko) and the market section.
    for c in clients:
        for snap in c.snapshots():
            data = snap["data"]
            assert sorted(data["prices"]) == sorted(SYMBOLS), data["missing"]
            assert {q["source"] for q in data["prices"].values()} == {"coingecko"}
            assert data["market"] is not None
            binance = data["sources"]["binance"]
            assert binance["ok"] is False and binance["error"] == "restricted"
            assert binance["detail"] == "the provider refuses this region (HTTP 451, code 0)"
            assert binance["blocked_for_s"] > 3000
    upstream = insts[0].get("/status").json()["cluster"]["upstream"]
    # Only the providers that run: Finnhub and CoinMarketCap have no key here.
    assert set(upstream) == {"coingecko", "binance", "feargreed"}
    view = upstream["binance"]
    assert view["blocked"]["outcome"] == "restricted" and view["blocked"]["status"] == 451
    # Our node ids go to the simulator only, never to a third party (UPSTREAM=live).
    assert set(sim_stats(sim.url)["by_node"]) == {"unknown"}

    # A new leader (the old one's worker killed) honours the block it finds in Redis.
    leader = wait_leader(rclient)
    owner = next(i for i in insts if leader in i.nodes)
    psutil.Process(owner.nodes[leader]).kill()
    wait_leader(rclient, timeout=10, not_=leader)
    n = len(clients[0].snapshots())
    clients[0].wait_snapshots(n + 6, 20)
    assert provider_calls(sim.url, "binance") == 1
    assert len([e for e in output(insts) if e.get("event") == "upstream_blocked"]) == 1


def test_a_retry_after_outlives_the_leaders_whole_instance(stack, redis_proc, rclient, sim) -> None:
    insts = start(stack, 2, redis_proc.url, live_env(sim.url))
    watcher = watch(stack, insts[0], "w0")
    watcher.wait_snapshots(2, 20)
    fault(sim.url, provider="coingecko", status=429, retry_after=12, times=1)
    deadline = time.monotonic() + 10
    while provider_calls(sim.url, "coingecko", "429") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    refused_at = time.monotonic()
    assert provider_calls(sim.url, "coingecko", "429") == 1
    time.sleep(0.5)  # the leader writes the block with its tick
    before = provider_calls(sim.url, "coingecko")
    # SIGKILL to the leader's whole instance, master and workers, as a container kill.
    leader = wait_leader(rclient)
    owner = next(i for i in insts if leader in i.nodes)
    survivor = next(i for i in insts if i is not owner)
    os.killpg(owner.proc.pid, signal.SIGKILL)
    new = wait_leader(rclient, timeout=15, not_=leader)
    assert new in survivor.nodes
    # The new leader makes no CoinGecko call before the Retry-After has passed.
    while time.monotonic() - refused_at < 11:
        assert provider_calls(sim.url, "coingecko") == before, "CoinGecko called before its Retry-After"
        time.sleep(0.2)
    survivor_client = watch(stack, survivor, "s0")
    survivor_client.wait(lambda c: provider_calls(sim.url, "coingecko") > before, 15, "CoinGecko again")
    assert provider_calls(sim.url, "coingecko", "429") == 1


def test_unknown_symbols_never_fail_a_batch(stack, redis_proc, sim) -> None:
    env = live_env(sim.url, SYMBOLS="BTC,FOO,ETH")
    (inst,) = start(stack, 1, redis_proc.url, env)
    c = watch(stack, inst, "c")
    c.wait_snapshots(4, 20)
    data = c.snapshots()[-1]["data"]
    assert sorted(data["prices"]) == ["BTC", "ETH"]
    assert {q["source"] for q in data["prices"].values()} == {"binance"}
    assert data["missing"] == ["prices.FOO"]
    assert data["sources"]["binance"]["unknown"] == ["FOO"] and data["sources"]["binance"]["ok"]
    assert data["sources"]["coingecko"]["unknown"] == ["FOO"]
    # Two refusals, both in the symbol lookup (the batch, then FOO alone); the
    # ticker was never asked for FOO, so it never refused a batch.
    assert provider_calls(sim.url, "binance", "400") == 2
    assert all(s["data"]["sources"]["binance"]["ok"] for s in c.snapshots())
    unknown = {(e["provider"], tuple(e["symbols"])) for e in inst.proc.lines
               if e.get("event") == "symbols_unknown"}
    assert {("binance", ("FOO",)), ("coingecko", ("FOO",))} <= unknown


def test_a_provider_keeps_its_own_cadence_through_the_service(stack, redis_proc, sim) -> None:
    env = live_env(sim.url, COINGECKO_INTERVAL_SECONDS="2", COINGECKO_MARKET_INTERVAL_SECONDS="2",
                   FEAR_GREED_INTERVAL_SECONDS="3600")
    (inst,) = start(stack, 1, redis_proc.url, env)
    c = watch(stack, inst, "c")
    c.wait_snapshots(3, 20)
    requests.post(f"{sim.url}/_sim/stats/reset", timeout=5).raise_for_status()
    n = len(c.snapshots())
    c.wait_snapshots(n + 12, 30)  # 12 snapshots at 0.5 s: about 6 s
    paths = sim_stats(sim.url)["by_path"]
    assert paths.get("/binance/api/v3/ticker/24hr", 0) >= 10
    assert 2 <= paths.get("/coingecko/api/v3/simple/price", 0) <= 4
    assert paths.get("/feargreed/fng/", 0) == 0
    # Every snapshot still carries the sentiment, with its own, growing age.
    ages = [s["data"]["sources"]["feargreed"]["sections"]["sentiment"]["age_s"] for s in c.snapshots()[n:]]
    assert ages == sorted(ages) and ages[-1] > 4
    assert all(s["data"]["sentiment"] for s in c.snapshots()[n:])
    json.dumps(c.snapshots()[-1])


def test_the_coingecko_key_goes_in_its_header_and_nowhere_else(stack, redis_proc, sim) -> None:
    key = "CG-demo-Key-7f3a9c"
    requests.post(f"{sim.url}/_sim/keys", json={"demo": [key]}, timeout=5).raise_for_status()
    # Keyless callers get one call a minute: only the key can make the rest succeed.
    requests.post(f"{sim.url}/_sim/limits", json={"coingecko_keyless_per_minute": 1},
                  timeout=5).raise_for_status()
    op = "op-token-for-key-test"
    (inst,) = start(stack, 1, redis_proc.url, live_env(sim.url, COINGECKO_API_KEY=key, OPERATOR_TOKEN=op))
    c = watch(stack, inst, "c")
    c.wait_snapshots(10, 20)
    assert provider_calls(sim.url, "coingecko", "200") >= 4
    assert provider_calls(sim.url, "coingecko", "429") == 0
    assert c.snapshots()[-1]["data"]["sources"]["coingecko"]["ok"] is True
    bearer = {"Authorization": f"Bearer {op}"}
    pages = [inst.get(p, headers=bearer).text for p in ("/health", "/status", "/metrics")]
    c.send(json.dumps({"op": "status"}))
    time.sleep(0.5)
    inst.stop()
    seen = "\n".join([*pages, *inst.proc.raw, json.dumps([m.msg for m in c.messages])])
    assert key not in seen and key.lower() not in seen


def test_a_key_on_the_wrong_host_is_named_and_backed_off(stack, redis_proc, sim) -> None:
    key = "CG-demo-Key-11aa22"
    requests.post(f"{sim.url}/_sim/keys", json={"demo": [key]}, timeout=5).raise_for_status()
    env = live_env(sim.url, COINGECKO_API_KEY=key, COINGECKO_API_PLAN="pro",
                   COINGECKO_BASE_URL=f"{sim.url}/coingecko-pro")
    (inst,) = start(stack, 1, redis_proc.url, env)
    c = watch(stack, inst, "c")
    c.wait_snapshots(6, 20)
    blocked = inst.proc.wait_for("upstream_blocked", 5, where=lambda e: e.get("provider") == "coingecko")
    assert blocked["code"] == 10011 and "COINGECKO_API_PLAN=demo" in blocked["fix"]
    # Answered 400 (as CoinGecko does), read as a refused key: one line for both endpoints.
    assert blocked["status"] == 400 and blocked["outcome"] == "unauthorized"
    assert len([e for e in inst.proc.events("upstream_blocked") if e.get("provider") == "coingecko"]) == 1
    view = inst.get("/status").json()["cluster"]["upstream"]["coingecko"]
    assert view["blocked"]["outcome"] == "unauthorized" and view["blocked"]["status"] == 400
    src = c.snapshots()[-1]["data"]["sources"]["coingecko"]
    assert src["error"] == "unauthorized" and src["blocked_for_s"] > 3000
    assert src["detail"] == "the provider refused the API key (HTTP 400, code 10011)"
    # Prices still come, from Binance; CoinGecko was asked once per endpoint, not every second.
    assert c.snapshots()[-1]["data"]["prices"]["BTC"]["source"] == "binance"
    assert provider_calls(sim.url, "coingecko") <= 2
