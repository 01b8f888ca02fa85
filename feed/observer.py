"""What the node, the fetch and the hub tell whoever watches them (metrics, tests).

One typed interface, :class:`Observer`, instead of string-keyed events: a
method per event, with the arguments it is really called with. The
service's metrics (feed/server/metrics.py) implement it; :class:`Quiet` is
the default and the base for observers that care about a few events only.
Observers are called on the hot paths, from the thread or greenlet where the
event happens: they must be quick and must not raise (a raising observer is
logged and ignored by :func:`notify`).

Neutral: every package may import it; it imports nothing of the project.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

__all__ = ["Observer", "Quiet", "notify"]

log = logging.getLogger(__name__)


class Observer(Protocol):
    # --- the node (feed/node/) ---------------------------------------------
    def elected(self, node: str, epoch: int, how: str) -> None:
        """A term began; ``how`` is ``free`` or ``presence_lost`` (taken from a dead leader)."""

    def lost(self, node: str, epoch: int, reason: str) -> None:
        """A term ended: ``released``, ``stepped_down``, ``renew_refused``, ``lease_expired``..."""

    def fetched(self, ok: bool, seconds: float) -> None:
        """One whole fetch of the leader, successful or not."""

    def written(self, outcome: str) -> None:
        """One fenced snapshot write: ``ok``, ``refused`` or ``error``."""

    def delivered(self, epoch: int, seq: int) -> None:
        """A newer snapshot reached this process's listener."""

    def redis_reachable(self, ok: bool) -> None:
        """The node's subscription to Redis went up or down."""

    def presence(self, up: bool) -> None:
        """Redis sees (or stopped seeing) this node's presence subscription."""

    # --- the upstream calls (feed/providers/) ---------------------------------
    def upstream_call(self, provider: str, outcome: str, seconds: float) -> None:
        """One HTTP attempt (or a call skipped by a block: outcome ``skipped``)."""

    def upstream_state(self, provider: str, blocked_for: float, calls: Mapping[str, int]) -> None:
        """After each tick: seconds a provider stays blocked, its calls by minute, day, month."""

    # --- the hub (feed/ws/) -----------------------------------------------------
    def broadcast(self, handed: int, superseded: int, fetched_at: float, seconds: float) -> None:
        """A snapshot was handed to ``handed`` clients; ``superseded`` older ones were skipped."""

    def clients(self, count: int) -> None:
        """This worker now holds ``count`` clients."""

    def connected(self) -> None:
        """A WebSocket client was registered."""

    def bad_message(self, error: str) -> None:
        """A client message was refused with ``error``."""

    def closed(self, code: str) -> None:
        """A client connection ended with close ``code`` (as a label)."""

    def slow_dropped(self) -> None:
        """A client was closed for making no progress reading."""


class Quiet:
    """An observer that ignores everything: the default, and a base for partial ones."""

    def elected(self, node: str, epoch: int, how: str) -> None:
        pass

    def lost(self, node: str, epoch: int, reason: str) -> None:
        pass

    def fetched(self, ok: bool, seconds: float) -> None:
        pass

    def written(self, outcome: str) -> None:
        pass

    def delivered(self, epoch: int, seq: int) -> None:
        pass

    def redis_reachable(self, ok: bool) -> None:
        pass

    def presence(self, up: bool) -> None:
        pass

    def upstream_call(self, provider: str, outcome: str, seconds: float) -> None:
        pass

    def upstream_state(self, provider: str, blocked_for: float, calls: Mapping[str, int]) -> None:
        pass

    def broadcast(self, handed: int, superseded: int, fetched_at: float, seconds: float) -> None:
        pass

    def clients(self, count: int) -> None:
        pass

    def connected(self) -> None:
        pass

    def bad_message(self, error: str) -> None:
        pass

    def closed(self, code: str) -> None:
        pass

    def slow_dropped(self) -> None:
        pass


def notify(call: Callable[[], object], event: str) -> None:
    """Run one observer call; an observer that raises is logged, never the caller's failure."""
    try:
        call()
    except Exception:
        log.exception("observer failed", extra={"fields": {"event": "observer_error", "on": event}})
