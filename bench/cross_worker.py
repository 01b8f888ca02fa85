"""Cross-worker latency: publish -> Redis -> every worker -> its clients.

Two instances with two workers each, 250 and 1,000 clients per worker. A
snapshot is published where a leader's write puts it (the updates channel;
for Flask-SocketIO, its Redis message queue) and each client's receipt is
timed, so every sample crossed a process (and half of them an instance)
boundary, as a follower worker's clients do. Side by side, in one run:

* ours, the naive flask-sock relay, Flask-SocketIO with its Redis queue;
* the original algorithm (bench/original.py): followers poll the cache every
  FETCH_INTERVAL, so a follower's clients see new data that much later.

    .venv/bin/python -m bench.cross_worker                 # ~3 min
    .venv/bin/python -m bench.cross_worker --clients 200   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench.harness import Backends, Loadgen, machine, percentile, start_server, table
from lab.procs import LoggedProcess, child_env


def run_push(impl: str, clients_per_worker: int, messages: int, gap: float) -> dict[str, Any]:
    with Backends() as b:
        servers = [start_server(impl, b.redis.url, b.sim.url, workers=2, name=f"x{i}") for i in range(2)]
        try:
            per_instance = clients_per_worker * 2
            connect_s = per_instance / 2000 + 3.0
            gens = [Loadgen(s.port, per_instance, connect_s + messages * gap + 3.0, path=s.path,
                            socketio=s.socketio) for s in servers]
            time.sleep(connect_s)
            for i in range(messages):
                servers[0].publish(i)
                time.sleep(gap)
            results = [g.result() for g in gens]
        finally:
            for s in servers:
                s.stop()
    samples = sum(r["samples"] for r in results)
    row = {
        "impl": impl, "clients": sum(r["opened"] for r in results),
        "delivered_pct": 100.0 * samples / max(1, messages * clients_per_worker * 4),
        "p50_ms": max(r["all_p50_ms"] for r in results),
        "p99_ms": max(r["all_p99_ms"] for r in results),
        "max_ms": max(r["all_max_ms"] for r in results),
    }
    print(json.dumps(row), flush=True)
    return row


def run_original(seconds: float, interval: float) -> dict[str, Any]:
    with Backends() as b:
        nodes = [LoggedProcess([sys.executable, "-m", "bench.original", "--redis", b.redis.url,
                                "--interval", str(interval)], child_env(), name=f"orig{i}")
                 for i in range(10)]
        try:
            time.sleep(seconds)
        finally:
            for n in nodes:
                n.stop()
        lags = [e["lag_s"] * 1000 for n in nodes for e in n.events("seen")]
    row = {"impl": f"original (poll every {interval:g} s)", "clients": "-",
           "delivered_pct": float("nan"), "p50_ms": percentile(lags, 0.5),
           "p99_ms": percentile(lags, 0.99), "max_ms": max(lags) if lags else float("nan")}
    print(json.dumps({**row, "samples": len(lags)}), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="250,1000", help="clients per worker (a list)")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.5)
    parser.add_argument("--impls", default="ours,naive,socketio")
    parser.add_argument("--original-seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0, help="the original's FETCH_INTERVAL")
    parser.add_argument("--json")
    args = parser.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    rows = []
    for per_worker in [int(c) for c in args.clients.split(",")]:
        group = [run_push(impl, per_worker, args.messages, args.gap) for impl in args.impls.split(",")]
        for r in group:
            r["p99 vs ours x"] = r["p99_ms"] / group[0]["p99_ms"]
        rows += group
    original = run_original(args.original_seconds, args.interval)
    ours_worst = max(r["p99_ms"] for r in rows if r["impl"] == "ours")
    original["p99 vs ours x"] = original["p99_ms"] / ours_worst
    rows.append(original)
    print()
    print(table(rows, [("impl", "server"), ("clients", "clients"), ("delivered_pct", "delivered %"),
                       ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
                       ("p99 vs ours x", "p99 vs ours x")]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
