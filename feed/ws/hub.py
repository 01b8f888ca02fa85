"""The hub: this worker's WebSocket clients, and the policy that governs them.

It keeps the registry (who is connected, who is behind), answers clients'
commands, and decides: how many clients a worker takes, which client is too
slow (no write progress for ``send_timeout``: closed with 1008), which one
missed a pong, when the data clients hold has turned stale. Each new
snapshot is encoded once per worker, as one complete frame, and handed to
:func:`feed.ws.broadcast.broadcast`, the one way a snapshot reaches sockets.
A housekeeping greenlet runs the sweeps once a second.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent

from feed.envelope import Envelope
from feed.logs import log_event
from feed.observer import Observer, Quiet, notify
from feed.times import iso_utc
from feed.ws.broadcast import broadcast
from feed.ws.connection import ClientConnection
from feed.ws.frames import PING, text_frame
from feed.ws.protocol import CloseCode, CommandError, close_label, error_message, parse_command
from feed.ws.takeover import TakenOver

__all__ = ["Hub"]

log = logging.getLogger(__name__)

# A client that sends this many invalid messages is closed (1008): it is not
# a client of this protocol, and answering it costs the others.
MAX_ERRORS = 20


class Hub:
    def __init__(
        self,
        served_by: str,
        *,
        observer: Observer | None = None,
        stale_after: float = 15.0,
        ping_interval: float = 25.0,
        send_timeout: float = 10.0,
        max_message_bytes: int = 4096,
        commands_per_second: float = 20.0,
        send_buffer: int = 0,
        max_clients: int = 10000,
        send_threads: int = 2,
        status: Callable[[], dict] | None = None,
        label: Callable[[str], str] | None = None,
    ) -> None:
        self.served_by = served_by
        # How node ids appear in client frames (as they are, or opaque).
        self.label = label or (lambda node: node)
        self.public_served_by = self.label(served_by)
        self.observer: Observer = observer or Quiet()
        self.stale_after = stale_after
        self.ping_interval = ping_interval
        self.send_timeout = send_timeout
        self.max_message_bytes = max_message_bytes
        self.commands_per_second = commands_per_second
        self.send_buffer = send_buffer
        self.max_clients = max_clients
        self.send_threads = send_threads
        self.status = status
        self.clients: set[ClientConnection] = set()
        self.blocked: set[ClientConnection] = set()
        self.latest: Envelope | None = None
        self.latest_frame: bytes | None = None
        self.latest_stale = False
        # Whether clients were told the latest snapshot is old (a "stale"
        # notice): apart from latest_stale, which a snapshot made only of
        # failing providers' sections sets from the start.
        self.latest_aged = False
        self.accepting = True
        self._next_id = 0
        self._housekeeper: Any = None
        self._last_ping = time.monotonic()

    # --- lifecycle --------------------------------------------------------
    def start(self) -> Hub:
        if self._housekeeper is None:
            self._housekeeper = gevent.spawn(self._housekeeping)
        return self

    def stop(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.kill(block=False)
            self._housekeeper = None

    # --- fan-out ----------------------------------------------------------
    def publish(self, env: Envelope) -> None:
        """The node's listener: send ``env`` to every client (latest-only)."""
        started = time.perf_counter()
        stale = self._is_stale(env)
        frame = self._client_frame(env, stale)
        self.latest, self.latest_frame, self.latest_stale = env, frame, stale
        self.latest_aged = env.age(time.time()) > self.stale_after
        done = broadcast(self.clients, frame, self.send_threads)
        seconds = time.perf_counter() - started
        notify(lambda: self.observer.broadcast(done.handed, done.superseded, env.fetched_at, seconds),
               "broadcast")

    def _is_stale(self, env: Envelope) -> bool:
        """Old (no new snapshot for a while), or made only of sections whose providers fail."""
        return env.age(time.time()) > self.stale_after or env.sections_stale

    def _client_frame(self, env: Envelope, stale: bool) -> bytes:
        return text_frame(env.client_json(self.public_served_by, stale, leader=self.label(env.leader)))

    def _stale_notice(self, env: Envelope, age: float) -> bytes:
        return text_frame(json.dumps({
            "type": "stale", "epoch": env.epoch, "seq": env.seq, "served_by": self.public_served_by,
            "fetched_at": iso_utc(env.fetched_at), "age_s": round(age, 1),
        }, separators=(",", ":")))

    # --- clients ----------------------------------------------------------
    def serve(self, taken: TakenOver, remote: str) -> ClientConnection:
        """Register a client right after its handshake and takeover; returns at once.

        From here the connection is driven by watchers on the gevent loop, so
        the request (and its greenlet) can end.
        """
        self._next_id += 1
        conn = ClientConnection(
            taken, conn_id=self._next_id, remote=remote, max_message_bytes=self.max_message_bytes,
            commands_per_second=self.commands_per_second, handler=self,
        )
        if self.send_buffer:
            # A fixed kernel buffer bounds the memory a client that stops
            # reading can hold, and makes such a client visible sooner.
            try:
                conn.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            except OSError:
                pass
        self.clients.add(conn)
        notify(self.observer.connected, "connected")
        notify(lambda: self.observer.clients(len(self.clients)), "clients")
        if not self.accepting:
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        elif self.latest_frame is not None:
            # A new client gets the current snapshot at once.
            broadcast((conn,), self._frame_for_new_client())
        if taken.leftover and not conn.closed:
            conn.feed(taken.leftover)
        return conn

    @property
    def full(self) -> bool:
        return len(self.clients) >= self.max_clients

    def _frame_for_new_client(self) -> bytes:
        env = self.latest
        assert env is not None and self.latest_frame is not None
        stale = self._is_stale(env)
        if stale != self.latest_stale:
            return self._client_frame(env, stale)
        return self.latest_frame

    def on_text(self, conn: ClientConnection, text: str) -> None:
        try:
            cmd = parse_command(text)
        except CommandError as exc:
            conn.errors += 1
            code = exc.code
            notify(lambda: self.observer.bad_message(code), "bad_message")
            if conn.errors > MAX_ERRORS:
                conn.close(CloseCode.POLICY, "too many invalid messages")
                return
            conn.send_control(text_frame(error_message(exc)))
            return
        if cmd.op == "snapshot":
            if self.latest_frame is not None:
                broadcast((conn,), self._frame_for_new_client())
                return
            reply: dict[str, Any] = {"type": "error", "error": "no_snapshot",
                                     "message": "no snapshot yet; one is sent as soon as it exists"}
        elif cmd.op == "ping":
            reply = {"type": "pong", "ts": iso_utc(time.time()), "served_by": self.public_served_by}
        else:  # status
            reply = {"type": "status", **self.local_status()}
        if cmd.request_id is not None:
            reply["id"] = cmd.request_id
        conn.send_control(text_frame(json.dumps(reply, separators=(",", ":"), default=str)))

    def on_blocked(self, conn: ClientConnection, blocked: bool) -> None:
        if blocked:
            self.blocked.add(conn)
        else:
            self.blocked.discard(conn)

    def on_closed(self, conn: ClientConnection) -> None:
        self.clients.discard(conn)
        self.blocked.discard(conn)
        notify(lambda: self.observer.clients(len(self.clients)), "clients")
        notify(lambda: self.observer.closed(close_label(conn.close_code)), "closed")
        # A close the client chose is its own business (and its code is its
        # own choice): logged only when the server closed for a reason.
        if not conn.by_client and conn.close_code not in (None, CloseCode.NORMAL, CloseCode.GOING_AWAY,
                                                          CloseCode.ABNORMAL):
            log_event(log, "client_closed", node=self.served_by, client=conn.id, remote=conn.remote,
                      code=conn.close_code, reason=conn.close_reason)

    def local_status(self) -> dict[str, Any]:
        base = self.status() if self.status is not None else {"node": self.served_by}
        base["clients_on_this_worker"] = len(self.clients)
        return base

    # --- shutdown ---------------------------------------------------------
    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> int:
        """Close every client (1001 by default) and refuse new ones."""
        self.accepting = False
        count = 0
        for conn in list(self.clients):
            conn.close(code, reason)
            count += 1
        return count

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            gevent.sleep(0.02)
        return not self.clients

    # --- housekeeping -----------------------------------------------------
    def _housekeeping(self) -> None:
        while True:
            gevent.sleep(1.0)
            try:
                self.sweep(time.monotonic())
            except Exception:
                log.exception("hub housekeeping failed", extra={"fields": {
                    "event": "hub_error", "node": self.served_by}})

    def sweep(self, now: float) -> None:
        """One housekeeping round: stuck clients, pings, staleness."""
        for conn in list(self.blocked):
            stalled = conn.stalled_for(now)
            if stalled > self.send_timeout:
                notify(self.observer.slow_dropped, "slow_dropped")
                log_event(log, "slow_client_dropped", logging.WARNING, node=self.served_by,
                          client=conn.id, remote=conn.remote, stalled_s=round(stalled, 1),
                          superseded=conn.superseded)
                conn.abort(CloseCode.POLICY, f"client too slow: no progress for {stalled:.0f} s")
        if self.ping_interval and now - self._last_ping >= self.ping_interval:
            self._last_ping = now
            for conn in list(self.clients):
                if not conn.closing and not conn.ping(PING):
                    conn.abort(CloseCode.POLICY, "no pong to the last ping")
        env = self.latest
        if env is not None and not self.latest_aged:
            age = env.age(time.time())
            if age > self.stale_after:
                self.latest_stale = self.latest_aged = True
                self.latest_frame = self._client_frame(env, True)
                notice = self._stale_notice(env, age)
                for conn in list(self.clients):
                    conn.send_control(notice)
                log_event(log, "snapshot_stale", logging.WARNING, node=self.served_by,
                          epoch=env.epoch, seq=env.seq, age_s=round(age, 1))
