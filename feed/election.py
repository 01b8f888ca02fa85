"""Leader election on one Redis key, with a fencing epoch.

The lock is the original service's: ``websocket:leader`` holds the leader's
node id with a TTL. What is added:

* every acquisition also advances ``websocket:epoch``, the fencing token that
  the snapshot write checks (see :mod:`feed.store`);
* a release publishes on ``websocket:leader-events`` so followers take over at
  once instead of waiting for the TTL;
* every acquisition, release and loss is appended to the capped stream
  ``websocket:events``;
* the leader keeps a *lease*: it acts as leader only while it can prove the
  lock is still its own (last successful renewal + TTL - safety margin).

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
from typing import Any

import redis

from .config import Keys
from .logs import log_event
from .redis_health import RedisHealth

__all__ = ["AcquireResult", "Election", "ElectionError", "LeaderInfo", "Role"]

log = logging.getLogger("feed.election")


class Role:
    LEADER = "leader"
    FOLLOWER = "follower"
    # Redis cannot be reached: this node claims nothing.
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


class ElectionError(Exception):
    """An argument that cannot work (raised at construction, not later)."""


# --- Lua scripts ---------------------------------------------------------
#
# Epoch rule (why the fencing token survives a Redis restart that lost it):
# the new epoch is max(stored + 1, floor + 1, redis_now_ms). `stored` is the
# epoch key; `floor` is the highest epoch the candidate has itself seen (from
# its own terms and every snapshot it received); `redis_now_ms` is the Redis
# server's clock in milliseconds. If Redis comes back empty, `stored` is 0,
# but the surviving candidates' floor is above every epoch they saw, and the
# clock has moved past every epoch issued earlier (epochs are issued at most
# one per millisecond on average, so they never run ahead of the clock for
# long). Either one alone keeps the epoch increasing; together they cover a
# cold restart of everything (only the clock remains) and a clock that steps
# back (the stored value and the floor remain).

# Why the lock being ours already still starts a new epoch: a candidate
# calls ACQUIRE only when it is not leading. If the lock still names it, its
# previous term ended on its own clock (the lease ran out while it was paused,
# or Redis was) or the reply to an earlier ACQUIRE was lost. Either way it
# starts a new term with seq 1; under the old epoch clients would drop every
# snapshot up to the old term's last seq as "not newer". So every successful
# ACQUIRE issues an epoch nobody has written under.
#
# KEYS: leader, epoch, events-stream
# ARGV: node_id, ttl_ms, epoch_floor, events_maxlen, leader_events_channel
# Returns {1, epoch, ttl_ms}      acquired (the lock was free or already ours):
#                                 a new epoch, the event logged and published
#         {0, holder, pttl, epoch} held by someone else
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
local stored = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if holder and holder ~= ARGV[1] then
  return {0, holder, redis.call('PTTL', KEYS[1]), string.format('%.0f', stored)}
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = math.max(stored + 1, (tonumber(ARGV[3]) or 0) + 1, now_ms)
local e = string.format('%.0f', epoch)
redis.call('SET', KEYS[2], e)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
           'event', 'acquired', 'node', ARGV[1], 'epoch', e)
redis.call('PUBLISH', ARGV[5], 'acquired ' .. ARGV[1] .. ' ' .. e)
return {1, e, tonumber(ARGV[2])}
"""

# KEYS: leader, epoch
# ARGV: node_id, ttl_ms, epoch
# Returns 1 renewed (TTL reset); 0 the lock or the epoch is no longer ours.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: leader, events-stream
# ARGV: node_id, epoch, events_maxlen, leader_events_channel, reason
# Returns 1 released (key deleted, event logged, followers woken);
#         0 not ours: nothing changed.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
             'event', ARGV[5], 'node', ARGV[1], 'epoch', ARGV[2])
  redis.call('PUBLISH', ARGV[4], 'released ' .. ARGV[1] .. ' ' .. ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class AcquireResult:
    acquired: bool
    epoch: int
    holder: str | None
    pttl_ms: int


@dataclass(frozen=True)
class LeaderInfo:
    node: str | None
    pttl_ms: int
    epoch: int


Callback = Callable[..., Any]


class Election:
    """One candidate in the election; see the module docstring.

    ``on_elected(epoch)`` and ``on_lost(epoch, reason)`` are called from the
    thread running :meth:`run` (or from the caller of :meth:`release`), never
    while a lock of this object is held. ``reason`` is one of ``released``,
    ``stepped_down``, ``renew_refused``, ``lease_expired``, ``write_refused``.
    """

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
        on_elected: Callback | None = None,
        on_lost: Callback | None = None,
        clock: Callable[[], float] = time.monotonic,
        event_class: type = threading.Event,
    ) -> None:
        if not node_id or any(c.isspace() for c in node_id):
            raise ElectionError("node_id must be a non-empty string without spaces")
        if not ttl > 2 * renew_interval > 0:
            raise ElectionError(f"ttl ({ttl}) must be greater than 2 x renew_interval ({renew_interval})")
        if not 0 <= margin < ttl - renew_interval:
            raise ElectionError(f"margin ({margin}) must be in [0, ttl - renew_interval)")
        self.client = client
        self.node_id = node_id
        self.keys = keys or Keys()
        self.ttl = ttl
        self.ttl_ms = max(1, int(ttl * 1000))
        self.renew_interval = renew_interval
        self.margin = margin
        self.events_maxlen = events_maxlen
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.clock = clock

        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

        self._state = threading.Lock()
        self._wake = event_class()
        self._stopped = event_class()
        self._role = Role.FOLLOWER
        self._epoch = 0  # our current term's epoch, 0 when not leading
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
        """Make the loop try again now (a release event arrived)."""
        self._wake.set()

    # --- single operations ---------------------------------------------
    def try_acquire(self) -> AcquireResult:
        """One attempt; becomes leader (and calls ``on_elected``) on success."""
        started = self.clock()
        if started < self._hold_off_until:
            return AcquireResult(False, 0, None, int((self._hold_off_until - started) * 1000))
        k = self.keys
        reply = self._acquire(
            keys=[k.leader, k.epoch, k.events],
            args=[self.node_id, self.ttl_ms, self._floor, self.events_maxlen, k.leader_events],
        )
        self._connected()
        code = int(reply[0])
        if code == 0:
            holder = _text(reply[1])
            self.leader_hint = holder
            self.observe_epoch(int(reply[3]))
            return AcquireResult(False, 0, holder, int(reply[2]))
        epoch = int(reply[1])
        self.observe_epoch(epoch)
        self.leader_hint = self.node_id
        with self._state:
            if self._stopped.is_set():
                newly = False
            else:
                newly = self._role != Role.LEADER or self._epoch != epoch
                self._role = Role.LEADER
                self._epoch = epoch
                self._deadline = started + self.ttl - self.margin
        if self._stopped.is_set():
            # stop() ran while our call was in flight: give the lock back.
            self._release_script(epoch, "released")
            return AcquireResult(False, epoch, self.node_id, 0)
        if newly:
            self.terms += 1
            log_event(log, "leader_acquired", node=self.node_id, role=Role.LEADER, epoch=epoch)
            self._call(self.on_elected, epoch)
        return AcquireResult(True, epoch, self.node_id, int(reply[2]))

    def renew(self) -> bool:
        """Extend our lease; False (and ``on_lost``) when it is no longer ours.

        A Redis error propagates: the lease is then still valid until its
        deadline, and :meth:`run` retries until then.
        """
        epoch = self._epoch
        if self._role != Role.LEADER:
            return False
        started = self.clock()
        ok = self._renew(
            keys=[self.keys.leader, self.keys.epoch], args=[self.node_id, self.ttl_ms, epoch]
        )
        self._connected()
        if int(ok) == 1:
            with self._state:
                if self._role == Role.LEADER and self._epoch == epoch:
                    self._deadline = started + self.ttl - self.margin
            return True
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
            epoch = self._epoch
            # Stop acting as leader before the round trip, not after.
            self._role = Role.FOLLOWER
            self._epoch = 0
            self._deadline = 0.0
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
        self._call(self.on_lost, epoch, reason)
        return released

    def lose(self, epoch: int, reason: str) -> None:
        """Record that the term ``epoch`` is over (renewal refused, lease run out...)."""
        with self._state:
            if self._role != Role.LEADER or self._epoch != epoch:
                return
            self._role = Role.FOLLOWER
            self._epoch = 0
            self._deadline = 0.0
        log_event(log, "leader_lost", logging.WARNING, node=self.node_id, role=Role.FOLLOWER,
                  epoch=epoch, reason=reason)
        try:  # history only: best effort, a single command
            self.client.xadd(
                self.keys.events,
                {"event": "lost", "node": self.node_id, "epoch": epoch, "reason": reason},
                maxlen=self.events_maxlen,
                approximate=True,
            )
        except redis.RedisError:
            pass
        self._call(self.on_lost, epoch, reason)

    def leader(self) -> LeaderInfo:
        """Who holds the lock now, its remaining TTL and the current epoch."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.leader)
        pipe.pttl(self.keys.leader)
        pipe.get(self.keys.epoch)
        node, pttl, epoch = pipe.execute()
        self._connected()
        return LeaderInfo(_text(node), int(pttl), int(epoch or 0))

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
                    return self.renew_interval
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
            return self.renew_interval
        if result.pttl_ms > 0:
            # Sleep until the lock expires (a release event wakes us sooner);
            # a little jitter spreads the candidates.
            return min(result.pttl_ms / 1000.0, self.ttl) + random.uniform(0.0, 0.02)
        if result.pttl_ms == -1:  # a lock without TTL: set by hand; poll it
            return self.renew_interval
        return 0.0

    def stop(self, release: bool = True) -> None:
        """End the loop; release the lock at once if we hold it."""
        self._stopped.set()
        self._wake.set()
        if release:
            self.release("released")

    # --- helpers --------------------------------------------------------
    def _release_script(self, epoch: int, reason: str) -> bool:
        k = self.keys
        done = self._release(
            keys=[k.leader, k.events],
            args=[self.node_id, epoch, self.events_maxlen, k.leader_events, reason],
        )
        self._connected()
        return int(done) == 1

    def _connected(self) -> None:
        self.health.succeeded(self.role)
        self._backoff = 0.0

    def _disconnected(self, exc: Exception) -> None:
        self.health.failed(exc, self.role)

    def _on_error(self, exc: Exception) -> float:
        if isinstance(exc, redis.RedisError):
            self._disconnected(exc)
        else:
            log.exception("election step failed", extra={"fields": {
                "event": "election_error", "node": self.node_id, "role": self.role}})
        self._backoff = min(2.0, max(0.1, self._backoff * 2))
        return self._backoff * random.uniform(0.8, 1.2)

    def _call(self, callback: Callback | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("election callback failed", extra={"fields": {
                "event": "callback_error", "node": self.node_id}})


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
