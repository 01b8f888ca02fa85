"""The node: one per process. Election plus the leader's or the follower's work.

As leader it fetches on a schedule anchored on the last snapshot's
``fetched_at`` and writes through the fenced script; as follower it receives
snapshots pushed on the updates channel (with a cache read as fallback).
Either way each new snapshot reaches ``listener`` exactly once, in
``(epoch, seq)`` order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from .config import Settings, redact_url
from .election import Election, Role
from .envelope import Envelope, EnvelopeError
from .errors import FetchFailed
from .identity import make_node_id
from .logs import log_event, redact_text
from .redis_health import RedisHealth
from .store import SnapshotStore

__all__ = ["FeedNode"]

log = logging.getLogger("feed.node")

Fetch = Callable[[], dict]
Listener = Callable[[Envelope], None]
EventSink = Callable[..., None]


class FeedNode:
    """Election, fetch-and-publish and follow for one process.

    ``fetch()`` returns the snapshot's ``data`` or raises (any exception is a
    failed fetch; :class:`~feed.errors.FetchFailed` is the expected one).
    ``on_event(name, **fields)`` receives ``fetch``, ``write``, ``elected``,
    ``lost``, ``snapshot`` and ``redis`` events, for metrics.
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        fetch: Fetch,
        listener: Listener | None = None,
        *,
        node_id: str | None = None,
        on_event: EventSink | None = None,
        thread_class: type = threading.Thread,
        event_class: type = threading.Event,
    ) -> None:
        self.settings = settings
        self.client = client
        self.fetch = fetch
        self.listener = listener
        self.node_id = node_id or settings.node_id or make_node_id(settings.replica_id)
        self.on_event = on_event
        self.thread_class = thread_class
        self.keys = settings.keys
        self.interval = settings.fetch_interval
        self.store = SnapshotStore(client, self.keys, settings.cache_ttl)
        self.election: Election | None = None
        if settings.election:
            self.election = Election(
                client, self.node_id, self.keys,
                ttl=settings.lock_ttl, renew_interval=settings.renew_interval,
                margin=settings.lease_margin, events_maxlen=settings.events_maxlen,
                on_elected=self._on_elected, on_lost=self._on_lost, event_class=event_class,
            )
        self._stopped = event_class()
        self._tick = event_class()  # wakes the leader loop (elected, lost, stop)
        self._deliver_lock = threading.RLock()
        self._latest: Envelope | None = None
        self._last_delivery = time.monotonic()
        self._threads: list[Any] = []
        self._seq = 0
        self._term = -1
        self._next_due = 0.0
        self.failures = 0  # consecutive failed fetches while leading
        self.pubsub_health = RedisHealth(self.node_id, "subscription")
        self.started_at = time.time()

    # --- lifecycle ------------------------------------------------------
    def start(self) -> FeedNode:
        targets = [self._lead_loop]
        if self.election is not None:
            targets = [self.election.run, self._lead_loop, self._follow_loop]
        for target in targets:
            t = self.thread_class(target=target, name=f"feed-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        log_event(log, "node_started", node=self.node_id, role=self.role,
                  redis=redact_url(self.settings.redis_url), election=self.election is not None,
                  interval=self.interval)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop at once: a leader releases its lock before anything else.

        Then wait up to ``timeout`` for the loops to end (0: do not wait; call
        :meth:`join` later).
        """
        if not self._stopped.is_set():
            self._stopped.set()
            if self.election is not None:
                self.election.stop(release=True)
            self._tick.set()
            log_event(log, "node_stopped", node=self.node_id, role=Role.STOPPED)
        if timeout:
            self.join(timeout)

    def join(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # --- state ----------------------------------------------------------
    @property
    def role(self) -> str:
        if self._stopped.is_set():
            return Role.STOPPED
        if self.election is None:
            return Role.LEADER  # without election every node fetches
        return self.election.role

    @property
    def latest(self) -> Envelope | None:
        return self._latest

    @property
    def is_leader(self) -> bool:
        return self.election is None or self.election.is_leader

    def status(self) -> dict[str, Any]:
        """This node's view, for /health and /status (no secrets)."""
        now = time.time()
        latest = self._latest
        e = self.election
        paths = [h for h in (e.health if e else None, self.pubsub_health) if h is not None]
        # Unreachable through any path we use is not ok; a misconfiguration
        # found on any path is the problem to report.
        redis_ok = None if all(h.ok is None for h in paths) else all(h.ok is not False for h in paths)
        failing = next((h for h in paths if h.problem), None) \
            or next((h for h in paths if h.ok is False), None)
        return {
            "node": self.node_id,
            "role": self.role,
            "leader": (self.node_id if self.is_leader else (e.leader_hint if e else None))
            or (latest.leader if latest else None),
            "epoch": e.epoch if e and e.is_leader else (latest.epoch if latest else 0),
            "election": e is not None,
            "redis": {"ok": redis_ok, "url": redact_url(self.settings.redis_url),
                      "error": failing.error if failing else None,
                      "problem": failing.problem if failing else None},
            "snapshot": None if latest is None else {
                "epoch": latest.epoch, "seq": latest.seq, "leader": latest.leader,
                "fetched_at": latest.fetched_at, "age_s": round(latest.age(now), 3),
                "stale": latest.age(now) > self.settings.stale_after,
            },
            "terms": e.terms if e else 0,
            "lease_remaining_s": round(e.lease_remaining(), 3) if e else None,
            "fetch_failures_in_a_row": self.failures,
            "uptime_s": round(now - self.started_at, 3),
        }

    # --- delivery -------------------------------------------------------
    def offer(self, env: Envelope) -> bool:
        """Deliver ``env`` to the listener if it is newer than anything before."""
        with self._deliver_lock:
            if self._latest is not None and env.key <= self._latest.key:
                return False
            self._latest = env
            self._last_delivery = time.monotonic()
            if self.election is not None:
                self.election.observe_epoch(env.epoch)
            self._emit("snapshot", epoch=env.epoch, seq=env.seq)
            if self.listener is not None:
                try:
                    self.listener(env)
                except Exception:
                    log.exception("listener failed", extra={"fields": {
                        "event": "listener_error", "node": self.node_id, "role": self.role}})
            return True

    def _catch_up(self) -> None:
        """Read the cache: covers publishes missed while (re)subscribing."""
        try:
            env = self.store.read()
        except EnvelopeError as exc:
            log_event(log, "cache_corrupt", logging.WARNING, node=self.node_id, role=self.role,
                      error=str(exc))
            return
        if env is not None:
            self.offer(env)

    # --- election callbacks ---------------------------------------------
    def _on_elected(self, epoch: int) -> None:
        self._emit("elected", epoch=epoch)
        self._tick.set()

    def _on_lost(self, epoch: int, reason: str) -> None:
        self._emit("lost", epoch=epoch, reason=reason)
        self._tick.set()

    # --- leader ---------------------------------------------------------
    def _lead_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self._lead_step()
            except Exception:
                log.exception("leader step failed", extra={"fields": {
                    "event": "leader_error", "node": self.node_id, "role": self.role}})
                self._stopped.wait(0.5)

    def _lead_step(self) -> None:
        e = self.election
        if e is not None and not e.is_leader:
            self._term = -1
            self._tick.wait(1.0)
            self._tick.clear()
            return
        epoch = e.epoch if e is not None else 0
        if epoch != self._term:
            self._begin_term(epoch)
        delay = self._next_due - time.time()
        if delay > 0:
            if e is not None:
                # Wake before the lease ends, so a lost lease is noticed in time.
                delay = min(delay, max(0.05, e.lease_remaining()))
            self._tick.wait(delay)
            self._tick.clear()
            return
        self._fetch_and_publish(epoch)

    def _begin_term(self, epoch: int) -> None:
        self._term = epoch
        self._seq = 0
        self.failures = 0  # a step-down counts failures within one term
        if epoch:
            # Anchor the schedule on the newest snapshot anywhere, so a change
            # of leader neither repeats nor skips a fetch.
            try:
                self._catch_up()
            except redis.RedisError:
                pass
        latest = self._latest
        self._next_due = latest.fetched_at + self.interval if latest else time.time()
        log_event(log, "term_started", node=self.node_id, role=self.role, epoch=epoch,
                  next_fetch_in_s=round(max(0.0, self._next_due - time.time()), 3))

    def _fetch_and_publish(self, epoch: int) -> None:
        started = time.time()
        t0 = time.monotonic()
        self._next_due = started + self.interval
        try:
            data = self.fetch()
            if not isinstance(data, dict):
                raise FetchFailed(f"fetch returned {type(data).__name__}, not a dict")
        except Exception as exc:  # noqa: BLE001 - any failure of the fetch is counted
            self.failures += 1
            self._emit("fetch", outcome="error", seconds=time.monotonic() - t0)
            log_event(log, "fetch_failed", logging.WARNING, node=self.node_id, role=self.role,
                      epoch=epoch, failures_in_a_row=self.failures,
                      error=f"{type(exc).__name__}: {exc}")
            self._maybe_step_down(epoch)
            return
        self.failures = 0
        self._emit("fetch", outcome="ok", seconds=time.monotonic() - t0)
        env = Envelope(epoch=epoch, seq=self._seq + 1, leader=self.node_id,
                       fetched_at=started, data=data)
        if self.election is None:
            self._seq += 1
            try:
                self.store.write_unfenced(env)
            except redis.RedisError as exc:
                log_event(log, "write_failed", logging.WARNING, node=self.node_id,
                          role=self.role, error=str(exc))
            self.offer(env)
            return
        try:
            result = self.store.write(self.node_id, env)
        except redis.RedisError as exc:
            # Unknown whether it landed; if it did, the pub/sub echo delivers it.
            self._emit("write", outcome="error")
            self._seq += 1
            log_event(log, "write_failed", logging.WARNING, node=self.node_id, role=self.role,
                      epoch=epoch, seq=env.seq, error=f"{type(exc).__name__}: {exc}")
            return
        if result.ok:
            self._seq += 1
            self._emit("write", outcome="ok")
            self.offer(env)
            log_event(log, "snapshot_published", logging.DEBUG, node=self.node_id,
                      role=Role.LEADER, epoch=epoch, seq=env.seq, receivers=result.receivers)
        else:
            self._emit("write", outcome="refused")
            log_event(log, "write_refused", logging.WARNING, node=self.node_id,
                      role=self.role, epoch=epoch, seq=env.seq, reason=result.reason)
            assert self.election is not None
            self.election.lose(epoch, "write_refused")

    def _maybe_step_down(self, epoch: int) -> None:
        n = self.settings.step_down_after
        if self.election is None or n <= 0 or self.failures < n:
            return
        log_event(log, "stepping_down", logging.WARNING, node=self.node_id, role=Role.LEADER,
                  epoch=epoch, failures_in_a_row=self.failures)
        self.failures = 0
        # Hold off for one TTL so that another node (perhaps with a working
        # path to the upstream) takes over; alone, this node leads again after.
        self.election.release("stepped_down", hold_off=self.settings.lock_ttl)

    # --- follower -------------------------------------------------------
    def _follow_loop(self) -> None:
        backoff = 0.0
        while not self._stopped.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.keys.updates, self.keys.leader_events)
                self._set_pubsub(True)
                backoff = 0.0
                self._catch_up()
                self._listen(pubsub)
            except (redis.RedisError, OSError) as exc:
                self._set_pubsub(False, exc)
                backoff = min(2.0, max(0.1, backoff * 2))
                self._stopped.wait(backoff)
            except Exception:
                log.exception("follower loop failed", extra={"fields": {
                    "event": "follower_error", "node": self.node_id, "role": self.role}})
                self._stopped.wait(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass

    def _listen(self, pubsub: Any) -> None:
        fallback = self.interval * 1.5
        last_read = time.monotonic()
        while not self._stopped.is_set():
            message = pubsub.get_message(timeout=min(1.0, fallback))
            if message is not None and message.get("type") == "message":
                self._handle(message)
            now = time.monotonic()
            if now - self._last_delivery > fallback and now - last_read > fallback:
                # Nothing pushed for a while: read the cache in case we missed it.
                last_read = now
                self._catch_up()

    def _handle(self, message: dict) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        data = message["data"]
        if channel == self.keys.updates:
            try:
                env = Envelope.from_json(data)
            except EnvelopeError as exc:
                log_event(log, "bad_update", logging.WARNING, node=self.node_id, role=self.role,
                          error=str(exc))
                return
            self.offer(env)
        elif channel == self.keys.leader_events and self.election is not None:
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
            kind, _, rest = text.partition(" ")
            holder, _, epoch = rest.partition(" ")
            if epoch.isdigit():
                self.election.observe_epoch(int(epoch))
            if kind == "released" and holder != self.node_id:
                self.election.leader_hint = None
                self.election.wake()
            elif kind == "acquired":
                self.election.leader_hint = holder

    def _set_pubsub(self, ok: bool, exc: Exception | None = None) -> None:
        health = self.pubsub_health
        if ok != health.ok:
            self._emit("redis", ok=ok)
            if not ok and health.ok is not None:
                log_event(log, "subscription_lost", logging.WARNING, node=self.node_id,
                          role=self.role, error=redact_text(f"{type(exc).__name__}: {exc}"))
            elif ok and health.ok is False:
                log_event(log, "subscription_restored", node=self.node_id, role=self.role)
        if ok:
            health.succeeded(self.role)
        elif exc is not None:
            health.failed(exc, self.role)

    def _emit(self, name: str, **fields: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, node=self.node_id, **fields)
            except Exception:
                log.exception("event sink failed", extra={"fields": {"event": "sink_error"}})
