"""The node: one per process. Its leadership plus the leader's and the follower's work.

The leadership is chosen once, at start-up: the Redis election
(:class:`~feed.election.candidate.Election`, with the fenced store) or, with
``ELECTION=off``, :class:`~feed.election.solo.Solo` (always leader, the
unfenced store). As leader the node fetches and publishes
(:class:`~feed.node.leader.LeaderRole`); while others compete for the lead
it also follows (:class:`~feed.node.follower.FollowerRole`). Either way each
new snapshot reaches ``listener`` through one
:class:`~feed.node.delivery.Delivery`, exactly once and in ``(epoch, seq)``
order. The roles are given what they use (the leadership, the store, the
delivery), never the node itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from feed.config.settings import Settings
from feed.election.candidate import Election
from feed.election.fence import FencedStore, OriginalContract, SnapshotStore, UnfencedStore
from feed.election.identity import make_node_id
from feed.election.leadership import Leadership, Role
from feed.election.presence import Presence
from feed.election.solo import Solo
from feed.election.term import LeaderCallbacks, Term
from feed.envelope import Envelope
from feed.logs import log_event
from feed.node.delivery import Delivery, Listener
from feed.node.follower import FollowerRole
from feed.node.leader import Fetch, LeaderRole, Schedule
from feed.observer import Observer, Quiet, notify
from feed.redisconn.url import redact_url

__all__ = ["FeedNode", "choose_leadership"]

log = logging.getLogger(__name__)


def choose_leadership(settings: Settings, client: redis.Redis, node_id: str,
                      event_class: type = threading.Event, presence: Presence | None = None,
                      clients: Callable[[], int] | None = None,
                      callbacks: LeaderCallbacks | None = None) -> tuple[Leadership, SnapshotStore]:
    """The leadership and the store that go with it, as ``settings`` say."""
    keys = settings.keys
    if not settings.election:
        return Solo(node_id, event_class, callbacks), UnfencedStore(client, keys, settings.cache_ttl)
    election = Election(client, node_id, keys, ttl=settings.lock_ttl,
                        renew_interval=settings.renew_interval, margin=settings.lease_margin,
                        events_maxlen=settings.events_maxlen, event_class=event_class,
                        presence=presence, clients=clients, callbacks=callbacks)
    original = OriginalContract(settings.original_cache_ttl, settings.original_stream_maxlen) \
        if settings.original_compat else None
    return election, FencedStore(client, keys, settings.cache_ttl, original)


class FeedNode:
    """Leadership, fetch-and-publish and follow for one process.

    ``fetch(term, previous)`` returns the snapshot's ``data`` or raises (any
    exception is a failed fetch; :class:`~feed.errors.FetchFailed` is the
    expected one).
    ``schedule(term)``, if given, says when the fetch is next due by the
    cluster's budget: a new term's first fetch is anchored there.
    ``observer`` (feed/observer.py) is told of terms, fetches, writes,
    deliveries and the paths to Redis, for metrics. ``clients()``
    counts this node's WebSocket clients, for the cluster's node list.
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        fetch: Fetch,
        listener: Listener | None = None,
        *,
        node_id: str | None = None,
        observer: Observer | None = None,
        thread_class: type = threading.Thread,
        event_class: type = threading.Event,
        clients: Callable[[], int] | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.node_id = node_id or settings.node_id or make_node_id(settings.replica_label)
        self.observer: Observer = observer or Quiet()
        self.thread_class = thread_class
        self.keys = settings.keys
        # Presence goes with the election (feed/election/presence.py); None: the TTL alone.
        self.presence = None
        if settings.election and settings.presence:
            self.presence = Presence(self.node_id, self.keys, grace=settings.presence_grace,
                                     poll=settings.presence_poll)
        callbacks = LeaderCallbacks(started=self._started, stopped=self._stopped)
        self.leadership, self.store = choose_leadership(settings, client, self.node_id, event_class,
                                                        self.presence, clients, callbacks)
        self.stopped = event_class()
        self._threads: list[Any] = []
        lead = self.leadership
        self.delivery = Delivery(self.node_id, self.store, listener, self.observer,
                                 observe_epoch=lead.observe_epoch, role=lambda: self.role)
        self.leader = LeaderRole(self.node_id, lead, self.store, self.delivery, fetch,
                                 interval=settings.fetch_interval, stopped=self.stopped, schedule=schedule,
                                 step_down_after=settings.step_down_after, hold_off=settings.lock_ttl,
                                 presence=self.presence, observer=self.observer, event_class=event_class)
        if self.presence is not None:
            self.presence.on_down = self.leader.wake
        self.follower = FollowerRole(self.node_id, client, self.keys, lead, self.delivery,
                                     interval=settings.fetch_interval, stopped=self.stopped,
                                     presence=self.presence, observer=self.observer) \
            if lead.contested else None
        self.started_at = time.time()

    # --- lifecycle ------------------------------------------------------
    def start(self) -> FeedNode:
        targets = [self.leadership.run, self.leader.run]
        if self.follower is not None:
            targets.append(self.follower.run)
        for target in targets:
            t = self.thread_class(target=target, name=f"feed-{type(target.__self__).__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        log_event(log, "node_started", node=self.node_id, role=self.role,
                  redis=redact_url(self.settings.redis_url), election=self.leadership.contested,
                  interval=self.settings.fetch_interval)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop at once: a leader releases its lock before anything else.

        Then wait up to ``timeout`` for the loops to end (0: do not wait; call
        :meth:`join` later).
        """
        if not self.stopped.is_set():
            self.stopped.set()
            self.leadership.stop(release=True)
            self.leader.wake()
            log_event(log, "node_stopped", node=self.node_id, role=Role.STOPPED)
        if timeout:
            self.join(timeout)

    def join(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # --- state ----------------------------------------------------------
    @property
    def role(self) -> Role:
        return Role.STOPPED if self.stopped.is_set() else self.leadership.role

    @property
    def latest(self) -> Envelope | None:
        return self.delivery.latest

    @property
    def listener(self) -> Listener | None:
        return self.delivery.listener

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    def status(self) -> dict[str, Any]:
        """This node's view, for /health and /status (no secrets)."""
        now = time.time()
        latest = self.delivery.latest
        lead = self.leadership
        paths = [h for h in (lead.health, self.follower.health if self.follower else None) if h is not None]
        # Unreachable through any path we use is not ok; a misconfiguration
        # found on any path is the problem to report.
        redis_ok = None if all(h.ok is None for h in paths) else all(h.ok is not False for h in paths)
        failing = next((h for h in paths if h.problem), None) \
            or next((h for h in paths if h.ok is False), None)
        return {
            "node": self.node_id,
            "role": self.role,
            "leader": (self.node_id if self.is_leader else lead.leader_hint)
            or (latest.leader if latest else None),
            "epoch": lead.epoch if lead.is_leader else (latest.epoch if latest else 0),
            "election": lead.contested,
            "redis": {"ok": redis_ok, "url": redact_url(self.settings.redis_url),
                      "error": failing.error if failing else None,
                      "problem": failing.problem if failing else None},
            "snapshot": None if latest is None else {
                "epoch": latest.epoch, "seq": latest.seq, "leader": latest.leader,
                "fetched_at": latest.fetched_at, "age_s": round(latest.age(now), 3),
                "stale": latest.age(now) > self.settings.stale_after or latest.sections_stale,
            },
            "terms": lead.terms,
            "lease_remaining_s": round(lead.lease_remaining(), 3) if lead.contested else None,
            "presence": self.presence.status() if self.presence is not None else None,
            "fetch_failures_in_a_row": self.leader.failures,
            "uptime_s": round(now - self.started_at, 3),
        }

    # --- leadership callbacks ---------------------------------------------
    def _started(self, term: Term) -> None:
        notify(lambda: self.observer.elected(self.node_id, term.epoch, term.how), "elected")
        self.leader.started(term)

    def _stopped(self, term: Term, reason: str) -> None:
        notify(lambda: self.observer.lost(self.node_id, term.epoch, reason), "lost")
        self.leader.wake()
