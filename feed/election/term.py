"""A leader's term as a handle, and the callbacks a leadership calls.

A :class:`Term` is what every leader-side worker is given when the node
starts leading (the REST fetch loop today, a stream supervisor next): its
epoch, an ``ended`` event that is set the moment the term is over (released,
lost, refused, run out), and :meth:`Term.may_act`, the check to make before
starting work (a fetch, a subscription). A worker waits on ``ended`` instead
of polling the leadership, and a term that ended never revives: the next one
is a new handle under a new epoch. Writes are not trusted to any local check
(a pause can fall between the check and the write): they go through the
fence, which Redis checks against the term's epoch.

:class:`LeaderCallbacks` are client-go's ``LeaderCallbacks``: started
leading (with the term), stopped leading (with the term and the reason), a
new leader seen. They are given to the leadership at construction and
checked there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LeaderCallbacks", "Term"]


class Term:
    """One term of one node: ``epoch``, ``ended``, :meth:`may_act`; see the module docstring.

    ``can_act()`` is the leadership's own proof (the lease still runs under
    this epoch, the node's presence is up); without one the term may act
    until it ends. ``how``: ``free``, or ``presence_lost`` when the lock was
    taken over from a dead leader.
    """

    def __init__(self, node_id: str, epoch: int, *, how: str = "free",
                 can_act: Callable[[], bool] | None = None, event_class: type = threading.Event) -> None:
        if not node_id:
            raise ValueError("a term needs a node id")
        if epoch < 0:
            raise ValueError("an epoch is never negative")
        self.node_id = node_id
        self.epoch = epoch
        self.how = how
        self.ended: Any = event_class()
        self.reason: str | None = None
        self._can_act = can_act

    def may_act(self) -> bool:
        """True while this term may fetch and write: not ended, and the leadership still proves it."""
        if self.ended.is_set():
            return False
        return self._can_act is None or bool(self._can_act())

    def end(self, reason: str) -> bool:
        """Mark the term over (once: the first reason stays); True if this call ended it."""
        if self.ended.is_set():
            return False
        self.reason = reason
        self.ended.set()
        return True

    # A term is who leads under which epoch: two handles for it are the same term.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Term):
            return NotImplemented
        return (self.node_id, self.epoch) == (other.node_id, other.epoch)

    def __hash__(self) -> int:
        return hash((self.node_id, self.epoch))

    def __repr__(self) -> str:
        state = f"ended: {self.reason}" if self.ended.is_set() else "running"
        return f"Term({self.node_id!r}, epoch={self.epoch}, {state})"


def _ignore(*_args: object) -> None:
    pass


@dataclass(frozen=True)
class LeaderCallbacks:
    """What a leadership tells its node; each is called outside the leadership's locks.

    ``started(term)`` when a term begins; ``stopped(term, reason)`` once when
    it ends (``released``, ``stepped_down``, ``renew_refused``,
    ``lease_expired``, ``write_refused``); ``new_leader(node, epoch)`` when
    another node (or this one) is seen taking the lock.
    """

    started: Callable[[Term], None] = _ignore
    stopped: Callable[[Term, str], None] = _ignore
    new_leader: Callable[[str, int | None], None] = _ignore

    def __post_init__(self) -> None:
        for name in ("started", "stopped", "new_leader"):
            if not callable(getattr(self, name)):
                raise TypeError(f"LeaderCallbacks.{name} must be callable")
