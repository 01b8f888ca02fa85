"""Prometheus metrics, aggregated across Gunicorn workers.

Under Gunicorn the master sets ``PROMETHEUS_MULTIPROC_DIR`` before it forks,
so every worker's prometheus-client writes its values to files there and
``/metrics`` (answered by any worker) merges all of them. Without that
variable (a single process) the values live in this object's own registry.

Per-client work never touches a metric: the hub counts in plain integers and
adds them here once per broadcast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "multiprocess_dir"]

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> str | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and os.path.isdir(path) else None


class Metrics:
    """Every metric of one process; ``node`` labels the per-node gauges.

    It is the service's :class:`~feed.observer.Observer`: each event updates its metrics.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        r = self.registry
        self.leader = Gauge("marketfeed_leader", "1 while this node leads", ["node"],
                            registry=r, multiprocess_mode="livesum")
        self.redis_up = Gauge("marketfeed_redis_up", "1 while this node reaches Redis", ["node"],
                              registry=r, multiprocess_mode="livesum")
        self.presence_up = Gauge("marketfeed_presence", "1 while Redis sees this node's presence "
                              "subscription (docs/RELIABILITY.md)", ["node"],
                              registry=r, multiprocess_mode="livesum")
        self.leadership_changes = Counter(
            "marketfeed_leadership_changes_total",
            "Leadership gained or ended, by node and kind (acquired, took_over when the old "
            "leader's presence was gone, released, lost reason)",
            ["node", "change"], registry=r)
        self.upstream_calls = Counter("marketfeed_upstream_calls_total",
                                      "HTTP calls to the market APIs by provider and outcome",
                                      ["provider", "outcome"], registry=r)
        self.upstream_seconds = Histogram("marketfeed_upstream_call_seconds",
                                          "Duration of one upstream HTTP call", ["provider"],
                                          buckets=_SLOW, registry=r)
        self.upstream_blocked = Gauge("marketfeed_upstream_blocked_seconds",
                                      "Seconds until a blocked provider may be called again "
                                      "(0: not blocked)",
                                      ["provider"], registry=r, multiprocess_mode="livemax")
        self.upstream_window = Gauge("marketfeed_upstream_calls_in_window",
                                     "Calls to a provider in the current minute, day and month "
                                     "(the cluster's count, as the leader sees it)", ["provider", "window"],
                                     registry=r,
                                     multiprocess_mode="livemax")
        self.fetches = Counter("marketfeed_fetches_total", "Leader fetches by outcome",
                               ["outcome"], registry=r)
        self.fetch_seconds = Histogram("marketfeed_fetch_seconds",
                                       "Duration of one whole fetch (all providers)",
                                       buckets=_SLOW, registry=r)
        self.writes = Counter("marketfeed_snapshot_writes_total",
                              "Fenced snapshot writes by outcome (ok, refused, error)",
                              ["outcome"], registry=r)
        self.snapshots = Counter("marketfeed_snapshots_received_total",
                                 "New snapshots this process delivered to its clients", registry=r)
        self.epoch = Gauge("marketfeed_snapshot_epoch", "Epoch of the newest snapshot",
                           registry=r, multiprocess_mode="livemax")
        self.fetched_at = Gauge("marketfeed_snapshot_fetched_timestamp_seconds",
                                "fetched_at of the newest snapshot (unix seconds)",
                                registry=r, multiprocess_mode="livemax")
        self.ws_clients = Gauge("marketfeed_ws_clients", "Connected WebSocket clients", ["node"],
                             registry=r, multiprocess_mode="livesum")
        self.connections = Counter("marketfeed_ws_connections_total",
                                   "WebSocket connections accepted", registry=r)
        self.rejected = Counter("marketfeed_ws_rejected_total",
                                "WebSocket upgrades refused, by reason", ["reason"], registry=r)
        self.ws_closed = Counter("marketfeed_ws_closed_total", "WebSocket connections ended, by close code",
                              ["code"], registry=r)
        self.sent = Counter("marketfeed_ws_messages_sent_total",
                            "Messages written to WebSocket clients, by kind", ["kind"], registry=r)
        self.superseded = Counter("marketfeed_ws_snapshots_superseded_total",
                                  "Snapshots a slow client skipped because a newer one replaced them",
                                  registry=r)
        self.slow_clients_dropped = Counter("marketfeed_ws_slow_clients_dropped_total",
                                    "Clients closed for making no progress reading", registry=r)
        self.bad_messages = Counter("marketfeed_ws_bad_messages_total",
                                    "Client messages refused, by error", ["error"], registry=r)
        self.broadcast_seconds = Histogram("marketfeed_ws_broadcast_seconds",
                                           "Time to hand one snapshot to every client of a worker",
                                           buckets=_FAST, registry=r)
        self.leader.labels(node).set(0)
        self.ws_clients.labels(node).set(0)

    # --- the Observer (feed/observer.py) ---------------------------------------
    def elected(self, node: str, epoch: int, how: str) -> None:
        self.leader.labels(self.node).set(1)
        self.leadership_changes.labels(self.node, "took_over" if how == "presence_lost" else "acquired").inc()

    def lost(self, node: str, epoch: int, reason: str) -> None:
        self.leader.labels(self.node).set(0)
        self.leadership_changes.labels(self.node, reason).inc()

    def fetched(self, ok: bool, seconds: float) -> None:
        self.fetches.labels("ok" if ok else "error").inc()
        self.fetch_seconds.observe(seconds)

    def written(self, outcome: str) -> None:
        self.writes.labels(outcome).inc()

    def delivered(self, epoch: int, seq: int) -> None:
        self.snapshots.inc()
        self.epoch.set(epoch)

    def redis_reachable(self, ok: bool) -> None:
        self.redis_up.labels(self.node).set(1 if ok else 0)

    def presence(self, up: bool) -> None:
        self.presence_up.labels(self.node).set(1 if up else 0)

    def upstream_state(self, provider: str, blocked_for: float, calls: Mapping[str, int]) -> None:
        self.upstream_blocked.labels(provider).set(blocked_for)
        for window, n in calls.items():
            self.upstream_window.labels(provider, window).set(n)

    def upstream_call(self, provider: str, outcome: str, seconds: float) -> None:
        self.upstream_calls.labels(provider, outcome).inc()
        if outcome != "skipped":
            self.upstream_seconds.labels(provider).observe(seconds)

    def broadcast(self, handed: int, superseded: int, fetched_at: float, seconds: float) -> None:
        self.sent.labels("snapshot").inc(handed)
        if superseded:
            self.superseded.inc(superseded)
        self.fetched_at.set(fetched_at)
        self.broadcast_seconds.observe(seconds)

    def clients(self, count: int) -> None:
        self.ws_clients.labels(self.node).set(count)

    def connected(self) -> None:
        self.connections.inc()

    def bad_message(self, error: str) -> None:
        self.bad_messages.labels(error).inc()

    def closed(self, code: str) -> None:
        self.ws_closed.labels(code).inc()

    def slow_dropped(self) -> None:
        self.slow_clients_dropped.inc()

    # --- exposition ----------------------------------------------------------
    def render(self) -> bytes:
        """Prometheus text: every worker's values when running under Gunicorn."""
        path = multiprocess_dir()
        if path:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)
            return generate_latest(registry)
        return generate_latest(self.registry)
