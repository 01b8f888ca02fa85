"""What a wire codec does: the interface every client protocol implements.

A codec has no I/O and no state that changes: it encodes (a snapshot, a
stale notice, a reply) into one complete WebSocket text frame, and parses
a client's text into a :class:`~feed.ws.protocol.Command` or raises
:class:`~feed.ws.protocol.CommandError`. The hub calls :meth:`Codec.snapshot`
once per publish per codec, and sends the same bytes to every client of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from feed.envelope import Envelope
from feed.ws.frames import text_frame
from feed.ws.protocol import Command, CommandError

__all__ = ["Codec", "View", "json_frame", "with_id"]


def json_frame(obj: dict[str, Any]) -> bytes:
    """``obj`` as one compact JSON text frame (every codec's replies and notices)."""
    return text_frame(json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str))


def with_id(out: dict[str, Any], request_id: Any) -> dict[str, Any]:
    """``out`` with the client's ``id`` echoed, when it sent one."""
    if request_id is not None:
        out["id"] = request_id
    return out


@dataclass(frozen=True)
class View:
    """How this worker presents a snapshot: its own label, the leader's label, staleness."""

    served_by: str
    leader: str
    stale: bool


class Codec(Protocol):
    #: The protocol's name, as a client asks for it and as metrics and logs name it.
    name: str

    def snapshot(self, env: Envelope, view: View) -> bytes:
        """The frame that carries ``env`` to this protocol's clients."""
        ...

    def stale_notice(self, env: Envelope, served_by: str, age: float) -> bytes:
        """The frame telling clients that the snapshot they hold is ``age`` seconds old."""
        ...

    def parse(self, text: str) -> Command:
        """One client message as a command; raises CommandError (counted as invalid)."""
        ...

    def pong(self, request_id: Any, ts: float, served_by: str) -> bytes:
        ...

    def status(self, request_id: Any, status: dict[str, Any]) -> bytes:
        ...

    def no_snapshot(self, request_id: Any) -> bytes:
        ...

    def error(self, exc: CommandError) -> bytes:
        ...
