"""The follower's work: receive what the leader publishes, read the cache as a fallback.

One pub/sub connection carries two channels. Snapshots on the updates
channel go to the node's :meth:`~feed.node.delivery.Delivery.offer` (which drops
anything not newer); messages on the leader-events channel go to their
owner, the leadership (:meth:`~feed.election.leadership.Leadership.on_leader_event`).
After every (re)subscription, and whenever nothing has arrived for 1.5
intervals, the cached snapshot is read, so a publish missed while the
subscription was down is not lost. The leader runs this too: its own
publishes come back through it, and it follows the moment it stops leading.

The same connection carries the node's presence (feed/election/presence.py):
a subscription to ``<prefix>:alive:<node_id>`` that nothing publishes to.
It is reported up when Redis confirms it and down the moment the connection
fails; a lost connection is made again within a fraction of the presence
grace period, so that a reconnect is not mistaken for a death.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from feed.election.leadership import Leadership
from feed.election.lock import LeaderEvent
from feed.election.presence import Presence, refused
from feed.envelope import Envelope, EnvelopeError
from feed.keys import Keys
from feed.logs import log_event, redact_text
from feed.node.delivery import Delivery
from feed.observer import Observer, Quiet, notify
from feed.redisconn.health import RedisHealth
from feed.redisconn.values import text

__all__ = ["FollowerRole"]

log = logging.getLogger(__name__)


class FollowerRole:
    """Runs for the node's whole life; see the module docstring."""

    def __init__(self, node_id: str, client: redis.Redis, keys: Keys, leadership: Leadership,
                 delivery: Delivery, *, interval: float, stopped: threading.Event,
                 presence: Presence | None = None, observer: Observer | None = None) -> None:
        self.node_id = node_id
        self.client = client
        self.leadership = leadership
        self.delivery = delivery
        self.stopped = stopped
        self.observer: Observer = observer or Quiet()
        self.health = RedisHealth(node_id, "subscription")
        self.fallback = interval * 1.5
        self.routes = {keys.updates: self._on_update, keys.leader_events: self._on_leader_event}
        self.presence = presence
        self.alive = presence.channel if presence is not None else None
        # Reconnect soon enough that a dropped connection is back within the
        # presence grace period; without presence, back off further.
        self.max_backoff = 2.0 if presence is None else max(0.05, min(2.0, presence.grace / 2))
        self._pubsub: Any = None
        if presence is not None:
            presence.resubscribe = self.resubscribe

    @property
    def role(self) -> str:
        return self.leadership.role

    def run(self) -> None:
        backoff = 0.0
        while not self.stopped.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub()
                self._pubsub = pubsub
                channels = list(self.routes)
                if self._presence_in_use():
                    channels.append(self.alive)
                pubsub.subscribe(*channels)
                self._set_ok(True)
                backoff = 0.0
                self.delivery.catch_up()
                self._listen(pubsub)
            except redis.ResponseError as exc:
                if self._presence_in_use() and refused(exc):
                    # The alive channel is refused (an ACL's channel rules):
                    # carry on without presence, on the lock's TTL.
                    self.presence.unavailable(exc)
                    continue
                self._lost(exc)
                backoff = min(self.max_backoff, max(0.05, backoff * 2))
                self.stopped.wait(backoff)
            except (redis.RedisError, OSError) as exc:
                self._lost(exc)
                backoff = min(self.max_backoff, max(0.05, backoff * 2))
                self.stopped.wait(backoff)
            except Exception:
                log.exception("follower loop failed", extra={"fields": {
                    "event": "follower_error", "node": self.node_id, "role": self.role}})
                self.stopped.wait(1.0)
            finally:
                self._pubsub = None
                if self.presence is not None:
                    self.presence.down()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass

    def resubscribe(self) -> None:
        """Drop the connection and make it again (the server holding the lock does not see it)."""
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            try:
                pubsub.connection.disconnect()
            except Exception:  # noqa: BLE001 - the listening loop notices and reconnects
                pass

    def _presence_in_use(self) -> bool:
        return self.presence is not None and self.presence.in_use

    def _lost(self, exc: Exception) -> None:
        if self.presence is not None:
            self.presence.down()
            notify(lambda: self.observer.presence(False), "presence")
        self._set_ok(False, exc)

    def _listen(self, pubsub: Any) -> None:
        last_read = time.monotonic()
        while not self.stopped.is_set():
            message = pubsub.get_message(timeout=min(1.0, self.fallback))
            kind = message.get("type") if message is not None else None
            if kind == "message":
                route = self.routes.get(text(message["channel"]))
                if route is not None:
                    route(message["data"])
            elif kind == "subscribe" and self.presence is not None and text(message["channel"]) == self.alive:
                # Redis has our presence again: a leader renews at once, and
                # acts again when that renewal confirms the lock is still its own.
                self.presence.up()
                notify(lambda: self.observer.presence(True), "presence")
                self.leadership.wake()
            now = time.monotonic()
            if now - self.delivery.last_delivery > self.fallback and now - last_read > self.fallback:
                # Nothing pushed for a while: read the cache in case we missed it.
                last_read = now
                self.delivery.catch_up()

    def _on_update(self, data: Any) -> None:
        try:
            env = Envelope.from_json(data)
        except EnvelopeError as exc:
            log_event(log, "bad_update", logging.WARNING, node=self.node_id, role=self.role,
                      error=str(exc))
            return
        self.delivery.offer(env)

    def _on_leader_event(self, data: Any) -> None:
        event = LeaderEvent.parse(data)
        if event is not None:
            self.leadership.on_leader_event(event)

    def _set_ok(self, ok: bool, exc: Exception | None = None) -> None:
        health = self.health
        if ok != health.ok:
            notify(lambda: self.observer.redis_reachable(ok), "redis_reachable")
            if not ok and health.ok is not None:
                log_event(log, "subscription_lost", logging.WARNING, node=self.node_id,
                          role=self.role, error=redact_text(f"{type(exc).__name__}: {exc}"))
            elif ok and health.ok is False:
                log_event(log, "subscription_restored", node=self.node_id, role=self.role)
        if ok:
            health.succeeded(self.role)
        elif exc is not None:
            health.failed(exc, self.role)
