"""Soak: 3 instances, a few thousand clients, the leader killed every minute.

Not part of the default run (about 10 minutes):

    .venv/bin/python -m pytest -m soak -s           # SOAK_SECONDS, SOAK_CLIENTS to change

Kills alternate between the leader's worker (SIGKILL; its master replaces
it and hands leadership over at once, see feed/election/reaper.py) and the leader's
whole instance (SIGKILL to the master and its workers; its connections
close, the deputy takes over once its presence has been gone for the grace
period, and the instance is restarted on the same port). Clients come from the C
load generator, which reconnects a client 200 ms after its connection ends
and tracks, per client, the longest time without any message.

Asserted: no client goes without fresh data for longer than TTL + 2 s;
every worker's memory stays under MEMORY_BOUND_MIB; the epoch only grows.
Two recording clients per instance also give, per kill, the longest wait
for a new snapshot seen on the instances that were not killed (what the
failover itself costs, apart from the killed instance's own restart).
The figures are written to tests/artifacts/soak.json and docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import psutil
import pytest
import redis

from feed.redisconn.embedded import RedisProcess
from feed.simulator.server import SimulatedExchange
from lab.analysis import longest_gap
from lab.clients import RecordingClient
from lab.cluster import ServiceInstance

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
# Longer than the default per-test limit: the run itself plus start and stop.
pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(SECONDS) + 600)]

TTL = 10.0
# Without presence the worst gap after a whole-instance crash is interval + TTL + a fetch.
FETCH_INTERVAL = 1.0
MEMORY_BOUND_MIB = 150


def leader_of(client: redis.Redis) -> str | None:
    holder = client.get("websocket:leader")
    return holder.decode() if holder else None


def test_soak(tmp_path, artifacts) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("the soak's load generator needs gcc (apt-get install gcc zlib1g-dev)")
    from bench.harness import Loadgen

    seconds = SECONDS
    per_instance = int(os.environ.get("SOAK_CLIENTS", "1000"))
    env = {"FETCH_INTERVAL_SECONDS": str(FETCH_INTERVAL), "LOCK_TTL_SECONDS": str(TTL),
           "RENEW_INTERVAL_SECONDS": "3", "LEASE_MARGIN_SECONDS": "2", "GRACEFUL_TIMEOUT": "5"}
    server = RedisProcess(workdir=str(tmp_path / "redis")).start()
    sim = SimulatedExchange(port=0).start()
    instances = [ServiceInstance(f"s{i}", workers=2, redis_url=server.url, sim_url=sim.url, env=env)
                 for i in range(3)]
    loadgens = []
    recorders: dict[str, list[RecordingClient]] = {}
    samples: list[dict] = []
    kills: list[dict] = []
    try:
        for inst in instances:
            inst.wait_ready(60)
        client = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 30
        while leader_of(client) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        loadgens = [Loadgen(inst.port, per_instance, seconds + 15, reconnect=True, rate=500)
                    for inst in instances]
        recorders = {inst.name: [RecordingClient(inst.ws_url, name=f"{inst.name}-r{j}",
                                                 reconnect=True).start() for j in range(2)]
                     for inst in instances}
        started = time.monotonic()
        next_kill = started + 30  # then every 60 s: 10 kills in 600 s, each observed for 20 s
        kill_whole_instance = False
        epochs_seen = [int(client.get("websocket:epoch") or 0)]
        while time.monotonic() - started < seconds:
            time.sleep(5)
            now = time.monotonic()
            rss = {}
            for inst in instances:
                for node, pid in inst.nodes.items():
                    try:
                        rss[node] = psutil.Process(pid).memory_info().rss / 2**20
                    except psutil.NoSuchProcess:
                        pass
            samples.append({"t": round(now - started, 1), "rss_mib": rss})
            epochs_seen.append(int(client.get("websocket:epoch") or 0))
            if now < next_kill or now + 20 > started + seconds:
                continue  # each kill is observed for 20 s before the run ends
            next_kill = now + 60
            at = time.time()
            leader = leader_of(client)
            owner = next((i for i in instances if leader in i.nodes), None)
            if owner is None:
                continue
            if kill_whole_instance:
                os.killpg(owner.proc.pid, signal.SIGKILL)
                owner.proc.proc.wait(10)
                idx = instances.index(owner)
                instances[idx] = ServiceInstance(owner.name, workers=2, redis_url=server.url,
                                                 sim_url=sim.url, env=env, port=owner.port).wait_ready(60)
            else:
                os.kill(owner.nodes[leader], signal.SIGKILL)
            kills.append({"t": round(now - started, 1), "at": at, "leader": leader,
                          "instance": owner.name, "kind": "instance" if kill_whole_instance else "worker"})
            kill_whole_instance = not kill_whole_instance
        observed_until = time.time()
        results = [lg.result(timeout=120) for lg in loadgens]
    finally:
        for clients in recorders.values():
            for c in clients:
                c.close()
        for lg in loadgens:
            if lg.proc.poll() is None:
                lg.proc.kill()
        for inst in instances:
            inst.stop()
        sim.stop()
        server.close()

    peak = {}
    for s in samples:
        for node, mib in s["rss_mib"].items():
            peak[node] = max(peak.get(node, 0.0), mib)
    for kill in kills:
        # The longest wait for a new snapshot, from 5 s before the kill to 20 s
        # after, on the instances that were not killed.
        start, end = kill["at"] - 5, min(kill["at"] + 20, observed_until)
        waits = [longest_gap([start, *(r.t for r in c.new_snapshots()), end], start, end)
                 for name, clients in recorders.items() if name != kill["instance"] for c in clients]
        kill["longest_wait_elsewhere_s"] = round(max(waits), 2) if waits else None
        del kill["at"]
    by_kind = {kind: [k["longest_wait_elsewhere_s"] for k in kills if k["kind"] == kind
                      and k["longest_wait_elsewhere_s"] is not None] for kind in ("worker", "instance")}
    figures = {
        "seconds": seconds, "clients": per_instance * 3, "kills": kills,
        "longest_wait_elsewhere_after_worker_kill_s": max(by_kind["worker"], default=None),
        "longest_wait_elsewhere_after_instance_kill_s": max(by_kind["instance"], default=None),
        "max_gap_s": max(r["max_gap_s"] for r in results),
        "p99_gap_s": max(r["p99_gap_s"] for r in results),
        "median_gap_s": max(r["median_gap_s"] for r in results),
        "reconnects": sum(r["reconnects"] for r in results),
        "messages": sum(r["messages"] for r in results),
        "failed_connects": sum(r["failed"] for r in results),
        "peak_worker_rss_mib": round(max(peak.values()), 1),
        "rss_samples": samples,
    }
    (artifacts / "soak.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "rss_samples"}, indent=2))
    assert len(kills) >= max(1, int(seconds // 60) - 1)
    assert figures["max_gap_s"] <= TTL + 2, figures["max_gap_s"]
    assert figures["peak_worker_rss_mib"] <= MEMORY_BOUND_MIB
    assert epochs_seen == sorted(epochs_seen)
