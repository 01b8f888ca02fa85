"""What a node asks of its leadership, whoever provides it.

:class:`~feed.election.candidate.Election` (the Redis election) and
:class:`~feed.election.solo.Solo` (no election: always leader) both provide
it; the node picks one at start-up and never asks which it has. Either
takes a :class:`~feed.election.term.LeaderCallbacks` at construction and
hands each term to it as a :class:`~feed.election.term.Term`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from feed.election.lock import LeaderEvent
from feed.redisconn.health import RedisHealth

__all__ = ["Leadership", "Role"]


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    # Redis cannot be reached: this node claims nothing.
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


class Leadership(Protocol):
    node_id: str
    #: True if other nodes compete for the lead: then the node follows when
    #: not leading, and a leader may step down.
    contested: bool
    #: Who holds the lock, as far as this node knows.
    leader_hint: str | None
    #: How many times this node became leader.
    terms: int
    #: This node's path to Redis for the election, if it has one.
    health: RedisHealth | None

    @property
    def is_leader(self) -> bool: ...

    @property
    def role(self) -> Role: ...

    @property
    def epoch(self) -> int: ...

    def lease_remaining(self) -> float: ...

    def observe_epoch(self, epoch: int) -> None: ...

    def wake(self) -> None: ...

    def on_leader_event(self, event: LeaderEvent) -> None: ...

    def release(self, reason: str = "released", hold_off: float = 0.0) -> bool: ...

    def lose(self, epoch: int, reason: str) -> None: ...

    def run(self) -> None: ...

    def stop(self, release: bool = True) -> None: ...
