"""Failover: how long the cluster is without a leader, over many trials.

Side by side, in one run, on one Redis:

* ``ours``      3 headless nodes (``python -m lab.node``), default timing
                (TTL 10 s, renew 3 s): SIGTERM (graceful) and SIGKILL (crash);
* ``ours/gunicorn``  one instance with 3 workers: SIGKILL of the leader worker,
                which its master reports at once (feed/election/reaper.py);
* ``ours/instances``  3 Gunicorn instances x 2 workers (lab/cluster.py),
                default timing: SIGKILL of the leader's whole instance (master
                and workers at once, as a container kill) at a random phase of
                the renew cycle, with presence (the default) and with
                ``PRESENCE=off`` (the lock's TTL alone);
* ``original``  3 nodes running the original algorithm (bench/original.py:
                5 s ticks, EX 10): SIGTERM and SIGKILL (a process of the
                original is a whole instance: nothing else can release its lock).

Time without a leader = from the signal to a new holder of
``websocket:leader`` (both on Redis's clock; the key is polled every 5 ms,
or, for the instance kills, the ``acquired`` entry of the leadership log).

    .venv/bin/python -m bench.failover               # 20 trials each (~25 min)
    .venv/bin/python -m bench.failover --trials 3    # a quick look
    .venv/bin/python -m bench.failover --only instances --trials 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import time
from typing import Any

import redis

from bench.harness import machine, percentile, table
from feed.redisconn.embedded import RedisProcess
from feed.simulator.server import SimulatedExchange
from lab.cluster import Cluster, ServiceInstance, Timing
from lab.procs import LoggedProcess, child_env
from lab.redis_clock import redis_now


def now_ms(client: redis.Redis) -> float:
    return redis_now(client) * 1000


def holder(client: redis.Redis) -> str | None:
    value = client.get("websocket:leader")
    return value.decode() if value else None


def wait_new_holder(client: redis.Redis, old: str | None, timeout: float = 40.0) -> tuple[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = holder(client)
        if h and h != old:
            return h, now_ms(client)
        time.sleep(0.005)
    raise TimeoutError(f"no new leader within {timeout}s")


class Nodes:
    """Three candidates of one kind; replaces the one a trial stops."""

    def __init__(self, kind: str, redis_url: str) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.procs: dict[str, LoggedProcess] = {}
        for _ in range(3):
            self.spawn()

    def spawn(self) -> None:
        if self.kind == "ours":
            args = [sys.executable, "-m", "lab.node", "--fake"]
            proc = LoggedProcess(args, child_env(REDIS_URL=self.redis_url), name="node")
            node = proc.wait_for("node_started", 20)["node"]
        else:
            args = [sys.executable, "-m", "bench.original", "--redis", self.redis_url]
            proc = LoggedProcess(args, child_env(), name="orig")
            node = proc.wait_for("started", 20)["node"]
        self.procs[node] = proc

    def signal(self, node: str, sig: int) -> None:
        os.kill(self.procs[node].pid, sig)

    def replace(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.proc.wait(30)
        proc.stop()
        self.spawn()

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def trials(client: redis.Redis, kind: str, sig: int, n: int, redis_url: str) -> list[float]:
    nodes = Nodes(kind, redis_url)
    out = []
    try:
        wait_new_holder(client, None)
        for _ in range(n):
            time.sleep(1.0 + (hash(time.time()) % 1000) / 1000)  # a random phase of the renewals
            old = holder(client)
            if old not in nodes.procs:
                old, _ = wait_new_holder(client, None)
            t0 = now_ms(client)
            nodes.signal(old, sig)
            _, t1 = wait_new_holder(client, old)
            out.append((t1 - t0) / 1000)
            nodes.replace(old)
            print(json.dumps({"impl": kind, "signal": signal.Signals(sig).name, "s": out[-1]}), flush=True)
    finally:
        nodes.close()
        client.delete("websocket:leader")
    return out


def worker_crash_trials(client: redis.Redis, redis_url: str, n: int) -> list[float]:
    sim = SimulatedExchange(port=0).start()
    inst = ServiceInstance("fo", workers=3, redis_url=redis_url, sim_url=sim.url).wait_ready(60)
    out = []
    try:
        for _ in range(n):
            old, _ = wait_new_holder(client, None)
            while len(inst.nodes) < 3:
                time.sleep(0.1)
            time.sleep(1.0)
            t0 = now_ms(client)
            os.kill(inst.nodes[old], signal.SIGKILL)
            _, t1 = wait_new_holder(client, old)
            out.append((t1 - t0) / 1000)
            print(json.dumps({"impl": "ours/gunicorn", "signal": "SIGKILL", "s": out[-1]}), flush=True)
    finally:
        inst.stop()
        sim.stop()
        client.delete("websocket:leader")
    return out


def instance_crash_trials(n: int, presence: bool) -> list[float]:
    """SIGKILL of the leader's whole instance, 3 instances x 2 workers; the instance comes back after."""
    timing = Timing()  # the service's defaults: TTL 10 s, renew 3 s
    env = None if presence else {"PRESENCE": "off"}
    out = []
    with Cluster(3, 2, timing=timing, name="fo-pres" if presence else "fo-ttl", env=env) as lab:
        lab.wait_serving()
        for _ in range(n):
            lab.wait_leader()
            # A random phase of the renew cycle, counted from the current term's start
            # (and a second in, so that the term has found its deputy).
            start = max((e["ts"] for e in lab.events(20) if e["event"] == "acquired"),
                        default=lab.redis_time())
            phase = random.uniform(0.0, timing.renew_interval)
            at = start + 1.0 + phase
            while at < lab.redis_time():
                at += timing.renew_interval
            time.sleep(at - lab.redis_time())
            fault = lab.kill_leader_instance()
            acquired = lab.wait_acquired(fault)
            out.append(acquired["ts"] - fault.t)
            print(json.dumps({"impl": "ours/instances", "presence": presence, "signal": "SIGKILL",
                              "phase_s": round(phase, 3), "s": round(out[-1], 3),
                              "reason": next((e.get("reason") for e in reversed(lab.events(5))
                                              if e["event"] == "lost"), None)}), flush=True)
            lab.respawn(fault)
    return out


def summary(name: str, what: str, values: list[float]) -> dict[str, Any]:
    return {"impl": name, "fault": what, "trials": len(values),
            "median_s": statistics.median(values), "p95_s": percentile(values, 0.95),
            "min_s": min(values), "max_s": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--only", choices=["nodes", "instances"], help="run one part only")
    parser.add_argument("--json")
    args = parser.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    rows = []
    with RedisProcess() as server:
        client = redis.Redis.from_url(server.url)
        for kind in ("ours", "original"):
            for sig, what in ((signal.SIGTERM, "graceful (SIGTERM)"), (signal.SIGKILL, "crash (SIGKILL)")):
                if args.only == "instances" and not (kind == "original" and sig == signal.SIGKILL):
                    continue
                rows.append(summary(kind, what, trials(client, kind, sig, args.trials, server.url)))
        if args.only != "instances":
            rows.append(summary("ours/gunicorn", "worker crash (SIGKILL)",
                                worker_crash_trials(client, server.url, args.trials)))
    if args.only != "nodes":
        rows.append(summary("ours/instances", "instance crash (SIGKILL)",
                            instance_crash_trials(args.trials, True)))
        rows.append(summary("ours/instances, PRESENCE=off", "instance crash (SIGKILL)",
                            instance_crash_trials(args.trials, False)))
    cols = [("impl", "implementation"), ("fault", "fault"), ("trials", "trials"), ("median_s", "median s"),
            ("p95_s", "p95 s"), ("min_s", "min s"), ("max_s", "max s")]
    print()
    print(table(rows, cols))
    by = {(r["impl"], r["fault"]): r for r in rows}
    ratio_rows = []
    pairs = [("graceful (SIGTERM)", ("ours", "graceful (SIGTERM)")),
             ("crash (SIGKILL)", ("ours", "crash (SIGKILL)")),
             ("crash (SIGKILL)", ("ours/instances", "instance crash (SIGKILL)"))]
    for original_fault, ours in pairs:
        if ("original", original_fault) in by and ours in by:
            o, b = by[ours], by[("original", original_fault)]
            ratio_rows.append({"fault": f"{ours[0]}: {ours[1]}",
                               "original / ours (median)": b["median_s"] / o["median_s"],
                               "original / ours (p95)": b["p95_s"] / o["p95_s"]})
    print()
    print(table(ratio_rows, [(k, k) for k in ratio_rows[0]]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows, "ratios": ratio_rows}, f, indent=2)


if __name__ == "__main__":
    main()
