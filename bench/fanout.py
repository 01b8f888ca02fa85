"""Fan-out: K clients on one worker, one ~2 KB broadcast at a time.

For each server (ours, the naive flask-sock loop, Flask-SocketIO), each K and
with clients that do / do not offer permessage-deflate, it reports:

* RSS per connection (worker RSS growth / K), idle (before any broadcast)
  and after the broadcasts (per-connection compressors exist by then);
* fan-out time: publish -> the last client's receipt (median over broadcasts);
* p50 / p99 latency, publish -> client receipt (medians over broadcasts);
* server CPU per delivered message, and the load generator's own CPU;

then the ratios of each baseline to ours, from the same run.

    .venv/bin/python -m bench.fanout                       # the full run (~15 min)
    .venv/bin/python -m bench.fanout --sizes 1000 --messages 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from bench.harness import IMPLS, Backends, Loadgen, machine, start_server, table


def run_one(impl: str, size: int, deflate: bool, messages: int, gap: float, rate: int) -> dict[str, Any]:
    with Backends() as b:
        server = start_server(impl, b.redis.url, b.sim.url, workers=1)
        try:
            time.sleep(1.0)
            rss0 = server.rss()
            connect_s = size / rate + 3.0
            lg = Loadgen(server.port, size, connect_s + messages * gap + 3.0, path=server.path,
                         deflate=deflate, socketio=server.socketio, rate=rate)
            time.sleep(connect_s)
            rss1 = server.rss()
            cpu0 = server.cpu()
            for i in range(messages):
                server.publish(i)
                time.sleep(gap)
            cpu1 = server.cpu()
            rss2 = server.rss()
            result = lg.result()
        finally:
            server.stop()
    per_id = list(result["messages_by_id"].values())
    delivered = sum(r["clients"] for r in per_id)
    row: dict[str, Any] = {
        "impl": impl, "clients": size, "deflate_offered": deflate,
        "connected": result["opened"], "compressed": result["inflating"] > 0,
        "rss_kib_per_conn": (rss1 - rss0) / max(1, result["opened"]) / 1024,
        # After the broadcasts: per-connection compressors exist by then.
        "rss_active_kib_per_conn": (rss2 - rss0) / max(1, result["opened"]) / 1024,
        "delivered_pct": 100.0 * delivered / max(1, messages * size),
        "fanout_ms": statistics.median(r["max_ms"] for r in per_id) if per_id else float("nan"),
        "p50_ms": statistics.median(r["p50_ms"] for r in per_id) if per_id else float("nan"),
        "p99_ms": statistics.median(r["p99_ms"] for r in per_id) if per_id else float("nan"),
        "cpu_us_per_msg": (cpu1 - cpu0) / max(1, delivered) * 1e6,
        "loadgen_cpu_pct": 100.0 * result["cpu_s"] / max(1e-9, result["wall_s"]),
    }
    print(json.dumps(row), flush=True)
    return row


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ours = {(r["clients"], r["deflate_offered"]): r for r in rows if r["impl"] == "ours"}
    out = []
    for r in rows:
        base = ours.get((r["clients"], r["deflate_offered"]))
        if r["impl"] == "ours" or base is None:
            continue
        out.append({
            "vs ours": r["impl"], "clients": r["clients"], "deflate offered": r["deflate_offered"],
            "RSS/conn x": r["rss_kib_per_conn"] / base["rss_kib_per_conn"],
            "RSS/conn after x": r["rss_active_kib_per_conn"] / base["rss_active_kib_per_conn"],
            "fan-out time x": r["fanout_ms"] / base["fanout_ms"],
            "p99 x": r["p99_ms"] / base["p99_ms"],
            "CPU/msg x": r["cpu_us_per_msg"] / base["cpu_us_per_msg"],
        })
    return out


COLUMNS = [("impl", "server"), ("clients", "clients"), ("deflate_offered", "deflate offered"),
           ("compressed", "compressed"), ("connected", "connected"), ("delivered_pct", "delivered %"),
           ("rss_kib_per_conn", "idle RSS KiB/conn"), ("rss_active_kib_per_conn", "RSS KiB/conn after"),
           ("fanout_ms", "fan-out ms"), ("p50_ms", "p50 ms"),
           ("p99_ms", "p99 ms"), ("cpu_us_per_msg", "server CPU µs/msg"),
           ("loadgen_cpu_pct", "loadgen CPU %")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between broadcasts")
    parser.add_argument("--rate", type=int, default=2000, help="new connections per second")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for deflate in (False, True):
            for impl in args.impls.split(","):
                try:
                    rows.append(run_one(impl, size, deflate, args.messages, args.gap, args.rate))
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    print(json.dumps({"impl": impl, "clients": size, "error": str(exc)[:300]}), flush=True)
    print()
    print(table(rows, COLUMNS))
    print()
    print(table(ratios(rows), [(k, k) for k in ("vs ours", "clients", "deflate offered", "RSS/conn x",
                                                  "RSS/conn after x", "fan-out time x", "p99 x",
                                                  "CPU/msg x")]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows, "ratios": ratios(rows)}, f, indent=2)


if __name__ == "__main__":
    main()
