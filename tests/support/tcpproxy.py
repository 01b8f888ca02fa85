"""A small threaded TCP proxy for fault tests, on loopback.

It forwards each accepted connection to a backend and can, at run time:

* ``cut()``        close every open connection and refuse new ones (a hard partition);
* ``blackhole()``  keep connections open but drop every byte (packets lost, no RST);
* ``delay(s)``     add latency to every chunk forwarded;
* ``heal()``       back to normal.

With several backends it picks them round-robin for each new connection and
skips those that refuse (like a platform's edge in front of replicas).
"""

from __future__ import annotations

import itertools
import select
import socket
import threading
import time

__all__ = ["TCPProxy"]


class TCPProxy:
    def __init__(self, backends: list[tuple[str, int]] | tuple[str, int], port: int = 0) -> None:
        self.backends = [backends] if isinstance(backends, tuple) else list(backends)
        self._rr = itertools.cycle(range(len(self.backends)))
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        self.mode = "normal"  # normal | cut | blackhole
        self.latency = 0.0
        self.connections = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    # --- faults ---------------------------------------------------------
    def cut(self) -> None:
        self.mode = "cut"
        self._close_all()

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def delay(self, seconds: float) -> None:
        self.latency = seconds

    def heal(self) -> None:
        self.mode = "normal"
        self.latency = 0.0

    def close(self) -> None:
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        self._close_all()
        self._thread.join(2)

    def __enter__(self) -> TCPProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------
    def _close_all(self) -> None:
        with self._lock:
            socks, self._open = list(self._open), set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _connect_backend(self) -> socket.socket | None:
        for _ in range(len(self.backends)):
            host, port = self.backends[next(self._rr)]
            try:
                return socket.create_connection((host, port), timeout=2)
            except OSError:
                continue
        return None

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "cut":
                client.close()
                continue
            backend = self._connect_backend()
            if backend is None:
                client.close()
                continue
            backend.settimeout(None)
            self.connections += 1
            with self._lock:
                self._open.update((client, backend))
            threading.Thread(target=self._pipe, args=(client, backend), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    if self.mode == "blackhole":
                        continue
                    if self.latency:
                        time.sleep(self.latency)
                    peers[src].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._open.discard(a)
                self._open.discard(b)
