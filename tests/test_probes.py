"""Malformed and abusive input on the wire, against a real Gunicorn instance.

Raw sockets for the handshakes (a WebSocket library would not send them), the
frames built by hand where the point is what arrives in which packet.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from contextlib import ExitStack

import pytest
import websocket as wsc

from lab.clients import RecordingClient
from tests.support.service import Instance
from tests.test_service import metric


@pytest.fixture
def inst(stack: ExitStack, redis_proc, sim) -> Instance:
    # Loopback is not a trusted proxy here, so forwarded headers must be ignored.
    i = Instance("probe", workers=1, redis_url=redis_proc.url, sim_url=sim.url,
                 env={"FORWARDED_ALLOW_IPS": "10.9.9.9", "WS_COMMANDS_PER_SECOND": "20"})
    stack.callback(i.stop)
    return i.wait_ready()


def handshake(host: str, *, key: str | None = "auto", version: str = "13", extra: str = "") -> bytes:
    lines = ["GET /ws HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade"]
    if key == "auto":
        key = base64.b64encode(os.urandom(16)).decode()
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    lines.append(f"Sec-WebSocket-Version: {version}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (RFC 6455 5.3)."""
    mask = os.urandom(4)
    head = bytes((0x80 | opcode,))
    n = len(payload)
    head += bytes((0x80 | n,)) if n < 126 else struct.pack("!BH", 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def read_frames(sock: socket.socket, buf: bytes, count: int, timeout: float = 5.0) -> list[dict]:
    """Server frames (unmasked text) until ``count`` JSON messages of interest are read."""
    out: list[dict] = []
    sock.settimeout(timeout)
    while len(out) < count:
        while True:
            if len(buf) >= 2:
                n = buf[1] & 0x7F
                start = 2
                if n == 126:
                    n, start = struct.unpack("!H", buf[2:4])[0], 4
                elif n == 127:
                    n, start = struct.unpack("!Q", buf[2:10])[0], 10
                if len(buf) >= start + n:
                    opcode, payload, buf = buf[0] & 0x0F, buf[start:start + n], buf[start + n:]
                    if opcode == 0x1:
                        out.append(json.loads(payload))
                    elif opcode == 0x8:
                        out.append({"type": "close", "code": struct.unpack("!H", payload[:2])[0]})
                    break
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
    return out


def test_a_bad_handshake_is_a_4xx_not_a_traceback(inst: Instance) -> None:
    host = f"127.0.0.1:{inst.port}"
    cases = [
        (handshake(host, key=None), 400, None),
        (handshake(host, key="not-base64!!"), 400, None),
        (handshake(host, key=base64.b64encode(b"short").decode()), 400, None),
        (handshake(host, version="8"), 426, "13"),
        (handshake(host, version=""), 426, "13"),
    ]
    for request, status, version in cases:
        with socket.create_connection(("127.0.0.1", inst.port), timeout=5) as s:
            s.sendall(request)
            code, headers, body = read_response(s)
        assert code == status, (request, code, body)
        if version:
            assert headers["sec-websocket-version"] == version
    time.sleep(0.3)
    output = "\n".join(inst.proc.raw)
    assert "Traceback" not in output and '"level":"error"' not in output


def test_frames_sent_with_the_handshake_are_not_lost(inst: Instance) -> None:
    host = f"127.0.0.1:{inst.port}"
    whole = client_frame(json.dumps({"op": "ping", "id": "whole"}).encode())
    with socket.create_connection(("127.0.0.1", inst.port), timeout=5) as s:
        s.sendall(handshake(host) + whole)  # one packet
        code, _, rest = read_response(s)
        assert code == 101
        msgs = read_frames(s, rest, 2)
        assert any(m.get("type") == "pong" and m.get("id") == "whole" for m in msgs), msgs
    # Half a frame behind the handshake, the rest later: still one message.
    frame = client_frame(json.dumps({"op": "ping", "id": "split"}).encode())
    with socket.create_connection(("127.0.0.1", inst.port), timeout=5) as s:
        s.sendall(handshake(host) + frame[:7])
        code, _, rest = read_response(s)
        assert code == 101
        time.sleep(0.2)
        s.sendall(frame[7:])
        msgs = read_frames(s, rest, 2)
        assert any(m.get("type") == "pong" and m.get("id") == "split" for m in msgs), msgs
        assert not any(m.get("type") == "close" for m in msgs), msgs


def test_client_chosen_close_codes_do_not_grow_metrics_or_logs(inst: Instance) -> None:
    codes = [3000 + i for i in range(0, 1000, 25)] + [4000 + i for i in range(0, 1000, 25)]
    for code in codes:
        ws = wsc.create_connection(inst.ws_url, timeout=5, suppress_origin=True)
        ws.close(status=code)
    time.sleep(0.5)
    text = inst.get("/metrics").text
    labels = {lbl["code"] for lbl, _ in metric(text, "marketfeed_ws_closed_total")}
    assert labels <= {"1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009",
                      "1011", "1013", "3xxx", "4xxx", "other"}, labels
    assert {"3xxx", "4xxx"} <= labels
    closed = [e for e in inst.proc.lines if e.get("event") == "client_closed"]
    assert not [e for e in closed if e.get("code", 0) >= 3000], closed[:3]


def test_a_ping_flood_counts_against_the_rate_limit(inst: Instance, stack: ExitStack) -> None:
    bystander = RecordingClient(inst.ws_url, name="bystander").start()
    stack.callback(bystander.close)
    ws = wsc.create_connection(inst.ws_url, timeout=5, suppress_origin=True)
    code = None
    try:
        for _ in range(500):
            ws.ping(b"x")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == wsc.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0]
                break
    except (OSError, wsc.WebSocketException):
        pass
    finally:
        ws.close()
    assert code == 1008
    n = len(bystander.snapshots())
    bystander.wait_snapshots(n + 2)
    assert bystander.close_code is None


def test_forwarded_host_counts_only_from_a_trusted_proxy(inst: Instance) -> None:
    # A page on evil.example claims, through X-Forwarded-Host, to be same-origin.
    with pytest.raises(wsc.WebSocketBadStatusException) as info:
        wsc.create_connection(inst.ws_url, timeout=5, origin="https://evil.example",
                              header=["X-Forwarded-Host: evil.example"])
    assert info.value.status_code == 403
    ws = wsc.create_connection(inst.ws_url, timeout=5, origin=f"http://127.0.0.1:{inst.port}")
    ws.close()
