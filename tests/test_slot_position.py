"""A slow client's latest-only slot: what it holds, what it was handed, by position.

Real sockets, a real wsproto connection and gevent's loop; the client here
stops reading, then reads everything.
"""

from __future__ import annotations

import socket

import gevent
from wsproto.connection import Connection, ConnectionType

from feed.ws.broadcast import broadcast
from feed.ws.codecs.marketfeed import CODEC
from feed.ws.connection import ClientConnection
from feed.ws.frames import text_frame
from feed.ws.takeover import TakenOver


class Handler:
    def __init__(self) -> None:
        self.blocked: list[bool] = []

    def on_text(self, conn: ClientConnection, text: str) -> None:
        pass

    def on_blocked(self, conn: ClientConnection, blocked: bool) -> None:
        self.blocked.append(blocked)

    def on_closed(self, conn: ClientConnection) -> None:
        pass


def test_the_slot_remembers_what_was_handed_and_what_waits() -> None:
    ours, client = socket.socketpair()
    ours.setblocking(False)
    client.setblocking(False)
    handler = Handler()
    conn = ClientConnection(TakenOver(ours.fileno(), ours, Connection(ConnectionType.SERVER), b""),
                            conn_id=1, remote="test", max_message_bytes=4096, commands_per_second=20,
                            handler=handler, codec=CODEC)
    try:
        small = text_frame('{"type":"snapshot"}')
        broadcast([conn], small, 1, (1, 1))
        assert conn.position == (1, 1) and conn.slot_position is None
        big = text_frame("x" * 4_000_000)  # more than the socket takes at once: the client falls behind
        broadcast([conn], big, 1, (1, 2))
        assert conn.pending and conn.position == (1, 2)  # handed, partly written
        broadcast([conn], small, 1, (1, 3))
        broadcast([conn], small, 1, (1, 4))  # supersedes (1, 3), never sent
        assert conn.position == (1, 2) and conn.slot_position == (1, 4) and conn.superseded == 1
        received = 0
        expected = len(small) + len(big) + len(small)
        for _ in range(2000):
            try:
                while True:
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        break
                    received += len(chunk)
            except BlockingIOError:
                pass
            if received >= expected and not conn.pending:
                break
            gevent.sleep(0.005)  # the loop runs the connection's write watcher
        assert received == expected
        assert conn.position == (1, 4) and conn.slot_position is None
        assert handler.blocked[0] is True and handler.blocked[-1] is False
    finally:
        conn.abort(1001, "test over")
        client.close()
