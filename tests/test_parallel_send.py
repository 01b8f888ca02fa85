"""send_to_all: one frame to many real sockets from several OS threads."""

from __future__ import annotations

import _socket
import socket
import time

import pytest

from feed.ws.broadcast import send_to_all
from feed.ws.frames import text_frame


@pytest.fixture
def pairs():
    listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
    port = listener.getsockname()[1]
    out = []
    for _ in range(600):
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        raw = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, _socket.dup(server.fileno()))
        raw.setblocking(False)
        server.close()
        out.append((client, raw))
    yield out
    for client, raw in out:
        client.close()
        raw.close()
    listener.close()


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_every_socket_gets_the_whole_frame_once(pairs, threads: int) -> None:
    frame = text_frame('{"type":"snapshot","pad":"' + "x" * 2000 + '"}')
    results = send_to_all([raw for _, raw in pairs], frame, threads)
    assert results == [len(frame)] * len(pairs)
    for client, _ in pairs:
        client.settimeout(5)
        got = b""
        while len(got) < len(frame):
            got += client.recv(65536)
        assert got == frame


def test_a_full_socket_reports_a_partial_write_and_a_dead_one_an_error(pairs) -> None:
    big = text_frame("y" * 8_000_000)  # more than any socket buffer takes at once
    pairs[1][0].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    pairs[1][0].close()  # the peer is gone: it answered with a reset
    socks = [pairs[0][1], pairs[1][1]]
    time.sleep(0.1)
    results = send_to_all(socks, big, 2)
    assert 0 < results[0] < len(big)
    assert results[1] == -1
