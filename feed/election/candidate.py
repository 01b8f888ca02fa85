"""One candidate in the leader election: campaign, renew, release, and the lease.

The lock and its scripts are in :mod:`feed.election.lock`. What this module
adds is the candidate's side: it keeps a *lease*, acting as leader only
while it can prove the lock is still its own (last successful renewal + TTL
- safety margin); as follower it sleeps until the lock's expiry (its PTTL),
not a fixed poll, and a release message wakes it at once. With presence
(:mod:`feed.election.presence`) a follower steps through WATCH instead of
ACQUIRE, and one of them, the deputy, steps every poll interval to take the
lock over from a leader whose process is gone.

The class is blocking and concurrency-agnostic: run :meth:`Election.run` in a
thread, or in a greenlet in a gevent-patched process.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from feed.election.leadership import Role
from feed.election.lock import (
    ACQUIRE,
    RECORD_LOSS,
    RELEASE,
    RENEW,
    Acquired,
    Held,
    LeaderEvent,
    ScriptReplyError,
    decode_acquire,
    decode_flag,
    decode_take,
)
from feed.election.presence import RENEW_PRESENT, SETTLE_AFTER_FAILOVER_S, WATCH, Presence, refused
from feed.election.term import LeaderCallbacks, Term
from feed.errors import MarketfeedError
from feed.keys import Keys
from feed.logs import log_event
from feed.redisconn.health import RedisHealth
from feed.redisconn.values import text

__all__ = ["AcquireResult", "Election", "ElectionError", "LeaderInfo"]

log = logging.getLogger(__name__)


class ElectionError(MarketfeedError, ValueError):
    """An argument that cannot work (raised at construction, not later)."""


@dataclass(frozen=True)
class AcquireResult:
    acquired: bool
    epoch: int
    holder: str | None
    pttl_ms: int
    #: As the deputy: step again in this many seconds (None: not the deputy).
    watch_s: float | None = None
    #: How the lock was taken: ``free`` or, from a dead leader, ``presence_lost``.
    how: str = "free"


@dataclass(frozen=True)
class LeaderInfo:
    node: str | None
    pttl_ms: int
    epoch: int


class Election:
    """One candidate in the election; see the module docstring.

    ``callbacks`` (:class:`~feed.election.term.LeaderCallbacks`) are called
    from the thread running :meth:`run` (or from the caller of
    :meth:`release`), never while a lock of this object is held: ``started``
    with each new :class:`~feed.election.term.Term`, ``stopped`` with it and
    the reason (``released``, ``stepped_down``, ``renew_refused``,
    ``lease_expired``, ``write_refused``), ``new_leader`` for every
    acquisition announced.
    """

    contested = True

    def __init__(
        self,
        client: redis.Redis,
        node_id: str,
        keys: Keys | None = None,
        *,
        ttl: float = 10.0,
        renew_interval: float = 3.0,
        margin: float = 2.0,
        events_maxlen: int = 1000,
        callbacks: LeaderCallbacks | None = None,
        clock: Callable[[], float] = time.monotonic,
        event_class: type = threading.Event,
        presence: Presence | None = None,
        clients: Callable[[], int] | None = None,
    ) -> None:
        if not node_id or any(c.isspace() for c in node_id):
            raise ElectionError("node_id must be a non-empty string without spaces")
        if not ttl > 2 * renew_interval > 0:
            raise ElectionError(f"ttl ({ttl}) must be greater than 2 x renew_interval ({renew_interval})")
        if not 0 <= margin < ttl - renew_interval:
            raise ElectionError(f"margin ({margin}) must be in [0, ttl - renew_interval)")
        if callbacks is not None and not isinstance(callbacks, LeaderCallbacks):
            raise ElectionError("callbacks must be a LeaderCallbacks")
        self.client = client
        self.node_id = node_id
        self.keys = keys or Keys()
        self.ttl = ttl
        self.ttl_ms = max(1, int(ttl * 1000))
        self.renew_interval = renew_interval
        self.margin = margin
        self.events_maxlen = events_maxlen
        self.callbacks = callbacks or LeaderCallbacks()
        self.event_class = event_class
        self.clock = clock

        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._record_loss = client.register_script(RECORD_LOSS)
        self._watch = client.register_script(WATCH)
        self._renew_present = client.register_script(RENEW_PRESENT)
        #: This node's presence (None: the lock's TTL alone decides).
        self.presence = presence
        self.clients = clients or (lambda: 0)

        self._state = threading.Lock()
        self._wake = event_class()
        self._stopped = event_class()
        self._role = Role.FOLLOWER
        self._epoch = 0  # our current term's epoch, 0 when not leading
        self._term: Term | None = None  # our current term's handle
        self._deadline = 0.0  # monotonic time our lease ends
        self._floor = 0  # highest epoch this node has seen anywhere
        self._hold_off_until = 0.0  # after a step-down: let another take over
        self._backoff = 0.0
        self.health = RedisHealth(node_id, "election")
        self.leader_hint: str | None = None  # holder seen by the last attempt
        self.terms = 0  # how many times this node became leader

    # --- state ----------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True only while this node holds a lease it can prove is valid."""
        return self._role == Role.LEADER and self.clock() < self._deadline

    @property
    def role(self) -> str:
        if self._stopped.is_set():
            return Role.STOPPED
        if self.is_leader:
            return Role.LEADER
        if self.health.ok is False:
            return Role.DISCONNECTED
        return Role.FOLLOWER

    @property
    def epoch(self) -> int:
        """The epoch of our current term, or 0 when we do not lead."""
        return self._epoch if self.is_leader else 0

    def proves(self, epoch: int) -> bool:
        """True while our lease under ``epoch`` is valid and our presence (if kept) is up."""
        if not (self._role == Role.LEADER and self._epoch == epoch and self.clock() < self._deadline):
            return False
        return self.presence is None or self.presence.can_act

    @property
    def epoch_floor(self) -> int:
        return self._floor

    def lease_remaining(self) -> float:
        return max(0.0, self._deadline - self.clock()) if self._role == Role.LEADER else 0.0

    def observe_epoch(self, epoch: int) -> None:
        """Record an epoch seen elsewhere (a snapshot), so ours stays above it."""
        if epoch > self._floor:
            self._floor = epoch

    def wake(self) -> None:
        """Make the loop try again now."""
        self._wake.set()

    def on_leader_event(self, event: LeaderEvent) -> None:
        """A message from the leader-events channel (routed here by the node)."""
        if event.epoch is not None:
            self.observe_epoch(event.epoch)
        if event.kind == "released" and event.node != self.node_id:
            self.leader_hint = None
            self.wake()  # the lock is free: campaign now, not at its expiry
        elif event.kind == "acquired":
            self.leader_hint = event.node
            self._call(self.callbacks.new_leader, event.node, event.epoch)
        elif event.kind == "deputy_wanted" and event.node != self.node_id and self._presence_in_use():
            self.wake()  # nobody watches the leader's presence: offer to

    # --- single operations ---------------------------------------------
    def try_acquire(self) -> AcquireResult:
        """One attempt; becomes leader (and calls ``on_elected``) on success."""
        started = self.clock()
        if started < self._hold_off_until:
            return AcquireResult(False, 0, None, int((self._hold_off_until - started) * 1000))
        presence = self.presence if self._presence_in_use() else None
        if presence is not None and not presence.subscribed:
            # Our own subscription is down: as leader the deputy could not see
            # us and would take over. Only look (which also tells whether Redis
            # is there at all), and wait for it: the follower role reconnects.
            info = self.leader()
            self.leader_hint = info.node
            return AcquireResult(False, 0, info.node, info.pttl_ms, watch_s=min(0.1, presence.poll))
        reply = self._call_watch() if presence is not None else None
        if reply is None:
            k = self.keys
            reply = decode_acquire(self._acquire(
                keys=[k.leader, k.epoch, k.leadership_log],
                args=[self.node_id, self.ttl_ms, self._floor, self.events_maxlen, k.leader_events],
            ))
        self._connected()
        if isinstance(reply, Held):
            self.leader_hint = reply.holder
            self.observe_epoch(reply.epoch)
            return AcquireResult(False, 0, reply.holder, reply.pttl_ms,
                                 None if reply.next_ms is None else reply.next_ms / 1000.0)
        epoch, how = reply.epoch, reply.how
        previous = self.leader_hint
        self.observe_epoch(epoch)
        self.leader_hint = self.node_id
        term = None
        with self._state:
            if self._stopped.is_set():
                newly = False
            else:
                newly = self._role != Role.LEADER or self._epoch != epoch
                self._role = Role.LEADER
                self._epoch = epoch
                self._deadline = started + self.ttl - self.margin
                if newly:
                    term = self._term = Term(self.node_id, epoch, how=how,
                                             can_act=lambda: self.proves(epoch), event_class=self.event_class)
        if self._stopped.is_set():
            # stop() ran while our call was in flight: give the lock back.
            self._release_script(epoch, "released")
            return AcquireResult(False, epoch, self.node_id, 0)
        if self.presence is not None:
            self.presence.confirmed_by(started)
        if newly:
            self.terms += 1
            if how == "presence_lost":
                # The old holder's process is gone (its subscription closed):
                # taken over without waiting for its lock's TTL.
                log_event(log, "leader_acquired", node=self.node_id, role=Role.LEADER, epoch=epoch,
                          reason=how, previous=previous)
            else:
                log_event(log, "leader_acquired", node=self.node_id, role=Role.LEADER, epoch=epoch)
            self._call(self.callbacks.started, term)
        return AcquireResult(True, epoch, self.node_id, reply.ttl_ms, how=how)

    def renew(self) -> bool:
        """Extend our lease; False (and ``on_lost``) when it is no longer ours.

        A Redis error propagates: the lease is then still valid until its
        deadline, and :meth:`run` retries until then.
        """
        epoch = self._epoch
        if self._role != Role.LEADER:
            return False
        started = self.clock()
        ok = self._call_renew_present(epoch) if self._presence_in_use() else None
        if ok is None:
            ok = decode_flag("RENEW", self._renew(
                keys=[self.keys.leader, self.keys.epoch], args=[self.node_id, self.ttl_ms, epoch]
            ))
        self._connected()
        if ok == 2 and self.presence is not None:
            # Renewed, but the server holding the lock does not see our
            # subscription (it stayed on an old master): stop acting and
            # subscribe again; the next renewal after that confirms us.
            log_event(log, "presence_not_seen", logging.WARNING, node=self.node_id, role=Role.LEADER,
                      epoch=epoch)
            self.presence.not_seen()
            ok = 1
        if ok == 1:
            with self._state:
                late = self.clock() >= self._deadline
                if not late and self._role == Role.LEADER and self._epoch == epoch:
                    self._deadline = started + self.ttl - self.margin
            if not late:
                if self.presence is not None:
                    self.presence.confirmed_by(started)
                return True
            # The reply came after our lease had ended (Redis paused, a
            # retried call): the leader role has stopped acting on it, and a
            # term that ended never revives. The lock is still ours, so the
            # next ACQUIRE takes it at once, under a new epoch.
            self.lose(epoch, "lease_expired")
            return False
        self.lose(epoch, "renew_refused")
        return False

    def release(self, reason: str = "released", hold_off: float = 0.0) -> bool:
        """Give up leadership now; followers are woken through pub/sub.

        ``hold_off`` keeps this node from campaigning again for that many
        seconds, so that another node takes over (health-based step-down).
        Returns True if Redis confirmed the release.
        """
        with self._state:
            was_leader = self._role == Role.LEADER
            epoch, term = self._epoch, self._term
            # Stop acting as leader before the round trip, not after.
            self._role = Role.FOLLOWER
            self._epoch = 0
            self._deadline = 0.0
            self._term = None
            if hold_off:
                self._hold_off_until = self.clock() + hold_off
        if not was_leader:
            return False
        try:
            released = self._release_script(epoch, reason)
        except redis.RedisError as exc:
            self._disconnected(exc)
            released = False
        log_event(
            log, "leader_released", node=self.node_id, role=Role.FOLLOWER, epoch=epoch,
            reason=reason, confirmed=released,
        )
        self._ended(term, reason)
        return released

    def lose(self, epoch: int, reason: str) -> None:
        """Record that the term ``epoch`` is over (renewal refused, lease run out...)."""
        with self._state:
            if self._role != Role.LEADER or self._epoch != epoch:
                return
            term = self._term
            self._role = Role.FOLLOWER
            self._epoch = 0
            self._deadline = 0.0
            self._term = None
        log_event(log, "leader_lost", logging.WARNING, node=self.node_id, role=Role.FOLLOWER,
                  epoch=epoch, reason=reason)
        try:  # the leadership log only: best effort
            self._record_loss(keys=[self.keys.leadership_log],
                              args=[self.node_id, epoch, self.events_maxlen, reason])
        except redis.RedisError:
            pass
        self._ended(term, reason)

    def leader(self) -> LeaderInfo:
        """Who holds the lock now, its remaining TTL and the current epoch."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.leader)
        pipe.pttl(self.keys.leader)
        pipe.get(self.keys.epoch)
        node, pttl, epoch = pipe.execute()
        self._connected()
        return LeaderInfo(text(node), int(pttl), int(epoch or 0))

    # --- the loop -------------------------------------------------------
    def run(self) -> None:
        """Campaign and keep the lease until :meth:`stop`; never raises."""
        while not self._stopped.is_set():
            try:
                delay = self.step()
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything
                delay = self._on_error(exc)
            if self._stopped.is_set():
                break
            self._wake.wait(max(0.0, delay))
            self._wake.clear()

    def step(self) -> float:
        """One round: renew if leading, else try to acquire. Returns the next delay."""
        if self._role == Role.LEADER:
            now = self.clock()
            if now >= self._deadline:
                self.lose(self._epoch, "lease_expired")
                return 0.0
            try:
                if self.renew():
                    return self._next_renewal()
                return 0.0  # lost: campaign again at once (the lock may be free)
            except redis.RedisError as exc:
                self._disconnected(exc)
                left = self._deadline - self.clock()
                if left <= 0:
                    self.lose(self._epoch, "lease_expired")
                    return 0.0
                # Keep trying while the lease lasts, as Kubernetes' RetryPeriod.
                return min(0.5, left)
        result = self.try_acquire()
        if result.acquired:
            return self._next_renewal()
        if result.watch_s is not None:
            return result.watch_s  # the deputy: watch the leader's presence
        if result.pttl_ms > 0:
            # Sleep until the lock expires (a release event wakes us sooner);
            # a little jitter spreads the candidates.
            return min(result.pttl_ms / 1000.0, self.ttl) + random.uniform(0.0, 0.02)
        if result.pttl_ms == -1:  # a lock without TTL: set by hand; poll it
            return self.renew_interval
        return 0.0

    def _next_renewal(self) -> float:
        """After a renewal (or an acquisition): the renew interval, or sooner if the lease is short.

        The lease counts from when the call was sent; a reply slow to come
        (Redis paused, a retried call) leaves less of it than usual, and a
        renewal a whole interval later would find it over.
        """
        return min(self.renew_interval, max(0.0, (self._deadline - self.clock()) / 2))

    def stop(self, release: bool = True) -> None:
        """End the loop; release the lock at once if we hold it."""
        self._stopped.set()
        self._wake.set()
        if release:
            self.release("released")

    # --- presence -------------------------------------------------------
    def _presence_in_use(self) -> bool:
        return self.presence is not None and self.presence.in_use

    def _call_watch(self) -> Acquired | Held | None:
        """WATCH (see feed/election/presence.py); None when Redis refuses presence."""
        k, p = self.keys, self.presence
        assert p is not None
        try:
            reply = self._watch(
                keys=[k.leader, k.epoch, k.leadership_log, k.deputy, k.presence, k.presence_server,
                      k.node(self.node_id)],
                args=[self.node_id, self.ttl_ms, self._floor, self.events_maxlen, k.leader_events,
                      k.alive_prefix, k.node_prefix, int(p.grace * 1000), int(p.poll * 1000),
                      self._clients(), int(SETTLE_AFTER_FAILOVER_S * 1000)],
            )
        except redis.ResponseError as exc:
            if not refused(exc):
                raise
            p.unavailable(exc)
            return None
        return decode_take("WATCH", reply)

    def _call_renew_present(self, epoch: int) -> int | None:
        k, p = self.keys, self.presence
        assert p is not None
        try:
            reply = self._renew_present(
                keys=[k.leader, k.epoch, k.deputy, k.node(self.node_id)],
                args=[self.node_id, self.ttl_ms, epoch, k.alive_prefix, self._clients(), k.leader_events],
            )
        except redis.ResponseError as exc:
            if not refused(exc):
                raise
            p.unavailable(exc)
            return None
        return decode_flag("RENEW_PRESENT", reply, (0, 1, 2))

    def _clients(self) -> int:
        try:
            return int(self.clients())
        except Exception:  # noqa: BLE001 - a count for the node list, never worth a failed step
            return 0

    # --- helpers --------------------------------------------------------
    def _release_script(self, epoch: int, reason: str) -> bool:
        k = self.keys
        done = self._release(
            keys=[k.leader, k.leadership_log],
            args=[self.node_id, epoch, self.events_maxlen, k.leader_events, reason],
        )
        self._connected()
        return decode_flag("RELEASE", done) == 1

    def _connected(self) -> None:
        self.health.succeeded(self.role)
        self._backoff = 0.0

    def _disconnected(self, exc: Exception) -> None:
        self.health.failed(exc, self.role)

    def _on_error(self, exc: Exception) -> float:
        if isinstance(exc, redis.RedisError):
            self._disconnected(exc)
        elif isinstance(exc, ScriptReplyError):
            # Another version's script under our name, or a foreign one: never
            # taken for success; retried with back-off, and said loudly.
            log_event(log, "script_reply_unexpected", logging.ERROR, node=self.node_id, role=self.role,
                      script=exc.script, reply=repr(exc.reply)[:200])
        else:
            log.exception("election step failed", extra={"fields": {
                "event": "election_error", "node": self.node_id, "role": self.role}})
        self._backoff = min(2.0, max(0.1, self._backoff * 2))
        return self._backoff * random.uniform(0.8, 1.2)

    def _ended(self, term: Term | None, reason: str) -> None:
        if term is not None and term.end(reason):
            self._call(self.callbacks.stopped, term, reason)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("election callback failed", extra={"fields": {
                "event": "callback_error", "node": self.node_id}})
