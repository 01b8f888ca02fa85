"""The leader's work: start a term, fetch on schedule, publish under the fence, step down.

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
from typing import TYPE_CHECKING

import redis

from feed.election.fence import Term
from feed.election.leadership import Role
from feed.envelope import Envelope
from feed.errors import FetchFailed
from feed.logs import log_event

if TYPE_CHECKING:
    from feed.node.node import FeedNode

__all__ = ["LeaderRole"]

log = logging.getLogger(__name__)


class LeaderRole:
    """Runs while the node leads; see the module docstring."""

    def __init__(self, node: FeedNode, fetch: Callable[[Term, Envelope | None], dict],
                 event_class: type = threading.Event) -> None:
        self.node = node
        self.fetch = fetch
        self.interval = node.settings.fetch_interval
        self._tick = event_class()  # wakes the loop: elected, lost, stopped
        self.seq = 0
        self.term = -1  # the epoch of the running term; -1 when not leading
        self.last_epoch = -1  # the epoch of the last term, running or not
        self._paused = False  # logged once per pause: presence down
        self.next_due = 0.0  # unix time of the next fetch
        self.failures = 0  # consecutive failed fetches in this term

    def wake(self) -> None:
        self._tick.set()

    def run(self) -> None:
        node = self.node
        while not node.stopped.is_set():
            try:
                self.step()
            except Exception:
                log.exception("leader step failed", extra={"fields": {
                    "event": "leader_error", "node": node.node_id, "role": node.role}})
                node.stopped.wait(0.5)

    def _wait(self, seconds: float) -> None:
        self._tick.wait(seconds)
        self._tick.clear()

    def step(self) -> None:
        """One round: wait for the lead or the next fetch, or fetch and publish."""
        lead = self.node.leadership
        if not lead.is_leader:
            self.term = -1
            self._wait(1.0)
            return
        epoch = lead.epoch
        if epoch != self.term:
            self.begin_term(epoch)
        if not self.may_act():
            # Our presence is down: the deputy may take over once the grace
            # period has passed, so stop now (the term goes on if it comes back).
            self._wait(0.05)
            return
        delay = self.next_due - time.time()
        if delay > 0:
            # Wake before the lease ends, so a lost lease is noticed in time.
            self._wait(min(delay, max(0.05, lead.lease_remaining())))
            return
        self.fetch_and_publish(epoch)

    def begin_term(self, epoch: int) -> None:
        node = self.node
        if epoch != self.last_epoch:
            # seq counts from 1 in each epoch, and only there: clients keep
            # the highest (epoch, seq), so a restart under the same epoch
            # would have them drop every snapshot until seq caught up.
            self.seq = 0
        self.term = self.last_epoch = epoch
        self.failures = 0  # a step-down counts failures within one term
        if node.leadership.contested:
            # Anchor the schedule on the newest snapshot anywhere, so a change
            # of leader neither repeats nor skips a fetch.
            try:
                node.catch_up()
            except redis.RedisError:
                pass
        latest = node.latest
        self.next_due = latest.fetched_at + self.interval if latest else time.time()
        log_event(log, "term_started", node=node.node_id, role=node.role, epoch=epoch,
                  next_fetch_in_s=round(max(0.0, self.next_due - time.time()), 3))

    def fetch_and_publish(self, epoch: int) -> None:
        node = self.node
        started = time.time()
        t0 = time.monotonic()
        self.next_due = started + self.interval
        try:
            data = self.fetch(Term(node.node_id, epoch), node.latest)
            if not isinstance(data, dict):
                raise FetchFailed(f"fetch returned {type(data).__name__}, not a dict")
        except Exception as exc:  # noqa: BLE001 - any failure of the fetch is counted
            self.failures += 1
            seconds = time.monotonic() - t0
            node.notify(lambda o: o.fetched(False, seconds), "fetched")
            log_event(log, "fetch_failed", logging.WARNING, node=node.node_id, role=node.role,
                      epoch=epoch, failures_in_a_row=self.failures,
                      error=f"{type(exc).__name__}: {exc}")
            kept = exc.data if isinstance(exc, FetchFailed) else None
            if kept is not None:
                # Nothing new came in, but nothing vanishes: the kept sections
                # go out again, their age and staleness marked.
                self.publish(epoch, started, kept)
            self.maybe_step_down(epoch)
            return
        self.failures = 0
        seconds = time.monotonic() - t0
        node.notify(lambda o: o.fetched(True, seconds), "fetched")
        self.publish(epoch, started, data)

    def may_act(self) -> bool:
        """False while this node's presence is down (feed/election/presence.py)."""
        presence = self.node.presence
        if presence is None or presence.can_act:
            self._paused = False
            return True
        if not self._paused:
            self._paused = True
            log_event(log, "leader_paused", logging.WARNING, node=self.node.node_id, role=Role.LEADER,
                      epoch=self.term, reason="presence_down")
        return False

    def publish(self, epoch: int, started: float, data: dict) -> None:
        """Write one snapshot through the node's store and give it to the node's listener."""
        node = self.node
        if not self.may_act():
            return  # fetched while present, but not to be written now
        self.seq += 1
        env = Envelope(epoch=epoch, seq=self.seq, leader=node.node_id, fetched_at=started, data=data)
        try:
            result = node.store.write(node.node_id, env)
        except redis.RedisError as exc:
            node.notify(lambda o: o.written("error"), "written")
            log_event(log, "write_failed", logging.WARNING, node=node.node_id, role=node.role,
                      epoch=epoch, seq=env.seq, error=f"{type(exc).__name__}: {exc}")
            # Unknown whether it landed. A store that publishes delivers it
            # through the echo if it did; one that does not, only here.
            if not node.store.echoes:
                node.offer(env)
            return
        if result.ok:
            node.notify(lambda o: o.written("ok"), "written")
            node.offer(env)
            log_event(log, "snapshot_published", logging.DEBUG, node=node.node_id,
                      role=Role.LEADER, epoch=epoch, seq=env.seq, receivers=result.receivers)
        else:
            node.notify(lambda o: o.written("refused"), "written")
            log_event(log, "write_refused", logging.WARNING, node=node.node_id,
                      role=node.role, epoch=epoch, seq=env.seq, reason=result.reason)
            node.leadership.lose(epoch, "write_refused")

    def maybe_step_down(self, epoch: int) -> None:
        node = self.node
        n = node.settings.step_down_after
        if not node.leadership.contested or n <= 0 or self.failures < n:
            return
        log_event(log, "stepping_down", logging.WARNING, node=node.node_id, role=Role.LEADER,
                  epoch=epoch, failures_in_a_row=self.failures)
        self.failures = 0
        # Hold off for one TTL so that another node (perhaps with a working
        # path to the upstream) takes over; alone, this node leads again after.
        node.leadership.release("stepped_down", hold_off=node.settings.lock_ttl)
