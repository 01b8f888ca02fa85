"""Redis load: commands per second per node in steady state.

Nine candidates on one Redis (3 instances x 3 workers of ours; 9 nodes of the
original algorithm, bench/original.py), default timing (fetch every 5 s, TTL
10 s), measured over the same window with MONITOR: round trips (commands a
client sent), and separately the steps run inside Lua scripts.

    .venv/bin/python -m bench.redis_load               # ~3 min
    .venv/bin/python -m bench.redis_load --window 20   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import redis

from bench.harness import Backends, machine, table
from lab.cluster import ServiceInstance
from lab.procs import LoggedProcess, child_env

# Commands the re-enactment of the original issues only to time itself.
INSTRUMENTATION = {"TIME"}
END = "marketfeed-bench-window-end"


def measure(url: str, window: float) -> tuple[dict[str, int], int]:
    """Commands seen by MONITOR over ``window``: (round trips by name, inside scripts)."""
    client = redis.Redis.from_url(url)
    top: dict[str, int] = {}
    in_scripts = 0
    # The window ends with a marker command, so the loop never waits for ever.
    timer = threading.Timer(window, lambda: redis.Redis.from_url(url).echo(END))
    with client.monitor() as monitor:
        timer.start()
        while True:
            cmd = monitor.next_command()
            if END in cmd["command"]:
                break
            name = cmd["command"].split(" ", 1)[0].strip('"').upper()
            if cmd.get("client_type") == "lua":
                in_scripts += 1
            elif name not in INSTRUMENTATION:
                top[name] = top.get(name, 0) + 1
    return top, in_scripts


def run(impl: str, nodes: int, window: float, warmup: float) -> dict[str, Any]:
    with Backends() as b:
        procs: list[Any] = []
        try:
            if impl == "ours":
                procs = [ServiceInstance(f"l{i}", workers=nodes // 3, redis_url=b.redis.url,
                                         sim_url=b.sim.url).wait_ready(60) for i in range(3)]
            else:
                procs = [LoggedProcess([sys.executable, "-m", "bench.original", "--redis", b.redis.url],
                                       child_env(), name=f"orig{i}") for i in range(nodes)]
            time.sleep(warmup)
            delta, in_scripts = measure(b.redis.url, window)
        finally:
            for p in procs:
                p.stop()
    total = sum(delta.values())
    row = {"impl": impl, "nodes": nodes, "window_s": window, "commands": total,
           "per_node_per_s": total / nodes / window,
           "with_script_steps_per_node_per_s": (total + in_scripts) / nodes / window,
           "breakdown": ", ".join(f"{k} {v}" for k, v in sorted(delta.items(), key=lambda kv: -kv[1]))}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=9)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=12.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    rows = [run(impl, args.nodes, args.window, args.warmup) for impl in ("ours", "original")]
    rows[1]["vs ours x"] = rows[1]["per_node_per_s"] / rows[0]["per_node_per_s"]
    rows[0]["vs ours x"] = 1.0
    print()
    print(table(rows, [("impl", "algorithm"), ("nodes", "nodes"), ("commands", "round trips in window"),
                       ("per_node_per_s", "round trips/s per node"), ("vs ours x", "vs ours x"),
                       ("with_script_steps_per_node_per_s", "incl. steps inside scripts /s per node"),
                       ("breakdown", "round trips by command")]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
