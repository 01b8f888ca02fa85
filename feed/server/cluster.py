"""The cluster view, read straight from Redis: who leads, the live nodes, the leadership log, the budget.

``/status`` serves it as JSON; ``python -m feed status`` prints it for
operators (``--json`` for the same JSON, ``--watch`` to refresh).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import redis

from feed.config.settings import Settings
from feed.election.fence import read_cached
from feed.election.lock import read_leadership_log
from feed.election.presence import live_nodes
from feed.envelope import EnvelopeError
from feed.errors import ConfigError
from feed.providers.budget import upstream_view
from feed.providers.fetcher import active_providers
from feed.redisconn.url import redact_url
from feed.redisconn.values import text

__all__ = ["cluster_view", "format_view", "main"]


def cluster_view(client: redis.Redis, settings: Settings, events: int = 20) -> dict[str, Any]:
    """Leader, epoch, lock TTL, live nodes, cached snapshot, recent events, upstream budget.

    The budget lists the providers that run (Finnhub and CoinMarketCap only
    with their keys). Raises RedisError; a Redis that refuses ``PUBSUB
    CHANNELS`` gives ``nodes: None`` and the reason in ``nodes_error``.
    """
    keys = settings.keys
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.leader)
    pipe.pttl(keys.leader)
    pipe.get(keys.epoch)
    pipe.pttl(keys.data)
    pipe.get(keys.deputy)
    leader, pttl, epoch, data_pttl, deputy = pipe.execute()
    nodes: list[dict[str, Any]] | None
    nodes_error = None
    try:
        nodes = live_nodes(client, keys, text(leader), text(deputy))
    except redis.ResponseError as exc:
        nodes, nodes_error = None, f"{type(exc).__name__}: {exc}"[:200]
    try:
        snap = read_cached(client, keys)
        snapshot: dict[str, Any] | None = None if snap is None else {
            "epoch": snap.epoch, "seq": snap.seq, "leader": snap.leader,
            "fetched_at": snap.fetched_at, "age_s": round(snap.age(time.time()), 3),
            "ttl_ms": int(data_pttl),
        }
    except EnvelopeError as exc:
        snapshot = {"error": f"cached value is not a snapshot: {exc}"}
    history = read_leadership_log(client, keys, events)
    changes = sum(1 for e in history if e.get("event") == "acquired")
    return {
        "leader": text(leader),
        "epoch": int(epoch or 0),
        "lock_ttl_ms": int(pttl) if leader is not None else None,
        "deputy": text(deputy),
        "nodes": nodes,
        **({"nodes_error": nodes_error} if nodes_error else {}),
        "snapshot": snapshot,
        "leadership_changes_in_history": changes,
        "events": history,
        "upstream": upstream_view(client, keys, active_providers(settings),
                                  {"coingecko": settings.coingecko_monthly_calls}),
        "keys": {"leader": keys.leader, "epoch": keys.epoch, "data": keys.data,
                 "events": keys.leadership_log, "upstream": keys.upstream},
    }


def format_view(view: dict[str, Any], url: str | None) -> str:
    lines = [f"redis       {redact_url(url)}"]
    if view["leader"]:
        lines.append(f"leader      {view['leader']}  (lock expires in {view['lock_ttl_ms'] / 1000:.1f} s)")
    else:
        lines.append("leader      none: the lock is free (an election is due)")
    lines.append(f"epoch       {view['epoch']}")
    nodes = view.get("nodes")
    if nodes is None:
        lines.append(f"nodes       unknown ({view.get('nodes_error', 'not reported')})")
    elif not nodes:
        lines.append("nodes       none present (presence off, or nobody runs)")
    for i, n in enumerate(nodes or []):
        clients = "?" if n["clients"] is None else n["clients"]
        lines.append(f"{'' if i else 'nodes':<12}{n['node']:<28} {n['role']:<9} {clients} clients")
    snap = view["snapshot"]
    if snap is None:
        lines.append("snapshot    none cached")
    elif "error" in snap:
        lines.append(f"snapshot    {snap['error']}")
    else:
        lines.append(f"snapshot    epoch {snap['epoch']} seq {snap['seq']} from {snap['leader']}, "
                     f"{snap['age_s']:.1f} s old")
    for i, (provider, u) in enumerate((view.get("upstream") or {}).items()):
        c = u["calls"]
        state = "ok"
        if u.get("blocked"):
            b = u["blocked"]
            state = f"blocked {b['for_s']:.0f} s more ({b['outcome']}: {b['detail']})"
        quota = f" of {u['monthly_quota']['calls']}" if u.get("monthly_quota") else ""
        lines.append(f"{'' if i else 'upstream':<12}{provider:<10} "
                     f"{c['minute']}/min {c['day']}/day {c['month']}{quota}/month  {state}")
    lines.append("events      (newest last)")
    for e in view["events"]:
        stamp = time.strftime("%H:%M:%S", time.gmtime(e["ts"])) + f".{int(e['ts'] * 1000) % 1000:03d}Z"
        extra = f" ({e['reason']})" if e.get("reason") else ""
        lines.append(f"  {stamp}  {e.get('event', '?'):<12} {e.get('node', '?')}  epoch {e.get('epoch', '?')}"
                     f"{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feed status",
                                     description="Who leads, the epoch and recent leadership events.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--events", type=int, default=20, help="how many recent events (default 20)")
    parser.add_argument("--watch", type=float, default=0, metavar="SECONDS", help="refresh every SECONDS")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    from feed.redisconn.client import connect

    client = connect(url, settings.redis_timeout)
    while True:
        try:
            view = cluster_view(client, settings, args.events)
        except redis.RedisError as exc:
            print(f"cannot read the cluster view from {redact_url(url)}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(view, indent=2))
        else:
            print(format_view(view, url))
        if not args.watch:
            return 0
        time.sleep(args.watch)
        print()
