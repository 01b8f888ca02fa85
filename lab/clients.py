"""A WebSocket client that records every message it receives, with its receive time.

The lab's notebooks, the tests and the soak all watch the service through
this one client: it runs on its own thread with blocking reads (a failover
is a long silence, not an error), keeps every message, and with
``reconnect`` connects again after a close or a drop (as the protocol asks
clients to), so one client can watch several failovers. ``disconnects``
lists ``(time, close code)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websocket

from feed.logs import log_event
from feed.times import parse_iso

__all__ = ["Received", "RecordingClient"]

log = logging.getLogger(__name__)


@dataclass
class Received:
    t: float  # receive time, unix seconds
    msg: dict


@dataclass
class RecordingClient:
    """See the module docstring.

    ``headers`` are extra request headers; an ``Origin:`` among them is sent
    as the Origin, else none is (as a bot would connect). ``read_delay``
    sleeps after each message (a slow reader); ``rcvbuf`` sets the socket's
    receive buffer (a small one makes a slow reader visible sooner).
    """

    url: str
    name: str = ""
    instance: str = ""  # the lab instance it is connected to
    headers: list[str] = field(default_factory=list)
    reconnect: bool = False
    read_delay: float = 0.0
    rcvbuf: int = 0
    connect_timeout: float = 10.0
    messages: list[Received] = field(default_factory=list)
    disconnects: list[tuple[float, int]] = field(default_factory=list)
    close_code: int | None = None  # of the last close (1006: dropped without one)
    close_reason: str = ""
    error: str | None = None
    opened_at: float = 0.0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._thread: threading.Thread | None = None

    # --- running ----------------------------------------------------------
    def start(self, timeout: float | None = None) -> RecordingClient:
        if timeout is not None:
            self.connect_timeout = timeout
        self._ws = self._connect()
        self._thread = threading.Thread(target=self._run, name=f"client-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _connect(self) -> websocket.WebSocket:
        sockopt = [(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)] if self.rcvbuf else []
        origin = [h.split(":", 1)[1].strip() for h in self.headers if h.lower().startswith("origin:")]
        headers = [h for h in self.headers if not h.lower().startswith("origin:")]
        options: dict[str, Any] = {"origin": origin[0]} if origin else {"suppress_origin": True}
        ws = websocket.create_connection(self.url, timeout=self.connect_timeout, header=headers,
                                         sockopt=sockopt, enable_multithread=True, **options)
        ws.settimeout(None)
        self.opened_at = time.time()
        return ws

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - a silent dead thread would fake a long gap
            self.error = f"client thread failed: {type(exc).__name__}: {exc}"
            log_event(log, "lab_client_failed", logging.WARNING, client=self.name, error=self.error)
        finally:
            with self._cond:
                self._cond.notify_all()

    def _loop(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            code = self._read(self._ws)
            if self._closed.is_set():
                break
            with self._cond:
                self.close_code = code
                self.disconnects.append((time.time(), code))
                self._cond.notify_all()
            if not self.reconnect:
                break
            self._ws = None
            while not self._closed.is_set() and self._ws is None:
                self._closed.wait(backoff)
                try:
                    self._ws = self._connect()
                    backoff = 0.1
                except (OSError, websocket.WebSocketException) as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    backoff = min(2.0, backoff * 2)

    def _read(self, ws: websocket.WebSocket | None) -> int:
        """Read until the connection ends; returns the close code (1006: dropped)."""
        if ws is None:
            return 1006
        try:
            while True:
                opcode, data = ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close_reason = data[2:].decode("utf-8", "replace")
                    return int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                received = Received(time.time(), json.loads(data))
                with self._cond:
                    self.messages.append(received)
                    self._cond.notify_all()
                if self.read_delay:
                    time.sleep(self.read_delay)
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            if not self._closed.is_set():
                self.error = f"{type(exc).__name__}: {exc}"
            return 1006
        finally:
            with contextlib.suppress(Exception):
                ws.abort()
                ws.shutdown()

    @property
    def ws(self) -> websocket.WebSocket | None:
        """The current connection itself, for tests that write raw frames."""
        return self._ws

    def send(self, text: str | bytes, binary: bool = False) -> None:
        assert self._ws is not None, "not connected"
        if binary:
            self._ws.send_binary(text)
        else:
            self._ws.send(text)

    def close(self) -> None:
        self._closed.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.abort()
            with contextlib.suppress(Exception):
                ws.shutdown()
        if self._thread is not None:
            self._thread.join(3)

    stop = close

    # --- what was received -----------------------------------------------
    def received(self) -> list[Received]:
        """Every snapshot received, repeats included, in arrival order, with its time."""
        with self._cond:
            return [r for r in self.messages if r.msg.get("type") == "snapshot"]

    def snapshots(self) -> list[dict]:
        """The snapshot messages themselves, in arrival order."""
        return [r.msg for r in self.received()]

    def keys(self) -> list[tuple[int, int]]:
        """``(epoch, seq)`` of every snapshot received."""
        return [(m["epoch"], m["seq"]) for m in self.snapshots()]

    def new_snapshots(self) -> list[Received]:
        """Snapshots a client keeps: each newer (by ``(epoch, seq)``) than the last kept."""
        kept: list[Received] = []
        last = (-1, -1)
        for r in self.received():
            key = (r.msg["epoch"], r.msg["seq"])
            if key > last:
                kept.append(r)
                last = key
        return kept

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per snapshot received, for tables and plots."""
        return [{"client": self.name, "t": r.t, "epoch": r.msg["epoch"], "seq": r.msg["seq"],
                 "leader": r.msg.get("leader"), "served_by": r.msg.get("served_by"),
                 "fetched_at": parse_iso(r.msg["fetched_at"]), "stale": r.msg.get("stale")}
                for r in self.received()]

    # --- waiting ------------------------------------------------------------
    def wait(self, predicate: Callable[[RecordingClient], bool], timeout: float = 10.0,
             what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"client {self.name}: no {what} within {timeout}s "
                                       f"({len(self.messages)} messages, close {self.close_code}, "
                                       f"error {self.error})")
                self._cond.wait(min(left, 0.2))

    def wait_snapshots(self, n: int, timeout: float = 10.0) -> None:
        self.wait(lambda c: len(c.received()) >= n, timeout, f"{n} snapshots")

    def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the connection to end (without reconnect); its close code."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.close_code
