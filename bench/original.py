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

With ``--sim URL`` it also calls the upstreams as the original's code does
(Web-server-Report-websocket at 854a0fb; docs/COMPATIBILITY.md), against
the simulated exchange at URL:

* every tick the leader asks Binance's 24 h ticker for its seven coins
  (crypto_fetchers.rs:24-49): the one call forced every tick;
* the others go through caches in the Redis all instances share
  (cache_manager.rs): CoinGecko ``/global`` 1 h (``global_coingecko_1h``),
  Fear & Greed 5 min (``fng_alternative_5m``), the RSI from TAAPI 3 h
  (``btc_rsi_14_taapi_3h``), the index ETFs from Finnhub 5 min
  (``us_indices_finnhub_5m``, with ``--finnhub-key``); a source is called
  when its cache is empty, and a failure is not cached, so a failing source
  is called again every tick;
* TAAPI has no stand-in here and its default secret (``default_secret``) is
  refused: each attempt is printed as a ``call`` event and not sent;
* then ``SET latest_market_data EX 5`` and ``XADD market_data_stream MAXLEN
  ~ 1000`` (mod.rs:159-174); followers ``GET latest_market_data``.

``--no-election`` runs the same loop on every node (every one fetches).
``--cache-scale`` shrinks the cache times with the tick for scaled-down runs.
Every upstream attempt prints ``{"event": "call", "provider", "ok"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time

import redis
import requests

from lab.redis_clock import redis_now

# The original's two scripts, as its summary gives them.
RENEW = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
         "return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0")
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# The original's seven coins and its per-source caches: (provider, key, seconds).
COINS = ("BTC", "ETH", "SOL", "XRP", "ADA", "LINK", "BNB")
CACHED = (("coingecko", "global_coingecko_1h", 3600), ("feargreed", "fng_alternative_5m", 300),
          ("taapi", "btc_rsi_14_taapi_3h", 10800), ("finnhub", "us_indices_finnhub_5m", 300))
NODE_HEADER = "X-Marketfeed-Node"  # the simulated exchange counts calls by it


class Upstreams:
    """The original's fetch, against the simulated exchange (see the module docstring)."""

    def __init__(self, client: redis.Redis, sim: str, node: str, *, cache_scale: float = 1.0,
                 finnhub_key: str | None = None, taapi_secret: str = "default_secret") -> None:
        self.client = client
        self.sim = sim.rstrip("/")
        self.cache_scale = cache_scale
        self.finnhub_key = finnhub_key
        self.taapi_secret = taapi_secret
        self.http = requests.Session()
        self.http.headers[NODE_HEADER] = node

    def _get(self, provider: str, path: str, **kw: object) -> bool:
        try:
            ok = self.http.get(f"{self.sim}/{provider}{path}", timeout=5, **kw).status_code == 200
        except requests.RequestException:
            ok = False
        emit("call", provider=provider, ok=ok)
        return ok

    def _fetch(self, provider: str) -> bool:
        if provider == "coingecko":
            return self._get("coingecko", "/api/v3/global")
        if provider == "feargreed":
            return self._get("feargreed", "/fng/", params={"limit": "1"})
        if provider == "taapi":
            # No stand-in for TAAPI: the attempt is counted, not sent; its default secret is refused.
            ok = self.taapi_secret != "default_secret"
            emit("call", provider="taapi", ok=ok)
            return ok
        if not self.finnhub_key:
            return False  # the original asks Finnhub only with a key
        return all([self._get("finnhub", "/api/v1/quote", params={"symbol": s},
                              headers={"X-Finnhub-Token": self.finnhub_key}) for s in ("DIA", "SPY", "QQQM")])

    def tick(self, written: float, node: str, publish: bool) -> None:
        """One tick's fetch: Binance forced, the rest when their shared cache is empty."""
        symbols = json.dumps([f"{c}USDT" for c in COINS], separators=(",", ":"))
        if self._get("binance", "/api/v3/ticker/24hr", params={"symbols": symbols}):
            self.client.set("multi_crypto_prices_realtime", "1", px=max(1, int(5000 * self.cache_scale)))
        for provider, key, ttl in CACHED:
            if provider == "finnhub" and not self.finnhub_key:
                continue
            if self.client.exists(key):
                continue
            if self._fetch(provider):  # a failure is not cached: asked again next tick
                self.client.set(key, "1", px=max(1, int(ttl * 1000 * self.cache_scale)))
        if publish:
            flat = json.dumps({"written": written, "by": node})
            self.client.set("latest_market_data", flat, px=max(1, int(5000 * self.cache_scale)))
            self.client.xadd("market_data_stream", {"data": flat}, maxlen=1000, approximate=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--node", default=f"ws-orig-{os.getpid()}-{random.randrange(16**4):04x}")
    parser.add_argument("--sim", help="call the upstreams as the original did, at this simulated exchange")
    parser.add_argument("--no-election", action="store_true", help="every node fetches (with --sim)")
    parser.add_argument("--cache-scale", type=float, default=1.0,
                        help="scale the original's cache times (5 s, 5 min, 1 h, 3 h) by this factor")
    parser.add_argument("--finnhub-key", default=None)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis, socket_timeout=2, socket_connect_timeout=2)
    upstreams = Upstreams(client, args.sim, args.node, cache_scale=args.cache_scale,
                          finnhub_key=args.finnhub_key) if args.sim else None
    renew, release = client.register_script(RENEW), client.register_script(RELEASE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    leader = False
    last_seen = 0.0
    emit("started", node=args.node)
    # Instances start at unrelated moments, so their ticks are out of phase.
    if stop.wait(random.uniform(0, args.interval)):
        return 0
    # A fixed-rate tick (tokio's interval, main.rs:194-201): the work of a tick does not delay the next.
    next_tick = time.monotonic()
    while True:
        next_tick += args.interval
        if stop.wait(max(0.0, next_tick - time.monotonic())):
            break
        try:
            if upstreams is not None and args.no_election:
                upstreams.tick(redis_now(client), args.node, publish=True)
                continue
            if leader:
                if not renew(keys=["websocket:leader"], args=[args.node, args.ttl]):
                    leader = False
                    emit("lost", node=args.node, t=redis_now(client))
                    continue
                written = redis_now(client)  # the fetch is instant here
                if upstreams is not None:
                    upstreams.tick(written, args.node, publish=True)
                    continue
                client.set("latest_market_data", json.dumps({"written": written, "by": args.node}),
                           ex=args.ttl)
            elif client.set("websocket:leader", args.node, nx=True, ex=args.ttl):
                leader = True
                emit("acquired", node=args.node, t=redis_now(client))
                written = redis_now(client)  # and fetches at once (the kindest reading)
                if upstreams is not None:
                    upstreams.tick(written, args.node, publish=True)
                    continue
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
