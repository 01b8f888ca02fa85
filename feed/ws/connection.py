"""One WebSocket client of a worker: a latest-only sender and a bounded reader.

flask-sock and simple-websocket do the HTTP upgrade; then the connection is
taken over (:mod:`feed.ws.takeover`) and the request ends. Why not keep
using simple-websocket:

* its ``send`` runs each message through wsproto (per-connection encoding,
  and per-connection zlib when the client offered permessage-deflate) and
  makes one plain ``sock.send`` that may write only part of a frame;
* it keeps a reader thread (a greenlet here) and a selector per connection,
  and the request greenlet stays parked with Gunicorn's, Flask's and
  Werkzeug's per-request objects for the life of the socket.

Here our duplicate of the socket is driven by two watchers on the gevent loop:
a read watcher feeds wsproto (which parses and validates incoming frames), a
write watcher exists only while a client is behind. No greenlet is parked per
client, which is what keeps an idle client to a few KiB.

A snapshot frame is encoded once per worker (:mod:`feed.ws.frames`) and
written with one non-blocking ``send`` (:mod:`feed.ws.broadcast`). When the
socket cannot take it all, the rest of that frame is kept and finished
first, and only the newest snapshot waits behind it (a latest-only slot): a
slow client gets the latest snapshot, never a backlog, never a truncated or
interleaved frame. A client that makes no progress for ``send_timeout``
seconds is closed with 1008 (by the hub).

Everything here runs on the gevent loop, in callbacks that never block.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Protocol

from gevent import get_hub
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from feed.ws.codecs.base import Codec
from feed.ws.frames import close_frame
from feed.ws.protocol import RESERVED_CODES, CloseCode
from feed.ws.takeover import TakenOver

__all__ = ["ClientConnection", "ConnectionHandler"]

log = logging.getLogger(__name__)

_EV_READ = 1
_EV_WRITE = 2


class ConnectionHandler(Protocol):
    """What a connection tells its owner (the hub); called on the event loop."""

    def on_text(self, conn: ClientConnection, text: str) -> None: ...

    def on_blocked(self, conn: ClientConnection, blocked: bool) -> None: ...

    def on_closed(self, conn: ClientConnection) -> None: ...


class ClientConnection:
    """See the module docstring. Created by the hub right after the handshake."""

    # Replies and control frames that may queue for a client that does not
    # read; past this it is closed rather than buffered without bound.
    MAX_CONTROL = 64
    RECV_BYTES = 4096
    CLOSE_GRACE = 2.0

    __slots__ = (
        "_awaiting_pong",
        "_close_timer",
        "_in_chunks",
        "_in_len",
        "_reader",
        "_tokens",
        "_tokens_at",
        "_writer",
        "by_client",
        "close_code",
        "close_reason",
        "closed",
        "closing",
        "codec",
        "commands_per_second",
        "control",
        "errors",
        "fd",
        "handler",
        "id",
        "last_progress",
        "max_message_bytes",
        "partial",
        "position",
        "proto",
        "raw",
        "remote",
        "sent",
        "slot_position",
        "snapshot",
        "superseded",
    )

    def __init__(self, taken: TakenOver, *, conn_id: int, remote: str, max_message_bytes: int,
                 commands_per_second: float, handler: ConnectionHandler, codec: Codec) -> None:
        self.fd = taken.fd
        self.raw = taken.sock
        self.proto = taken.proto
        self.id = conn_id
        self.remote = remote
        self.max_message_bytes = max_message_bytes
        self.commands_per_second = commands_per_second
        self.handler = handler
        self.codec = codec  # the protocol the handshake chose (feed/ws/codecs/)
        # A list, not a deque: a deque allocates a 64-slot block up front, and
        # this queue is empty nearly always (about 0.7 KiB saved per client).
        self.control: list[bytes] = []
        self.snapshot: bytes | None = None
        # The (epoch, seq) of the last snapshot handed to the socket, and of
        # the one waiting in the slot: what a writer needs to choose between
        # a full snapshot and a delta.
        self.position: tuple[int, int] | None = None
        self.slot_position: tuple[int, int] | None = None
        self.partial: memoryview | None = None
        self.last_progress = time.monotonic()
        self.sent = 0
        self.superseded = 0
        self.errors = 0
        self.closing = False
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.by_client = False  # the client started the closing handshake
        self._writer: Any = None
        self._close_timer: Any = None
        self._awaiting_pong = False
        self._in_chunks: list[str] = []
        self._in_len = 0
        self._tokens = commands_per_second * 2
        self._tokens_at = self.last_progress
        self._reader = get_hub().loop.io(self.fd, _EV_READ)
        self._reader.start(self._on_readable)

    # --- sending --------------------------------------------------------
    @property
    def pending(self) -> bool:
        return self.partial is not None or bool(self.control) or self.snapshot is not None

    def queue_snapshot(self, frame: bytes, position: tuple[int, int] | None = None) -> None:
        """Put ``frame`` (the snapshot at ``position``) in the slot of a connection that is behind."""
        if self.closing or self.closed:
            return
        if self.snapshot is not None:
            self.superseded += 1  # never sent: a newer one replaces it
        self.snapshot = frame
        self.slot_position = position
        self._pump()

    def continue_snapshot(self, frame: bytes, written: int, position: tuple[int, int] | None = None) -> None:
        """After a first ``send`` of ``frame`` wrote only ``written`` bytes (-1: failed)."""
        if written < 0:
            self._lost()
            return
        self.sent += 1
        self.position = position
        self.partial = memoryview(frame)[written:]
        self._arm()

    def send_control(self, frame: bytes) -> None:
        """Queue a frame that must be delivered (reply, pong, ping, close)."""
        if self.closed:
            return
        if len(self.control) >= self.MAX_CONTROL:
            self.abort(CloseCode.POLICY, "too many unread replies")
            return
        self.control.append(frame)
        self._pump()

    def _pump(self) -> None:
        """Write queued frames until done or the socket is full. Never blocks."""
        while not self.closed:
            if self.partial is None:
                if self.control:
                    self.partial = memoryview(self.control.pop(0))
                elif self.snapshot is not None:
                    self.partial = memoryview(self.snapshot)
                    self.snapshot = None
                    self.position, self.slot_position = self.slot_position, None
                    self.sent += 1
                else:
                    break
            try:
                n = self.raw.send(self.partial)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._lost()
                return
            if n:
                self.last_progress = time.monotonic()
            if n < len(self.partial):
                self.partial = self.partial[n:]
                self._arm()
                return
            self.partial = None
        self._disarm()
        if self.closing and not self.pending and self.proto.state is ConnectionState.CLOSED:
            # Our close frame answered the client's: the exchange is complete.
            self._finish()

    def _arm(self) -> None:
        if self._writer is None:
            self._writer = get_hub().loop.io(self.fd, _EV_WRITE)
        if not self._writer.active:
            # The stall clock starts when the client falls behind, not at its
            # last write, which may be long ago for a client that was idle.
            self.last_progress = time.monotonic()
            self._writer.start(self._pump)
            self.handler.on_blocked(self, True)

    def _disarm(self) -> None:
        if self._writer is not None and self._writer.active:
            self._writer.stop()
            self.handler.on_blocked(self, False)

    def stalled_for(self, now: float) -> float:
        """Seconds without write progress while data waits (0 if nothing waits)."""
        return now - self.last_progress if self.pending else 0.0

    # --- closing --------------------------------------------------------
    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after any frame in flight, then end the connection."""
        if self.closing or self.closed:
            return
        self.closing = True
        self.close_code, self.close_reason = code, reason
        self.snapshot = None  # nothing more after the close frame
        wire_code = CloseCode.NORMAL if code in RESERVED_CODES else code
        try:
            self.proto.send(CloseConnection(code=wire_code))  # keeps wsproto's state in step
        except LocalProtocolError:
            pass
        self.control.append(close_frame(wire_code, reason))
        # Wait for the client's answer, but not for ever.
        self._close_timer = get_hub().loop.timer(self.CLOSE_GRACE)
        self._close_timer.start(self._finish)
        self._pump()

    def abort(self, code: int, reason: str) -> None:
        """Close a client that may not take a close frame (stuck, misbehaving)."""
        if self.partial is None and not self.closing:
            self.control.clear()
            self.close(code, reason)  # it may still get through; the timer ends it anyway
            return
        if self.close_code is None or not self.closing:
            self.close_code, self.close_reason = code, reason
        self._finish()

    def _lost(self) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = CloseCode.ABNORMAL, "connection lost"
        self._finish()

    def _finish(self) -> None:
        """End the connection now: stop the watchers, close our descriptor."""
        if self.closed:
            return
        self.closed = True
        if self.close_code is None:
            self.close_code = CloseCode.ABNORMAL
        self.snapshot = None
        self.partial = None
        self.control.clear()
        self._disarm()
        for watcher in (self._reader, self._writer, self._close_timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._reader = self._writer = self._close_timer = None
        try:
            self.raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.raw.close()
        self.handler.on_closed(self)

    # --- reading (a read-watcher callback) -------------------------------
    def _on_readable(self) -> None:
        try:
            data = self.raw.recv(self.RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost()
            return
        if not data:
            if self.closing:
                self._finish()
            else:
                self._lost()
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """Parse bytes from the client and act on every complete event in them."""
        try:
            self.proto.receive_data(data)
            for event in self.proto.events():
                self._on_event(event)
                if self.closed:
                    return
        except LocalProtocolError:
            self._lost()
        except Exception:  # one client's failure must not reach the loop
            log.exception("client handling failed", extra={"fields": {
                "event": "client_error", "client": self.id}})
            self.abort(CloseCode.INTERNAL_ERROR, "internal error")

    def _on_event(self, event: object) -> None:
        if isinstance(event, TextMessage):
            if self.closing:
                return
            data = event.data
            self._in_len += len(data) if data.isascii() else len(data.encode("utf-8"))
            if self._in_len > self.max_message_bytes:
                self._in_chunks.clear()
                self.close(CloseCode.TOO_BIG, f"message too big: limit is {self.max_message_bytes} bytes")
                return
            self._in_chunks.append(data)
            if event.message_finished:
                text = "".join(self._in_chunks)
                self._in_chunks.clear()
                self._in_len = 0
                if self._take_token():
                    self.handler.on_text(self, text)
                else:
                    self.close(CloseCode.POLICY,
                               f"too many messages: limit is {self.commands_per_second:g} per second")
        elif isinstance(event, BytesMessage):
            if not self.closing:
                self.close(CloseCode.UNSUPPORTED_DATA, "binary messages are not accepted; send JSON text")
        elif isinstance(event, Ping):
            if self.proto.state is ConnectionState.OPEN and not self.closing:
                # A ping costs us a pong: it counts against the same budget.
                if not self._take_token():
                    self.close(CloseCode.POLICY,
                               f"too many messages: limit is {self.commands_per_second:g} per second")
                    return
                self.send_control(self.proto.send(event.response()))
        elif isinstance(event, Pong):
            self._awaiting_pong = False
        elif isinstance(event, CloseConnection):
            if self.closing:
                self._finish()  # the client answered our close
            else:
                # The client's close (echo its code), or wsproto's verdict on
                # a malformed frame (1002, or 1007 for text that is not UTF-8).
                self.by_client = event.code not in (CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA)
                self.close(event.code, event.reason or "")

    def _take_token(self) -> bool:
        now = time.monotonic()
        burst = self.commands_per_second * 2
        self._tokens = min(burst, self._tokens + (now - self._tokens_at) * self.commands_per_second)
        self._tokens_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    # --- liveness -------------------------------------------------------
    def ping(self, frame: bytes) -> bool:
        """Send a ping; False if the previous one was never answered."""
        if self._awaiting_pong:
            return False
        self._awaiting_pong = True
        self.send_control(frame)
        return True
