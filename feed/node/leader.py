"""The leader's work: start a term, fetch on schedule, publish under the fence, step down.

It is given each term as a handle (:class:`~feed.election.term.Term`) by
the leadership's ``started`` callback and stops acting the moment the term
may not act (its ``ended`` event, a lease it cannot prove, presence down).

A term starts when the node becomes leader under a new epoch; ``seq`` counts
its snapshots from 1. The schedule is anchored on the newest snapshot's
``fetched_at`` (read from the cache as the term starts), so a change of
leader neither repeats a fetch nor skips one. The fetch is given the term
(its budget writes go through the same fence) and the newest snapshot the
node holds (whose sections it keeps where nothing newer came in). Each
snapshot goes through the
node's store (fenced: Redis refuses it unless this node still holds the lock
under this epoch) and, once stored, to the node's own listener.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from feed.election.fence import SnapshotStore
from feed.election.leadership import Leadership, Role
from feed.election.presence import Presence
from feed.election.term import Term
from feed.envelope import Envelope
from feed.errors import FetchFailed
from feed.logs import log_event
from feed.node.delivery import Delivery
from feed.observer import Observer, Quiet, notify

__all__ = ["Fetch", "LeaderRole"]

log = logging.getLogger(__name__)

# fetch(term, previous) -> snapshot data; see feed/providers/fetcher.py.
Fetch = Callable[[Term, Envelope | None], dict]
# schedule(term) -> when the fetch is next due by the cluster's budget (unix
# seconds), or None; it may raise RedisError.
Schedule = Callable[[Term], "float | None"]


class LeaderRole:
    """Runs while the node leads; see the module docstring."""

    def __init__(self, node_id: str, leadership: Leadership, store: SnapshotStore, delivery: Delivery,
                 fetch: Fetch, *, interval: float, stopped: threading.Event, schedule: Schedule | None = None,
                 step_down_after: int = 0,
                 hold_off: float = 10.0, presence: Presence | None = None, observer: Observer | None = None,
                 event_class: type = threading.Event) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.node_id = node_id
        self.leadership = leadership
        self.store = store
        self.delivery = delivery
        self.fetch = fetch
        self.schedule = schedule
        self.interval = interval
        self.stopped = stopped
        self.step_down_after = step_down_after
        self.hold_off = hold_off
        self.presence = presence
        self.observer: Observer = observer or Quiet()
        self._tick = event_class()  # wakes the loop: a term began or ended, presence down, stopped
        self._given: Term | None = None  # the newest term the leadership handed us
        self.term: Term | None = None  # the term this loop runs (begun)
        self.seq = 0
        self.last_epoch = -1  # the epoch of the last term, running or not
        self._paused = False  # logged once per pause: presence down
        self.next_due = 0.0  # unix time of the next fetch
        self.failures = 0  # consecutive failed fetches in this term

    # --- the leadership's callbacks -----------------------------------------
    def started(self, term: Term) -> None:
        """A term began: the loop picks it up (and reads the cache) on its own thread."""
        self._given = term
        self._tick.set()

    def wake(self) -> None:
        self._tick.set()

    # --- the loop ----------------------------------------------------------
    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.step()
            except Exception:
                log.exception("leader step failed", extra={"fields": {
                    "event": "leader_error", "node": self.node_id, "role": self.leadership.role}})
                self.stopped.wait(0.5)

    def _wait(self, seconds: float) -> None:
        self._tick.wait(seconds)
        self._tick.clear()

    def step(self) -> None:
        """One round: wait for a term or the next fetch, or fetch and publish."""
        given = self._given
        if given is None or given.ended.is_set():
            self.term = None
            self._wait(1.0)
            return
        if given is not self.term:
            self.begin_term(given)
        term = given
        if not self.may_act():
            # Our presence is down (the deputy may take over once the grace
            # period has passed) or the lease is not proven: stop now; the
            # term goes on if it comes back.
            self._wait(0.05)
            return
        delay = self.next_due - time.time()
        if delay > 0:
            # Wake before the lease ends, so a lost lease is noticed in time.
            self._wait(min(delay, max(0.05, self.leadership.lease_remaining())))
            return
        self.fetch_and_publish(term)

    def begin_term(self, term: Term) -> None:
        if term.epoch != self.last_epoch:
            # seq counts from 1 in each epoch, and only there: clients keep
            # the highest (epoch, seq), so a restart under the same epoch
            # would have them drop every snapshot until seq caught up.
            self.seq = 0
        self.term = term
        self.last_epoch = term.epoch
        self.failures = 0  # a step-down counts failures within one term
        if self.leadership.contested:
            # The newest snapshot anywhere: its sections are where this term starts from.
            try:
                self.delivery.catch_up()
            except redis.RedisError:
                pass
        self.next_due = self._first_fetch(term)
        log_event(log, "term_started", node=self.node_id, role=self.leadership.role, epoch=term.epoch,
                  next_fetch_in_s=round(max(0.0, self.next_due - time.time()), 3))

    def _first_fetch(self, term: Term) -> float:
        """When a new term fetches first: so that a change of leader neither repeats nor skips a fetch.

        Anchored on the cluster budget's next-call times (the schedule), which
        only fetches move; within a term the fetches then follow every
        interval. Without a schedule (a fetch that keeps no budget) or
        without Redis, on the newest snapshot's fetch time.
        """
        now = time.time()
        if self.schedule is not None:
            try:
                due = self.schedule(term)
            except redis.RedisError:
                due = None
            if due is not None:
                return min(due, now + self.interval)
        latest = self.delivery.latest
        return latest.fetched_at + self.interval if latest else now

    def fetch_and_publish(self, term: Term) -> None:
        started = time.time()
        t0 = time.monotonic()
        self.next_due = started + self.interval
        try:
            data = self.fetch(term, self.delivery.latest)
            if not isinstance(data, dict):
                raise FetchFailed(f"fetch returned {type(data).__name__}, not a dict")
        except Exception as exc:  # noqa: BLE001 - any failure of the fetch is counted
            self.failures += 1
            seconds = time.monotonic() - t0
            notify(lambda: self.observer.fetched(False, seconds), "fetched")
            log_event(log, "fetch_failed", logging.WARNING, node=self.node_id, role=self.leadership.role,
                      epoch=term.epoch, failures_in_a_row=self.failures,
                      error=f"{type(exc).__name__}: {exc}")
            kept = exc.data if isinstance(exc, FetchFailed) else None
            if kept is not None:
                # Nothing new came in, but nothing vanishes: the kept sections
                # go out again, their age and staleness marked.
                self.publish(term, started, kept)
            self.maybe_step_down(term)
            return
        self.failures = 0
        seconds = time.monotonic() - t0
        notify(lambda: self.observer.fetched(True, seconds), "fetched")
        self.publish(term, started, data)

    def may_act(self) -> bool:
        """False once the running term may not act (ended, lease unproven, presence down)."""
        term = self.term
        if term is not None and term.may_act():
            self._paused = False
            return True
        if term is not None and not term.ended.is_set():
            self._present(term)  # logs a pause for presence once
        return False

    def _present(self, term: Term) -> bool:
        """False while this node's presence is down (feed/election/presence.py); logged once a pause."""
        presence = self.presence
        if presence is None or presence.can_act:
            return True
        if not self._paused:
            self._paused = True
            log_event(log, "leader_paused", logging.WARNING, node=self.node_id, role=Role.LEADER,
                      epoch=term.epoch, reason="presence_down")
        return False

    def publish(self, term: Term, started: float, data: dict) -> None:
        """Write one snapshot through the store and give it to the node's delivery."""
        if not self._present(term):
            return  # fetched while present, but not to be written now
        # Neither the lease nor the term's end is checked again here: a pause
        # can fall between any local check and the write, so the check that
        # counts is the fence, in Redis. A write from a term that has ended
        # lands only if the lock and the epoch are still this term's (nobody
        # else leads), and is refused otherwise.
        self.seq += 1
        env = Envelope(epoch=term.epoch, seq=self.seq, leader=self.node_id, fetched_at=started, data=data,
                       published_at=time.time())
        try:
            result = self.store.write(self.node_id, env)
        except redis.RedisError as exc:
            notify(lambda: self.observer.written("error"), "written")
            log_event(log, "write_failed", logging.WARNING, node=self.node_id, role=self.leadership.role,
                      epoch=term.epoch, seq=env.seq, error=f"{type(exc).__name__}: {exc}")
            # Unknown whether it landed. A store that publishes delivers it
            # through the echo if it did; one that does not, only here.
            if not self.store.echoes:
                self.delivery.offer(env)
            return
        if result.ok:
            notify(lambda: self.observer.written("ok"), "written")
            self.delivery.offer(env)
            log_event(log, "snapshot_published", logging.DEBUG, node=self.node_id,
                      role=Role.LEADER, epoch=term.epoch, seq=env.seq, receivers=result.receivers)
        else:
            notify(lambda: self.observer.written("refused"), "written")
            log_event(log, "write_refused", logging.WARNING, node=self.node_id,
                      role=self.leadership.role, epoch=term.epoch, seq=env.seq, reason=result.reason)
            self.leadership.lose(term.epoch, "write_refused")

    def maybe_step_down(self, term: Term) -> None:
        n = self.step_down_after
        if not self.leadership.contested or n <= 0 or self.failures < n:
            return
        log_event(log, "stepping_down", logging.WARNING, node=self.node_id, role=Role.LEADER,
                  epoch=term.epoch, failures_in_a_row=self.failures)
        self.failures = 0
        # Hold off for one TTL so that another node (perhaps with a working
        # path to the upstream) takes over; alone, this node leads again after.
        self.leadership.release("stepped_down", hold_off=self.hold_off)
