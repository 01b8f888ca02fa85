"""The per-worker lifecycle under Gunicorn's gevent worker.

Gunicorn's own SIGTERM handler only sets ``worker.alive = False``; the worker
then stops accepting within a second and waits up to ``graceful_timeout`` for
open requests, and every WebSocket is an open request. So this module installs
its own SIGTERM handler (a gevent signal watcher, run at once on the loop)
that, in this order: releases leadership (one Redis round trip, so another
node takes over immediately), closes every client with 1001 so it reconnects
to another instance, and then lets the worker loop exit. (WebSockets are not
Gunicorn requests once upgraded -- see feed/wsconn.py -- so the worker would
not otherwise wait for them.)
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import gevent

from feed.logs import log_event
from feed.server.service import FeedService

__all__ = ["service_of", "start_worker", "stop_worker"]

log = logging.getLogger(__name__)


def service_of(worker: Any) -> FeedService | None:
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", None) or {}
    return extensions.get("marketfeed")


def start_worker(worker: Any) -> None:
    """``post_worker_init``: start this worker's node and install the SIGTERM path."""
    service = service_of(worker)
    if service is None:
        log_event(log, "no_service", logging.ERROR, pid=worker.pid)
        return

    def on_sigterm() -> None:
        if service.stopping:
            return
        log_event(log, "sigterm", node=service.node_id, role=service.node.role)
        service.shutdown()
        # What Gunicorn's own handler would have done, but only now: WebSockets
        # are not Gunicorn requests here, so the worker would not wait for them.
        worker.alive = False

    gevent.signal_handler(signal.SIGTERM, on_sigterm)
    service.start()
    log_event(log, "worker_ready", node=service.node_id, pid=worker.pid,
              connections=worker.worker_connections)


def stop_worker(worker: Any) -> None:
    """``worker_int`` / ``worker_exit``: make sure the lock is given back."""
    service = service_of(worker)
    if service is not None and not service.stopping:
        service.shutdown(drain_timeout=1.0)
