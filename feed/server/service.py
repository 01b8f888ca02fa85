"""One worker's service: its node, its hub, its fetcher and its metrics.

The Flask app holds one of these in ``app.extensions["marketfeed"]``. Gunicorn
starts it in ``post_worker_init`` (after gevent has patched the process) and
stops it on SIGTERM: the lock is released first, then clients get 1001.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import redis

from feed.config.settings import Settings
from feed.election.identity import make_node_id, opaque_label
from feed.errors import MarketfeedError
from feed.logs import log_event, redact_text
from feed.node.leader import Fetch
from feed.node.node import FeedNode
from feed.providers.fetcher import Fetcher
from feed.redisconn.client import connect
from feed.redisconn.url import redact_url
from feed.server.cluster import cluster_view
from feed.server.metrics import Metrics
from feed.ws.codecs.choice import default_codec
from feed.ws.hub import Hub

__all__ = ["FeedService", "ServiceNotConfigured"]

log = logging.getLogger(__name__)


class ServiceNotConfigured(MarketfeedError):
    pass


class FeedService:
    def __init__(self, settings: Settings, *, node_id: str | None = None,
                 fetch: Fetch | None = None) -> None:
        if not settings.redis_url:
            raise ServiceNotConfigured(
                "REDIS_URL is not set: run under `gunicorn -c gunicorn.conf.py` (it starts an "
                "embedded Redis when REDIS_URL is unset) or set REDIS_URL=redis://host:6379/0")
        self.settings = settings
        # Never NODE_ID here: every worker must be a candidate of its own.
        self.node_id = node_id or make_node_id(settings.replica_label)
        self.metrics = Metrics(self.node_id)
        self.client = connect(settings.redis_url, settings.redis_timeout)
        self._fetcher: Fetcher | None = None
        if fetch is None:
            from feed.providers.budget import RedisBudgetStore
            from feed.providers.fetcher import build_fetcher

            # An elected leader shares the upstream budget through Redis; without
            # an election every node keeps its own (the original design).
            store = RedisBudgetStore(self.client, settings.keys) if settings.election else None
            self._fetcher = build_fetcher(settings, self.node_id, self.metrics, store)
            fetch = self._fetcher
        # With internals hidden, clients see opaque node labels and a short status.
        self.label = partial(opaque_label, key=settings.operator_token or settings.key_prefix) \
            if settings.opaque_node_ids else None
        self.hub = Hub(
            self.node_id, observer=self.metrics, stale_after=settings.stale_after,
            ping_interval=settings.ping_interval, send_timeout=settings.send_timeout,
            max_message_bytes=settings.max_message_bytes,
            commands_per_second=settings.commands_per_second, send_buffer=settings.send_buffer,
            max_clients=settings.max_clients, send_threads=settings.send_threads,
            status=self.client_status, label=self.label, codec=default_codec(settings.original_compat),
        )
        self.node = FeedNode(settings, self.client, fetch, listener=self.hub.publish,
                             node_id=self.node_id, observer=self.metrics,
                             schedule=self._fetcher.next_due if self._fetcher is not None else None,
                             clients=lambda: len(self.hub.clients))
        self.started = False
        self.stopping = False
        self._status_cache: tuple[float, dict] | None = None

    # --- lifecycle ------------------------------------------------------
    def start(self) -> FeedService:
        if not self.started:
            self.started = True
            self.hub.start()
            self.node.start()
        return self

    def shutdown(self, drain_timeout: float = 3.0) -> None:
        """Release leadership at once, then close clients with 1001."""
        if self.stopping:
            return
        self.stopping = True
        t0 = time.monotonic()
        was_leader = self.node.is_leader
        self.node.stop(timeout=0)  # releases the lock before anything else
        released_ms = (time.monotonic() - t0) * 1000
        closed = self.hub.close_all()
        drained = self.hub.wait_closed(drain_timeout)
        self.hub.stop()
        self.node.join(1.0)
        if self._fetcher is not None:
            self._fetcher.close()
        log_event(log, "service_stopped", node=self.node_id, role="stopped", was_leader=was_leader,
                  release_ms=round(released_ms, 1), clients_closed=closed, drained=drained)

    # --- views ----------------------------------------------------------
    def node_status(self) -> dict[str, Any]:
        status = self.node.status()
        status["clients_on_this_worker"] = len(self.hub.clients)
        status["stopping"] = self.stopping
        return status

    def client_status(self) -> dict[str, Any]:
        """This node's view for a client's ``status`` command: all of it, or the public part."""
        s = self.node_status()
        if self.label is None:
            return s
        snap = s["snapshot"]
        return {
            "node": self.label(s["node"]), "role": s["role"],
            "leader": self.label(s["leader"]) if s["leader"] else None, "epoch": s["epoch"],
            "snapshot": None if snap is None else {k: snap[k] for k in ("epoch", "seq", "fetched_at",
                                                                       "age_s", "stale")},
        }

    def health(self) -> dict[str, Any]:
        """Liveness summary; never touches Redis, so it always answers fast.

        ``status`` is ``ok``, ``degraded`` (Redis refuses our credentials or
        commands: ``reason`` says which) or ``stopping``.
        """
        s = self.node_status()
        snap = s["snapshot"]
        problem = s["redis"]["problem"]
        status = "stopping" if self.stopping else "degraded" if problem else "ok"
        return {
            "status": status,
            "reason": f"redis_{problem}: {s['redis']['error']}" if problem else None,
            "node": s["node"],
            "role": s["role"],
            "leader": s["leader"],
            "epoch": s["epoch"],
            "redis": s["redis"],
            "presence": s["presence"],
            "snapshot_age_s": snap["age_s"] if snap else None,
            "stale": snap["stale"] if snap else None,
            "clients": s["clients_on_this_worker"],
        }

    def cluster_status(self, events: int = 20) -> tuple[dict[str, Any], bool]:
        """The cluster view from Redis plus this worker's view; (body, redis_ok)."""
        body: dict[str, Any] = {"this_worker": self.node_status(),
                                "redis_url": redact_url(self.settings.redis_url)}
        try:
            body["cluster"] = cluster_view(self.client, self.settings, events)
            return body, True
        except redis.RedisError as exc:
            body["cluster"] = None
            body["error"] = redact_text(f"Redis unreachable: {type(exc).__name__}: {exc}")
            return body, False
