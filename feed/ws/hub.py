"""The hub: this worker's WebSocket clients and the fan-out to them.

It keeps the registry (who is connected, with which codec, who is behind)
and hands each new snapshot to every client: encoded once per codec in use
(and per staleness, which is derived from the envelope and the clock), as
one complete frame, through :func:`feed.ws.broadcast.broadcast`, the one
way a snapshot reaches sockets. What a client's message does is
:mod:`feed.ws.commands`; which client to close, :mod:`feed.ws.policy`; when
a snapshot is stale, :mod:`feed.ws.staleness`. A housekeeping greenlet runs
the sweeps once a second.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent

from feed.envelope import Envelope
from feed.logs import log_event
from feed.observer import Observer, Quiet, notify
from feed.ws.broadcast import broadcast
from feed.ws.codecs.base import Codec, View
from feed.ws.codecs.marketfeed import CODEC as MARKETFEED
from feed.ws.commands import Commands
from feed.ws.connection import ClientConnection
from feed.ws.policy import ClientPolicy
from feed.ws.protocol import CloseCode, close_label
from feed.ws.staleness import Staleness
from feed.ws.takeover import TakenOver

__all__ = ["Hub"]

log = logging.getLogger(__name__)


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
        codec: Codec = MARKETFEED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.served_by = served_by
        # How node ids appear in client frames (as they are, or opaque).
        self.label = label or (lambda node: node)
        self.public_served_by = self.label(served_by)
        self.observer: Observer = observer or Quiet()
        self.max_message_bytes = max_message_bytes
        self.commands_per_second = commands_per_second
        self.send_buffer = send_buffer
        self.max_clients = max_clients
        self.send_threads = send_threads
        self.codec = codec  # a client's codec unless its handshake chose another
        self.clock = clock
        self.status = status
        self.staleness = Staleness(stale_after)
        self.policy = ClientPolicy(served_by, send_timeout=send_timeout, ping_interval=ping_interval,
                                   observer=self.observer)
        self.commands = Commands(served_by=self.public_served_by, status=self.local_status,
                                 send_snapshot=self.send_snapshot, observer=self.observer, clock=clock)
        self.clients: set[ClientConnection] = set()
        # The clients of each codec in use, by its name, and the codecs.
        self.by_codec: dict[str, set[ClientConnection]] = {}
        self.codecs: dict[str, Codec] = {codec.name: codec}
        self.blocked: set[ClientConnection] = set()
        self.latest: Envelope | None = None
        # Frames of the latest snapshot, by (codec, stale): encoded once each.
        self._frames: dict[tuple[str, bool], bytes] = {}
        # The snapshot whose ageing clients were told of (a stale notice), if any.
        self._told_stale: tuple[int, int] | None = None
        self.accepting = True
        self._next_id = 0
        self._housekeeper: Any = None

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
        """The node's listener: send ``env`` to every client (latest-only), once encoded per codec."""
        started = time.perf_counter()
        now = self.clock()
        self.latest, self._frames = env, {}
        # Already old when it arrives: its frames say so, and no notice follows.
        self._told_stale = env.key if self.staleness.aged(env, now) else None
        handed = superseded = 0
        for name, conns in self.by_codec.items():
            if not conns:
                continue
            done = broadcast(conns, self.frame(self.codecs[name], now), self.send_threads, env.key)
            handed += done.handed
            superseded += done.superseded
        seconds = time.perf_counter() - started
        notify(lambda: self.observer.broadcast(handed, superseded, env.fetched_at, seconds), "broadcast")

    def frame(self, codec: Codec, now: float | None = None) -> bytes:
        """The latest snapshot as ``codec`` encodes it, stale or not as of ``now``."""
        env = self.latest
        assert env is not None
        stale = self.staleness.stale(env, self.clock() if now is None else now)
        key = (codec.name, stale)
        frame = self._frames.get(key)
        if frame is None:
            view = View(self.public_served_by, self.label(env.leader), stale)
            frame = self._frames[key] = codec.snapshot(env, view)
        return frame

    def send_snapshot(self, conn: ClientConnection) -> bool:
        """Send the current snapshot to one client (on connect, or asked); False if there is none."""
        env = self.latest
        if env is None:
            return False
        broadcast((conn,), self.frame(conn.codec), 1, env.key)
        return True

    # --- clients ----------------------------------------------------------
    def serve(self, taken: TakenOver, remote: str, codec: Codec | None = None) -> ClientConnection:
        """Register a client right after its handshake and takeover; returns at once.

        From here the connection is driven by watchers on the gevent loop, so
        the request (and its greenlet) can end. ``codec`` is the protocol the
        handshake chose (default: the hub's).
        """
        self._next_id += 1
        conn = ClientConnection(
            taken, conn_id=self._next_id, remote=remote, max_message_bytes=self.max_message_bytes,
            commands_per_second=self.commands_per_second, handler=self, codec=codec or self.codec,
        )
        if self.send_buffer:
            # A fixed kernel buffer bounds the memory a client that stops
            # reading can hold, and makes such a client visible sooner.
            try:
                conn.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            except OSError:
                pass
        self.clients.add(conn)
        self.codecs.setdefault(conn.codec.name, conn.codec)
        self.by_codec.setdefault(conn.codec.name, set()).add(conn)
        notify(self.observer.connected, "connected")
        notify(lambda: self.observer.clients(len(self.clients)), "clients")
        if not self.accepting:
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        else:
            self.send_snapshot(conn)  # a new client gets the current snapshot at once
        if taken.leftover and not conn.closed:
            conn.feed(taken.leftover)
        return conn

    @property
    def full(self) -> bool:
        return len(self.clients) >= self.max_clients

    # --- what a connection tells its hub (feed/ws/connection.py) -------------
    def on_text(self, conn: ClientConnection, text: str) -> None:
        self.commands.handle(conn, text)

    def on_blocked(self, conn: ClientConnection, blocked: bool) -> None:
        if blocked:
            self.blocked.add(conn)
        else:
            self.blocked.discard(conn)

    def on_closed(self, conn: ClientConnection) -> None:
        self.clients.discard(conn)
        self.by_codec.get(conn.codec.name, set()).discard(conn)
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
        """One housekeeping round: the client policy, then staleness."""
        self.policy.sweep(self.clients, self.blocked, now)
        env = self.latest
        wall = self.clock()
        if env is not None and self._told_stale != env.key and self.staleness.aged(env, wall):
            # Once per snapshot: its frames are now the stale ones (derived in
            # frame()), and the clients holding it are told.
            self._told_stale = env.key
            age = env.age(wall)
            notices: dict[str, bytes] = {}
            for conn in list(self.clients):
                codec = conn.codec
                notice = notices.get(codec.name)
                if notice is None:
                    notice = notices[codec.name] = codec.stale_notice(env, self.public_served_by, age)
                conn.send_control(notice)
            log_event(log, "snapshot_stale", logging.WARNING, node=self.served_by,
                      epoch=env.epoch, seq=env.seq, age_s=round(age, 1))

