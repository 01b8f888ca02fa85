"""One WebSocket client of a worker: a latest-only sender and a bounded reader.

flask-sock and simple-websocket do the HTTP upgrade; after that this class
owns the socket. Why not keep using simple-websocket's ``send``/``receive``:

* its ``send`` runs each message through wsproto (per-connection encoding,
  and per-connection zlib when the client offered permessage-deflate) and
  makes one plain ``sock.send`` that may write only part of a frame;
* it starts a reader thread (a greenlet here) and a selector per connection.

Here a snapshot frame is encoded once per worker (:mod:`feed.frames`) and
written with one non-blocking ``send``. When the socket cannot take it all,
the rest of that frame is kept and finished first, from an I/O watcher on the
gevent loop, and only the newest snapshot waits behind it (a latest-only
slot): a slow client gets the latest snapshot, never a backlog, never a
truncated or interleaved frame. A client that makes no progress for
``send_timeout`` seconds is closed with 1008. The reader runs in the request's
own greenlet (no extra greenlet per client).

This module is written for the gevent worker: it uses the gevent loop's
watchers and timers directly.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gevent import get_hub
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from .frames import close_frame

__all__ = ["ClientConnection", "CloseCode", "NoThread"]

log = logging.getLogger("feed.wsconn")

_EVENT_WRITE = 2


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001  # this server is stopping: reconnect elsewhere
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003  # binary frames
    INVALID_DATA = 1007  # text that is not UTF-8
    POLICY = 1008  # too slow, too many messages, ping timeout
    TOO_BIG = 1009
    # Codes that must never be sent in a close frame (RFC 6455 7.4.1).
    RESERVED = frozenset({1004, 1005, 1006, 1015})


class NoThread:
    """Stands in for simple-websocket's reader thread: we read in the request greenlet."""

    def __init__(self, target: Callable[[], None] | None = None, **_: Any) -> None:
        self.name = "marketfeed-inline-reader"
        self.target = target

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


class ClientConnection:
    """See the module docstring. Created by the hub from a simple-websocket Server."""

    # Replies and control frames that may queue for a client that does not
    # read; past this it is closed rather than buffered without bound.
    MAX_CONTROL = 64
    RECV_BYTES = 4096
    CLOSE_GRACE = 2.0

    __slots__ = (
        "_awaiting_pong", "_close_timer", "_flushed_cb", "_in_chunks", "_in_len", "_tokens",
        "_tokens_at", "_watcher", "_ws", "close_code", "close_reason", "closed", "closing",
        "commands_per_second", "control", "errors", "fd", "finished", "handler", "id",
        "last_progress", "max_message_bytes", "opened_at", "partial", "proto", "raw",
        "remote", "sent", "snapshot", "sock", "superseded",
    )

    def __init__(self, ws: Any, *, conn_id: int, remote: str, max_message_bytes: int,
                 commands_per_second: float, handler: Any) -> None:
        self._ws = ws
        self.sock = ws.sock  # gevent socket: used by the reader (cooperative recv)
        self.raw = getattr(ws.sock, "_sock", ws.sock)  # the non-blocking OS socket
        self.fd = self.raw.fileno()
        self.proto = ws.ws  # wsproto connection, handshake already done
        self.id = conn_id
        self.remote = remote
        self.max_message_bytes = max_message_bytes
        self.commands_per_second = commands_per_second
        self.handler = handler  # the hub: on_text(conn, text), on_closed(conn)
        self.control: deque[bytes] = deque()
        self.snapshot: bytes | None = None
        self.partial: memoryview | None = None
        self.last_progress = time.monotonic()
        self.opened_at = self.last_progress
        self.sent = 0
        self.superseded = 0
        self.errors = 0
        self.closing = False
        self.closed = False
        self.finished = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._watcher: Any = None
        self._close_timer: Any = None
        self._flushed_cb: Callable[[], None] | None = None
        self._awaiting_pong = False
        self._in_chunks: list[str] = []
        self._in_len = 0
        self._tokens = commands_per_second * 2
        self._tokens_at = self.last_progress

    # --- sending --------------------------------------------------------
    @property
    def pending(self) -> bool:
        return self.partial is not None or bool(self.control) or self.snapshot is not None

    def offer_snapshot(self, frame: bytes) -> bool:
        """Queue ``frame`` in the latest-only slot; True if written at once."""
        if self.closing or self.closed:
            return False
        if self.partial is None and not self.control and self.snapshot is None:
            # Fast path: nothing queued, so write the whole frame now.
            try:
                n = self.raw.send(frame)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._broken()
                return False
            if n == len(frame):
                self.sent += 1
                self.last_progress = time.monotonic()
                return True
            self.sent += 1
            self.partial = memoryview(frame)[n:]
            if n:
                self.last_progress = time.monotonic()
            self._arm()
            return False
        if self.snapshot is not None:
            self.superseded += 1  # the client never sees this one: a newer one replaces it
        self.snapshot = frame
        self._pump()
        return False

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
                    self.partial = memoryview(self.control.popleft())
                elif self.snapshot is not None:
                    self.partial = memoryview(self.snapshot)
                    self.snapshot = None
                    self.sent += 1
                else:
                    break
            try:
                n = self.raw.send(self.partial)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._broken()
                return
            if n:
                self.last_progress = time.monotonic()
            if n < len(self.partial):
                self.partial = self.partial[n:]
                self._arm()
                return
            self.partial = None
        self._disarm()
        if self._flushed_cb is not None and not self.pending:
            cb, self._flushed_cb = self._flushed_cb, None
            cb()

    def _arm(self) -> None:
        if self._watcher is None:
            self._watcher = get_hub().loop.io(self.fd, _EVENT_WRITE)
        if not self._watcher.active:
            self._watcher.start(self._pump)
            self.handler.on_blocked(self, True)

    def _disarm(self) -> None:
        if self._watcher is not None and self._watcher.active:
            self._watcher.stop()
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
        wire_code = CloseCode.NORMAL if code in CloseCode.RESERVED else code
        try:
            self.proto.send(CloseConnection(code=wire_code))  # keep wsproto's state in step
        except LocalProtocolError:
            pass
        self.control.append(close_frame(wire_code, reason))
        self._flushed_cb = self._after_close_sent
        # Whatever happens, the socket is shut after the grace period.
        self._close_timer = get_hub().loop.timer(self.CLOSE_GRACE)
        self._close_timer.start(self._shutdown)
        self._pump()

    def _after_close_sent(self) -> None:
        if self.proto.state is ConnectionState.CLOSED:
            # We were answering the client's close: the exchange is complete.
            self._shutdown()

    def abort(self, code: int, reason: str) -> None:
        """Close a client that cannot take a close frame (stuck, misbehaving)."""
        if self.partial is None and not self.closing:
            self.control.clear()
            self.close(code, reason)  # it may still get through; the timer ends it anyway
            return
        self.close_code = self.close_code or code
        self.close_reason = self.close_reason or reason
        self._shutdown()

    def _broken(self) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, "connection lost"
        self._shutdown()

    def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.snapshot = None
        self.partial = None
        self.control.clear()
        self._disarm()
        try:
            self.raw.shutdown(socket.SHUT_RDWR)  # wakes the reader with EOF
        except OSError:
            pass

    # --- reading (runs in the request greenlet) -------------------------
    def serve(self) -> None:
        """Read until the connection ends; returns when it has."""
        try:
            while not self.closed and not self.finished:
                try:
                    data = self.sock.recv(self.RECV_BYTES)
                except OSError as exc:
                    if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.EBADF):
                        log.debug("recv failed: %s", exc)
                    break
                if not data:
                    break
                try:
                    self.proto.receive_data(data)
                    for event in self.proto.events():
                        self._on_event(event)
                        if self.closed or self.finished:
                            break
                except LocalProtocolError:
                    break
        finally:
            self._finish()

    def _on_event(self, event: object) -> None:
        if isinstance(event, TextMessage):
            if self.closing:
                return
            self._in_len += len(event.data.encode("utf-8")) if not event.data.isascii() else len(event.data)
            if self._in_len > self.max_message_bytes:
                self._in_chunks.clear()
                self.close(CloseCode.TOO_BIG, f"message too big: limit is {self.max_message_bytes} bytes")
                return
            self._in_chunks.append(event.data)
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
                self.send_control(self.proto.send(event.response()))
        elif isinstance(event, Pong):
            self._awaiting_pong = False
        elif isinstance(event, CloseConnection):
            if self.closing:
                self.finished = True  # the client answered our close
                self._shutdown()
            else:
                # The client's close (echo its code), or wsproto's verdict on
                # a malformed frame (1002, or 1007 for text that is not UTF-8).
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

    def _finish(self) -> None:
        if self.close_code is None:
            self.close_code = 1006 if not self.closing else self.close_code
        self._shutdown()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._close_timer is not None:
            self._close_timer.close()
            self._close_timer = None
        # flask-sock would send its own close frame after us: tell it we are done.
        self._ws.connected = False
        self.handler.on_closed(self)
