"""No election: every node leads, and writes the cache unfenced (``ELECTION=off``).

The lab's baseline, the original design without its lock: it shows what
each node fetching on its own costs upstream. Chosen once at start-up, in
place of :class:`~feed.election.candidate.Election`.
"""

from __future__ import annotations

import math
import threading

from feed.election.leadership import Role
from feed.election.lock import LeaderEvent
from feed.election.term import LeaderCallbacks, Term
from feed.redisconn.health import RedisHealth

__all__ = ["Solo"]


class Solo:
    """Always the leader, under epoch 0, until stopped (see the module docstring)."""

    contested = False
    health: RedisHealth | None = None

    def __init__(self, node_id: str, event_class: type = threading.Event,
                 callbacks: LeaderCallbacks | None = None) -> None:
        if callbacks is not None and not isinstance(callbacks, LeaderCallbacks):
            raise TypeError("callbacks must be a LeaderCallbacks")
        self.node_id = node_id
        self.leader_hint: str | None = node_id
        self.terms = 1
        self.callbacks = callbacks or LeaderCallbacks()
        self._stopped = event_class()
        # One term for the node's life, under epoch 0 (nothing is fenced).
        self._term = Term(node_id, 0, can_act=lambda: not self._stopped.is_set(), event_class=event_class)

    @property
    def is_leader(self) -> bool:
        return not self._stopped.is_set()

    @property
    def role(self) -> Role:
        return Role.LEADER if self.is_leader else Role.STOPPED

    @property
    def epoch(self) -> int:
        return 0

    def lease_remaining(self) -> float:
        return math.inf if self.is_leader else 0.0

    def observe_epoch(self, epoch: int) -> None:
        pass

    def wake(self) -> None:
        pass

    def on_leader_event(self, event: LeaderEvent) -> None:
        pass

    def release(self, reason: str = "released", hold_off: float = 0.0) -> bool:
        return False

    def lose(self, epoch: int, reason: str) -> None:
        pass

    def run(self) -> None:
        self.callbacks.started(self._term)
        self._stopped.wait()

    def stop(self, release: bool = True) -> None:
        self._stopped.set()
        if self._term.end("released"):
            self.callbacks.stopped(self._term, "released")
