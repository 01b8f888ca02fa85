"""The simulated exchange's HTTP server: market endpoints, limits, stats and faults.

A stdlib ``ThreadingHTTPServer`` with daemon threads: no dependency beyond
the standard library, and a stalled answer holds only its own thread. It
speaks HTTP/1.1 with keep-alive, so a client's connection reuse is visible in
``connections`` of ``GET /_sim/stats``.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from feed.logs import log_event
from feed.providers.names import NODE_HEADER
from feed.simulator.faults import GLOBAL, PROVIDERS, FaultBook, FaultError, FaultSpec, parse_fault
from feed.simulator.limits import Gate, LimitError, Limits, parse_keys, parse_limits
from feed.simulator.market import Market
from feed.simulator.routes import PREFIXES, Answer, malform, padded, route
from feed.simulator.stats import CallStats

__all__ = ["SimulatedExchange"]

log = logging.getLogger(__name__)

MAX_CONTROL_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may sit idle
PAD_CHUNK = 64 * 1024


class SimulatedExchange:
    """A stand-in for CoinGecko, Binance and alternative.me on one port.

    ``SimulatedExchange(port=0).start()`` binds a free port; ``url`` then
    names it. Usable as a context manager. ``seed`` makes prices and the
    random 500s repeat from run to run. ``limits`` switches the real APIs'
    rate limits on (``Limits.real()``; by default only CoinGecko's cache is
    on); ``demo_keys`` and ``pro_keys`` are the CoinGecko keys it accepts
    (none by default: any key is refused with 10002); ``key_digests`` the
    SHA-256 of keys it accepts without holding them (the service's own). ``clock`` (Unix
    seconds) drives the limits, the cache and the price walk: a test's own
    clock makes windows and bans instant.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, seed: int | None = None,
                 *, tick: float = 1.0, limits: Limits | None = None, demo_keys: Iterable[str] = (),
                 pro_keys: Iterable[str] = (), clock: Callable[[], float] | None = None,
                 key_digests: Mapping[str, Iterable[str]] | None = None) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.market = Market(seed, tick=tick) if clock is None else Market(seed, tick=tick, clock=clock)
        self.gate = Gate(limits, demo_keys, pro_keys, clock or time.time, key_digests=key_digests)
        self.faults = FaultBook(seed)
        self.calls = CallStats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    # --- lifecycle ------------------------------------------------------
    def start(self) -> SimulatedExchange:
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler, self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sim-server", daemon=True)
        self._thread.start()
        log_event(log, "sim_started", url=self.url, seed=self.seed)
        return self

    def stop(self) -> None:
        """Stop listening, end stalls early and close kept-alive connections."""
        server = self._server
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(5.0)
        self._server = None
        log_event(log, "sim_stopped", url=self.url)

    def __enter__(self) -> SimulatedExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def provider_url(self, provider: str) -> str:
        return f"{self.url}/{provider}"

    # --- the same controls as the HTTP API, for tests in-process --------
    def stats(self) -> dict[str, Any]:
        return self.calls.to_dict()

    def reset_stats(self) -> None:
        self.calls.reset()

    def inject(self, **fault: Any) -> dict[str, Any]:
        """Set a fault as ``POST /_sim/faults`` would; raises FaultError if bad."""
        scope, spec = parse_fault(fault)
        self.faults.set(scope, spec)
        return self.faults.snapshot()

    def clear_faults(self, provider: str | None = None) -> None:
        self.faults.clear(provider)

    @property
    def limits(self) -> Limits:
        return self.gate.limits

    def set_limits(self, **fields: Any) -> Limits:
        """Change limits as ``POST /_sim/limits`` would (``preset=`` too); raises LimitError if bad."""
        limits = parse_limits(fields, self.gate.limits)
        self.gate.set_limits(limits)
        return limits

    def set_keys(self, demo: Iterable[str] | None = None, pro: Iterable[str] | None = None) -> None:
        """Replace the accepted Demo and/or Pro keys, as ``POST /_sim/keys`` would."""
        body = {k: list(v) for k, v in (("demo", demo), ("pro", pro)) if v is not None}
        self.gate.set_keys(parse_keys(body))

    def reset_limits(self) -> None:
        """Forget counts, bans, monthly credits used and cached answers."""
        self.gate.reset()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, sim: SimulatedExchange) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sim = sim
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        self.sim.calls.count_connection()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller that hung up (a fetcher's timeout, a test's stall fault) is
        # routine here; the stdlib would print a traceback for each one.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "marketfeed-sim"
    timeout = IDLE_TIMEOUT
    server: _Server
    counted = False  # this request was a market call (counted in stats)
    provider = "unknown"  # the provider it was for (counted with its status)

    # --- dispatch -------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.counted = False
        self.provider = "unknown"
        try:
            if parts.path == "/_sim" or parts.path.startswith("/_sim/"):
                self._control(method, parts.path, parse_qs(parts.query))
            elif method == "GET":
                self._market(parts.path, parse_qs(parts.query))
            else:
                self._send_json(405, {"error": f"{method} is not allowed on market endpoints"})
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. it stopped reading an oversized body).
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sim %s", format % args)

    # --- market endpoints -----------------------------------------------
    def _market(self, path: str, query: dict[str, list[str]]) -> None:
        sim = self.server.sim
        prefix, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest
        self.provider = PREFIXES.get(prefix, "unknown")
        ip = self.client_address[0]
        node = self.headers.get(NODE_HEADER) or "unknown"
        sim.calls.count_call(self.provider, path, node, self.headers.get("User-Agent") or "", ip)
        self.counted = True
        spec = sim.faults.take(prefix) if self.provider != "unknown" else None
        if spec is not None and (self._before_answer(spec) or self._injected(spec, prefix)):
            return
        admission = sim.gate.admit(prefix, rest, query, self.headers, ip)
        extra = admission.headers or {}
        if admission.reject is not None:
            sim.calls.count_limit(admission.applied or "limit")
            self._send_answer(admission.reject, extra)
            return
        answer, hit = sim.gate.cached(admission, lambda: route(
            sim.market, prefix, rest, query, weight_limit=sim.gate.weight_limit()))
        if admission.cache_key is not None and admission.cache_s > 0:
            sim.calls.count_cache(hit)
        if spec is not None and self._spoiled(spec, answer, extra):
            return
        self._send_answer(answer, extra)

    def _before_answer(self, spec: FaultSpec) -> bool:
        """Stall and latency; True if the request was dropped without an answer."""
        sim = self.server.sim
        if spec.stall_s:
            sim.calls.count_fault("stall")
            # Accept, read, never answer: the client can only time out.
            sim.stopping.wait(spec.stall_s)
            self.close_connection = True
            return True
        if spec.latency_ms:
            sim.calls.count_fault("latency")
            sim.stopping.wait(spec.latency_ms / 1000.0)
        return False

    def _injected(self, spec: FaultSpec, prefix: str) -> bool:
        """A fixed status or a random 500, in the provider's own words; True if one was sent."""
        sim = self.server.sim
        if spec.status is not None:
            sim.calls.count_fault(f"status_{spec.status}")
            self._send_answer(sim.gate.injected(prefix, spec.status, spec.retry_after))
            return True
        if sim.faults.roll(spec.error_rate):
            sim.calls.count_fault("error_rate")
            self._send_answer(sim.gate.injected(prefix, 500, None))
            return True
        return False

    def _spoiled(self, spec: FaultSpec, answer: Answer, headers: dict[str, str]) -> bool:
        """Oversized and malformed bodies; True if one was sent."""
        sim = self.server.sim
        if answer.kind is None:
            return False  # an error answer of the route itself is left as it is
        if spec.oversized_bytes:
            sim.calls.count_fault("oversized")
            self._send_padded(answer.payload, spec.oversized_bytes, spec.chunked, headers)
            return True
        if spec.malformed:
            sim.calls.count_fault(f"malformed_{spec.malformed}")
            body, content_type = malform(answer.kind, answer.payload, spec.malformed)
            self._send_bytes(200, body, content_type, headers)
            return True
        return False

    # --- control endpoints ----------------------------------------------
    _CONTROL = {
        "/_sim/stats": ("GET",),
        "/_sim/stats/reset": ("POST",),
        "/_sim/faults": ("GET", "POST", "DELETE"),
        "/_sim/limits": ("GET", "POST"),
        "/_sim/limits/reset": ("POST",),
        "/_sim/keys": ("GET", "POST"),
    }

    def _control(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        sim = self.server.sim
        if path not in self._CONTROL:
            self._send_json(404, {"error": f"no control endpoint {path}; see "
                                  f"{', '.join(self._CONTROL)}"})
        elif method not in self._CONTROL[path]:
            self._send_json(405, {"error": f"{method} is not allowed on {path}"})
        elif path == "/_sim/stats":
            self._send_json(200, sim.stats())
        elif path == "/_sim/stats/reset":
            sim.reset_stats()
            self._send_json(200, {"ok": True, "stats": sim.stats()})
        elif path == "/_sim/faults" and method == "GET":
            self._send_json(200, {"faults": sim.faults.snapshot()})
        elif path == "/_sim/faults" and method == "POST":
            self._post_fault()
        elif path == "/_sim/faults":
            scope = (query.get("provider") or [None])[-1]
            if scope is not None and scope not in (*PROVIDERS, GLOBAL):
                self._send_json(400, {"error": f"unknown provider {scope!r}; "
                                      f"known: {', '.join(PROVIDERS)}, {GLOBAL}"})
                return
            sim.clear_faults(scope)
            self._send_json(200, {"ok": True, "faults": sim.faults.snapshot()})
        elif path == "/_sim/limits" and method == "GET":
            self._send_json(200, sim.gate.snapshot())
        elif path == "/_sim/limits":
            self._post_limits()
        elif path == "/_sim/limits/reset":
            sim.reset_limits()
            self._send_json(200, {"ok": True, **sim.gate.snapshot()})
        elif method == "GET":
            self._send_json(200, {"keys": sim.gate.keys()})
        else:
            self._post_keys()

    def _read_json(self) -> tuple[bool, Any]:
        """``(True, body)``, or ``(False, None)`` once a 400/413 has been sent."""
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True  # the body's end is unknown: do not reuse
            self._send_json(400, {"error": "a JSON body with Content-Length is required"})
            return False, None
        if int(length) > MAX_CONTROL_BODY:
            self.close_connection = True
            self._send_json(413, {"error": f"body larger than {MAX_CONTROL_BODY} bytes"})
            return False, None
        raw = self.rfile.read(int(length))
        try:
            return True, json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self._send_json(400, {"error": f"body is not JSON: {exc}"})
            return False, None

    def _post_fault(self) -> None:
        sim = self.server.sim
        ok, body = self._read_json()
        if not ok:
            return
        try:
            scope, spec = parse_fault(body)
        except FaultError as exc:
            self._send_json(400, {"error": str(exc)})
            return
        sim.faults.set(scope, spec)
        log_event(log, "sim_fault_set", scope=scope, fault=spec.to_dict())
        self._send_json(200, {"ok": True, "faults": sim.faults.snapshot()})

    def _post_limits(self) -> None:
        sim = self.server.sim
        ok, body = self._read_json()
        if not ok:
            return
        try:
            limits = parse_limits(body, sim.gate.limits)
        except LimitError as exc:
            self._send_json(400, {"error": str(exc)})
            return
        sim.gate.set_limits(limits)
        log_event(log, "sim_limits_set", limits=limits.to_dict())
        self._send_json(200, {"ok": True, "limits": limits.to_dict()})

    def _post_keys(self) -> None:
        sim = self.server.sim
        ok, body = self._read_json()
        if not ok:
            return
        try:
            sim.gate.set_keys(parse_keys(body))
        except LimitError as exc:
            self._send_json(400, {"error": str(exc)})
            return
        keys = sim.gate.keys()
        # Counts only: keys stay out of logs, even a simulator's.
        log_event(log, "sim_keys_set", demo=len(keys["demo"]), pro=len(keys["pro"]))
        self._send_json(200, {"ok": True, "keys": keys})

    # --- writing --------------------------------------------------------
    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_answer(self, answer: Answer, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(answer.status, answer.body(), answer.content_type,
                         {**answer.headers, **(headers or {})})

    def _send_bytes(self, status: int, body: bytes, content_type: str,
                    headers: dict[str, str] | None = None) -> None:
        if self.counted:
            self.server.sim.calls.count_status(status, self.provider)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_padded(self, payload: Any, size: int, chunked: bool, headers: dict[str, str]) -> None:
        """A valid answer grown to ``size`` extra bytes, written in pieces."""
        head, tail = padded(payload)
        if self.counted:
            self.server.sim.calls.count_status(200, self.provider)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        if chunked:
            # No Content-Length at all: only reading the body reveals its size.
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(head) + size + len(tail)))
        self.end_headers()
        for piece in _pieces(head, size, tail):
            if chunked:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


def _pieces(head: bytes, size: int, tail: bytes) -> Iterator[bytes]:
    # Generated as written, so a large padding never sits in memory whole.
    yield head
    left = size
    while left > 0:
        n = min(PAD_CHUNK, left)
        yield b"x" * n
        left -= n
    yield tail
