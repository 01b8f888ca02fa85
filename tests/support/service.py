"""Real Gunicorn instances of the service and real WebSocket clients for tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field

import websocket

from feed.lab import ServiceInstance

# Scaled-down timing for tests: same rules as the defaults, faster.
FAST_ENV = {
    "LOCK_TTL_SECONDS": "2",
    "RENEW_INTERVAL_SECONDS": "0.5",
    "LEASE_MARGIN_SECONDS": "0.3",
    "FETCH_INTERVAL_SECONDS": "0.5",
    "CACHE_TTL_SECONDS": "10",
    "REDIS_TIMEOUT_SECONDS": "0.5",
    "GRACEFUL_TIMEOUT": "5",
}


class Instance(ServiceInstance):
    """One ``gunicorn -c gunicorn.conf.py`` process tree on a free port.

    The lab's instance (:class:`feed.lab.ServiceInstance`) with the tests'
    scaled-down timing and two workers by default.
    """

    def __init__(self, name: str, *, workers: int = 2, redis_url: str | None = None,
                 sim_url: str | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__(name, workers=workers, redis_url=redis_url, sim_url=sim_url,
                         env={**FAST_ENV, **(env or {})})

    def wait_ready(self, timeout: float = 30.0) -> Instance:
        try:
            super().wait_ready(timeout)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None
        return self


@dataclass
class Received:
    t: float
    msg: dict


@dataclass
class WSClient:
    """A websocket-client connection read by a thread; keeps every message."""

    url: str
    name: str = ""
    headers: list[str] = field(default_factory=list)
    read_delay: float = 0.0  # seconds to sleep after each message (a slow reader)
    rcvbuf: int = 0
    messages: list[Received] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    error: str | None = None
    opened_at: float = 0.0

    def start(self, timeout: float = 10.0) -> WSClient:
        sockopt = [(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)] if self.rcvbuf else []
        # websocket-client sends an Origin of its own unless told otherwise:
        # send exactly the one given in headers, or none (as a bot would).
        origin = [h.split(":", 1)[1].strip() for h in self.headers if h.lower().startswith("origin:")]
        headers = [h for h in self.headers if not h.lower().startswith("origin:")]
        options = {"origin": origin[0]} if origin else {"suppress_origin": True}
        self.ws = websocket.create_connection(self.url, timeout=timeout, header=headers,
                                              sockopt=sockopt, enable_multithread=True, **options)
        self.opened_at = time.time()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    if len(data) >= 2:
                        self.close_code = int.from_bytes(data[:2], "big")
                        self.close_reason = data[2:].decode("utf-8", "replace")
                    else:
                        self.close_code = 1005
                    break
                with self._cond:
                    self.messages.append(Received(time.time(), json.loads(data)))
                    self._cond.notify_all()
                if self.read_delay:
                    time.sleep(self.read_delay)
        except websocket.WebSocketConnectionClosedException:
            if self.close_code is None:
                self.close_code = 1006
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            if self.close_code is None:
                self.close_code = 1006
        finally:
            with self._cond:
                self._cond.notify_all()

    def snapshots(self) -> list[dict]:
        return [r.msg for r in list(self.messages) if r.msg.get("type") == "snapshot"]

    def keys(self) -> list[tuple[int, int]]:
        return [(m["epoch"], m["seq"]) for m in self.snapshots()]

    def wait(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no {what} within {timeout}s "
                                         f"(got {len(self.messages)} messages, close {self.close_code})")
                self._cond.wait(min(left, 0.2))

    def wait_snapshots(self, n: int, timeout: float = 10.0) -> None:
        self.wait(lambda c: len(c.snapshots()) >= n, timeout, f"{n} snapshots")

    def wait_closed(self, timeout: float = 10.0) -> int | None:
        self._thread.join(timeout)
        return self.close_code

    def send(self, text: str | bytes, binary: bool = False) -> None:
        if binary:
            self.ws.send_binary(text)
        else:
            self.ws.send(text)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass
