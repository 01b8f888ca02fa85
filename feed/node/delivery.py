"""The one path by which a snapshot reaches this process's listener, from any source.

The leader's own publishes, the follower's subscription and the cache read
as a fallback all go through :meth:`Delivery.offer`, which passes an
envelope on exactly once and only if it is newer, by ``(epoch, seq)``, than
anything before. Every epoch seen is reported (``observe_epoch``), so the
node's next term is issued above it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from feed.election.fence import SnapshotStore
from feed.envelope import Envelope, EnvelopeError
from feed.logs import log_event
from feed.observer import Observer, notify

__all__ = ["Delivery", "Listener"]

log = logging.getLogger(__name__)

Listener = Callable[[Envelope], None]


class Delivery:
    """Holds the newest envelope and hands newer ones to ``listener``; see the module docstring."""

    def __init__(self, node_id: str, store: SnapshotStore, listener: Listener | None, observer: Observer,
                 *, observe_epoch: Callable[[int], None], role: Callable[[], str]) -> None:
        self.node_id = node_id
        self.store = store
        self.listener = listener
        self.observer = observer
        self.observe_epoch = observe_epoch
        self.role = role
        self._lock = threading.RLock()
        self._latest: Envelope | None = None
        #: monotonic time of the last delivery (the follower reads the cache after a silence).
        self.last_delivery = time.monotonic()

    @property
    def latest(self) -> Envelope | None:
        return self._latest

    def offer(self, env: Envelope) -> bool:
        """Deliver ``env`` to the listener if it is newer than anything before."""
        with self._lock:
            if self._latest is not None and env.key <= self._latest.key:
                return False
            self._latest = env
            self.last_delivery = time.monotonic()
            self.observe_epoch(env.epoch)
            notify(lambda: self.observer.delivered(env.epoch, env.seq), "delivered")
            if self.listener is not None:
                try:
                    self.listener(env)
                except Exception:
                    log.exception("listener failed", extra={"fields": {
                        "event": "listener_error", "node": self.node_id, "role": self.role()}})
            return True

    def catch_up(self) -> None:
        """Offer the cached snapshot: covers publishes missed while (re)subscribing.

        A Redis error propagates (the caller knows whether it matters).
        """
        try:
            env = self.store.read()
        except EnvelopeError as exc:
            log_event(log, "cache_corrupt", logging.WARNING, node=self.node_id, role=self.role(),
                      error=str(exc))
            return
        if env is not None:
            self.offer(env)
