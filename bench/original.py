"""Baseline (b): the original Rust service's algorithm, re-enacted for comparison.

As the original service's own implementation summary documents it, one loop per node:

    every FETCH_INTERVAL (5 s), aligned to the node's own start:
      leader:   renew (Lua: if GET == me then EXPIRE 10) -> fetch -> SET latest_market_data EX 10
      follower: SET websocket:leader me NX EX 10 (try to take over) -> GET latest_market_data
    on shutdown: release (Lua: if GET == me then DEL)

So a follower learns of new data only at its next tick, and of a free lock
likewise. Each line printed is a JSON event with the node and Redis's clock:
``acquired``, ``released``, ``seen`` (a follower read data newer than its
last, with ``lag_s`` = its read time - the leader's write time).

    python -m bench.original --interval 5 --ttl 10      (SIGTERM releases, then exits)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading

import redis

from lab.redis_clock import redis_now

# The original's two scripts, as its summary gives them.
RENEW = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
         "return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0")
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--node", default=f"ws-orig-{os.getpid()}-{random.randrange(16**4):04x}")
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis, socket_timeout=2, socket_connect_timeout=2)
    renew, release = client.register_script(RENEW), client.register_script(RELEASE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    leader = False
    last_seen = 0.0
    emit("started", node=args.node)
    # Instances start at unrelated moments, so their ticks are out of phase.
    if stop.wait(random.uniform(0, args.interval)):
        return 0
    while not stop.wait(args.interval):
        try:
            if leader:
                if not renew(keys=["websocket:leader"], args=[args.node, args.ttl]):
                    leader = False
                    emit("lost", node=args.node, t=redis_now(client))
                    continue
                written = redis_now(client)  # the fetch is instant here
                client.set("latest_market_data", json.dumps({"written": written, "by": args.node}),
                           ex=args.ttl)
            elif client.set("websocket:leader", args.node, nx=True, ex=args.ttl):
                leader = True
                emit("acquired", node=args.node, t=redis_now(client))
                written = redis_now(client)  # and fetches at once (the kindest reading)
                client.set("latest_market_data", json.dumps({"written": written, "by": args.node}),
                           ex=args.ttl)
            else:
                raw = client.get("latest_market_data")
                if raw:
                    written = json.loads(raw)["written"]
                    if written > last_seen:
                        last_seen = written
                        emit("seen", node=args.node, lag_s=round(redis_now(client) - written, 4))
        except redis.RedisError as exc:
            emit("error", node=args.node, error=str(exc))
    if leader:
        release(keys=["websocket:leader"], args=[args.node])
        emit("released", node=args.node, t=redis_now(client))
    return 0


if __name__ == "__main__":
    sys.exit(main())
