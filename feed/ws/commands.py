"""What a client's message does: parsed by the client's codec, answered here.

``snapshot`` sends the current snapshot (through the same latest-only path
as a broadcast), ``ping`` a pong, ``status`` this worker's view. A message
that is not a command is answered with an error and counted; a client that
sends more than ``max_errors`` of them is closed with 1008: it is not a
client of this protocol, and answering it costs the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from feed.observer import Observer, Quiet, notify
from feed.ws.connection import ClientConnection
from feed.ws.protocol import CloseCode, CommandError

__all__ = ["MAX_ERRORS", "Commands"]

MAX_ERRORS = 20


class Commands:
    def __init__(self, *, served_by: str, status: Callable[[], dict[str, Any]],
                 send_snapshot: Callable[[ClientConnection], bool], observer: Observer | None = None,
                 max_errors: int = MAX_ERRORS, clock: Callable[[], float] = time.time) -> None:
        self.served_by = served_by
        self.status = status
        self.send_snapshot = send_snapshot
        self.observer: Observer = observer or Quiet()
        self.max_errors = max_errors
        self.clock = clock

    def handle(self, conn: ClientConnection, text: str) -> None:
        """Answer one complete text message from ``conn``."""
        codec = conn.codec
        try:
            cmd = codec.parse(text)
        except CommandError as exc:
            conn.errors += 1
            code = exc.code
            notify(lambda: self.observer.bad_message(code), "bad_message")
            if conn.errors > self.max_errors:
                conn.close(CloseCode.POLICY, "too many invalid messages")
                return
            conn.send_control(codec.error(exc))
            return
        if cmd.op == "snapshot":
            if not self.send_snapshot(conn):
                conn.send_control(codec.no_snapshot(cmd.request_id))
        elif cmd.op == "ping":
            conn.send_control(codec.pong(cmd.request_id, self.clock(), self.served_by))
        else:  # status
            conn.send_control(codec.status(cmd.request_id, self.status()))
