"""HTTP to the market APIs: one pooled session, bounded calls, every call counted.

Each call has connect and read timeouts, a size cap on the body (read in
pieces, so a missing or lying Content-Length cannot get past it), a bounded
number of retries with jittered backoff for the failures that retrying can
fix (connection errors, timeouts, 5xx), and a per-fetch deadline that clamps
all of these. A 429 puts the provider behind a gate until its Retry-After
has passed, across fetches: calls in the meantime are skipped, not sent.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from feed import __version__
from feed.logs import log_event
from feed.providers.names import NODE_HEADER
from feed.providers.validate import InvalidResponse, loads_strict

__all__ = [
    "NODE_HEADER",
    "OUTCOMES",
    "USER_AGENT",
    "Call",
    "CallFailed",
    "HttpClient",
    "OnCall",
    "make_session",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

USER_AGENT = f"marketfeed/{__version__}"
OUTCOMES = (
    "ok", "http_error", "timeout", "connection_error", "invalid", "too_large",
    "rate_limited", "skipped",
)
RETRYABLE = frozenset({"timeout", "connection_error"})

# When a 429 names no Retry-After we still must back off; when it names an
# absurd one we still want the provider back the same day.
DEFAULT_RETRY_AFTER = 30.0
MAX_RETRY_AFTER = 3600.0
BACKOFF_BASE = 0.1
BACKOFF_CAP = 1.0
MIN_ATTEMPT = 0.05  # no attempt is started with less time than this left
CHUNK = 64 * 1024

OnCall = Callable[[str, str, float], None]


@dataclass(frozen=True)
class Call:
    """One upstream request and how to turn its JSON into normalised data.

    ``part`` is what it supplies to the snapshot: ``prices``, ``market`` or
    ``sentiment``. ``parse`` raises :class:`InvalidResponse` on bad data.
    """

    provider: str
    part: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    parse: Callable[[Any], Any] = lambda payload: payload


class CallFailed(Exception):
    """A call gave no usable data; ``outcome`` is one of :data:`OUTCOMES`."""

    def __init__(self, outcome: str, detail: str, *, status: int | None = None,
                 retryable: bool | None = None, retry_after: float | None = None) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome = outcome
        self.detail = detail
        self.status = status
        self.retryable = outcome in RETRYABLE if retryable is None else retryable
        self.retry_after = retry_after


def make_session(node_id: str, pool_size: int = 8) -> requests.Session:
    """A session that reuses connections and names the service and the node."""
    session = requests.Session()
    # Retries are ours (each attempt must be counted and bounded by the
    # fetch deadline), so urllib3's own are off.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        NODE_HEADER: node_id,
    })
    return session


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpClient:
    """Runs :class:`Call` objects over one session; see the module docstring.

    ``on_call(provider, outcome, seconds)`` is told about every attempt (and
    every skipped call); ``stats`` counts the same by ``(provider, outcome)``.
    """

    def __init__(
        self,
        node_id: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        retries: int = 2,
        max_bytes: int = 1_000_000,
        on_call: OnCall | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        event_class: type = threading.Event,
    ) -> None:
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.node_id = node_id
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.max_bytes = max_bytes
        self.on_call = on_call
        self.session = session or make_session(node_id)
        self.clock = clock
        self.stats: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._blocked_until: dict[str, float] = {}
        self._closed = event_class()

    # --- rate-limit gate ------------------------------------------------
    def blocked_for(self, provider: str) -> float:
        """Seconds until ``provider`` may be called again (0: now)."""
        with self._lock:
            until = self._blocked_until.get(provider, 0.0)
        return max(0.0, until - self.clock())

    def _block(self, provider: str, seconds: float) -> None:
        with self._lock:
            until = self.clock() + seconds
            # Concurrent calls may both be refused; keep the later deadline.
            self._blocked_until[provider] = max(until, self._blocked_until.get(provider, 0.0))

    # --- calls ----------------------------------------------------------
    def run(self, call: Call, deadline: float) -> Any:
        """The parsed data of ``call``, or :class:`CallFailed` with the last outcome."""
        attempt = 0
        while True:
            wait = self.blocked_for(call.provider)
            if wait > 0:
                self._record(call.provider, "skipped", 0.0)
                log_event(log, "upstream_skipped", logging.DEBUG, node=self.node_id,
                          provider=call.provider, part=call.part, retry_after_s=round(wait, 3))
                raise CallFailed("skipped", "rate limited, waiting for Retry-After",
                                 retryable=False, retry_after=wait)
            started = self.clock()
            try:
                value = self._attempt(call, deadline)
            except CallFailed as exc:
                seconds = self.clock() - started
                self._record(call.provider, exc.outcome, seconds)
                if exc.outcome == "rate_limited":
                    self._block(call.provider, exc.retry_after or DEFAULT_RETRY_AFTER)
                log_event(log, "upstream_call_failed", logging.WARNING, node=self.node_id,
                          provider=call.provider, part=call.part, outcome=exc.outcome,
                          status=exc.status, detail=exc.detail, attempt=attempt + 1,
                          seconds=round(seconds, 3), retry_after_s=exc.retry_after)
                if not exc.retryable or attempt >= self.retries:
                    raise
                pause = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.0)
                if deadline - self.clock() < pause + MIN_ATTEMPT:
                    raise  # no time left in this fetch for another try
                if self._closed.wait(pause):
                    raise
                attempt += 1
                continue
            self._record(call.provider, "ok", self.clock() - started)
            return value

    def _attempt(self, call: Call, deadline: float) -> Any:
        left = max(MIN_ATTEMPT, deadline - self.clock())
        timeout = (min(self.connect_timeout, left), min(self.read_timeout, left))
        try:
            response = self.session.get(call.url, params=call.params, timeout=timeout,
                                        stream=True, allow_redirects=False)
        except requests.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            raise CallFailed("timeout", _short(exc)) from None
        except requests.RequestException as exc:
            raise CallFailed("connection_error", _short(exc)) from None
        try:
            status = response.status_code
            if status == 429 or (status == 418 and "Retry-After" in response.headers):
                # 418 is Binance's "banned until Retry-After" after ignored 429s.
                wait = parse_retry_after(response.headers.get("Retry-After"))
                wait = DEFAULT_RETRY_AFTER if wait is None else min(wait, MAX_RETRY_AFTER)
                raise CallFailed("rate_limited", f"HTTP {status}", status=status, retry_after=wait)
            if not 200 <= status < 300:
                raise CallFailed("http_error", f"HTTP {status}", status=status, retryable=status >= 500)
            body = self._read_body(response, deadline)
            # Fully read: hand the connection back to the pool for reuse.
            response.raw.release_conn()
        finally:
            response.close()
        try:
            return call.parse(loads_strict(body))
        except InvalidResponse as exc:
            raise CallFailed("invalid", str(exc)) from None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            # A parser that trips over a shape it did not foresee: still bad data.
            raise CallFailed("invalid", f"{type(exc).__name__}: {exc}") from None

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise CallFailed("too_large", f"Content-Length {declared} > cap {self.max_bytes}")
        body = bytearray()
        raw = response.raw
        try:
            while True:
                if self.clock() > deadline:
                    raise CallFailed("timeout", "body not complete by the fetch deadline")
                # read1: one socket read at most, so a trickling server cannot
                # hold us past the deadline for longer than one read timeout.
                chunk = raw.read1(CHUNK, decode_content=True)
                if not chunk:
                    break
                body += chunk
                if len(body) > self.max_bytes:
                    raise CallFailed("too_large", f"body exceeds cap {self.max_bytes} bytes")
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise CallFailed("timeout", _short(exc)) from None
        except urllib3.exceptions.DecodeError as exc:
            raise CallFailed("invalid", f"cannot decode body: {_short(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise CallFailed("connection_error", _short(exc)) from None
        return bytes(body)

    def _record(self, provider: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.stats[(provider, outcome)] += 1
        if self.on_call is not None:
            try:
                self.on_call(provider, outcome, seconds)
            except Exception:
                log.exception("on_call failed", extra={"fields": {
                    "event": "on_call_error", "node": self.node_id, "provider": provider}})

    def close(self) -> None:
        self._closed.set()
        self.session.close()


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."
