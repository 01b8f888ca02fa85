"""HTTP to the market APIs: one pooled session, bounded calls, every attempt counted.

Each call has connect and read timeouts, a size cap on the body (read in
pieces, so a missing or lying Content-Length cannot get past it), a bounded
number of retries with jittered backoff for the failures that retrying can
fix (connection errors, timeouts, 5xx), and a per-fetch deadline that clamps
all of these. Answers that say "stop calling" (429, 418, 451, 403, 401) are
never retried here: they are reported as what they are, with the provider's
own error code and message and any Retry-After, and the budget
(:mod:`feed.providers.budget`) decides how long the provider rests, for the
whole cluster.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from feed import __version__
from feed.logs import log_event
from feed.observer import Observer, Quiet, notify
from feed.providers.names import NODE_HEADER
from feed.providers.validate import InvalidResponse, loads_strict

__all__ = [
    "OUTCOMES",
    "USER_AGENT",
    "Call",
    "CallFailed",
    "HttpClient",
    "Reply",
    "make_session",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

USER_AGENT = f"marketfeed/{__version__}"
OUTCOMES = (
    "ok", "http_error", "timeout", "connection_error", "invalid", "too_large",
    "rate_limited", "banned", "restricted", "forbidden", "unauthorized", "skipped",
)
RETRYABLE = frozenset({"timeout", "connection_error"})
# Statuses that mean "stop calling", not "try again": each its own outcome.
REFUSALS = {429: "rate_limited", 418: "banned", 451: "restricted", 403: "forbidden", 401: "unauthorized"}
BACKOFF_BASE = 0.1
BACKOFF_CAP = 1.0
MIN_ATTEMPT = 0.05  # no attempt is started with less time than this left
CHUNK = 64 * 1024
ERROR_BODY_BYTES = 4096  # of an error answer, enough for the provider's message

Explain = Callable[[int, bytes, str], "tuple[int | None, str]"]
# A refusal's own headers -> seconds to wait, for providers that say so without Retry-After.
WaitHint = Callable[[Mapping[str, str], float], "float | None"]


def _no_explanation(status: int, body: bytes, content_type: str) -> tuple[int | None, str]:
    return None, ""


def _no_hint(headers: Mapping[str, str], now: float) -> float | None:
    return None


@dataclass(frozen=True)
class Call:
    """One upstream request and how to turn its JSON into normalised data.

    ``part`` is what it supplies to the snapshot: ``prices``, ``market`` or
    ``sentiment`` (or ``symbols`` for a lookup). ``parse`` raises
    :class:`InvalidResponse` on bad data; ``explain(status, body,
    content_type)`` reads the provider's error answer into ``(code,
    message)``. ``headers`` are this call's own (an API key).
    """

    provider: str
    part: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    parse: Callable[[Any], Any] = lambda payload: payload
    explain: Explain = _no_explanation
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    wait_hint: WaitHint = _no_hint  # read only when a refusal has no Retry-After

    @property
    def endpoint(self) -> str:
        """``provider.part``: the unit of cadence and of the snapshot's sections."""
        return f"{self.provider}.{self.part}"


@dataclass(frozen=True)
class Reply:
    """A good answer: the parsed value, and what the headers said about the budget."""

    value: Any
    used_weight: int | None = None  # Binance: X-MBX-USED-WEIGHT-1M


class CallFailed(Exception):
    """A call gave no usable data; ``outcome`` is one of :data:`OUTCOMES`.

    ``code`` and ``message`` are the provider's own (CoinGecko's error_code,
    Binance's code/msg), for a log line and ``sources.<provider>.detail``.
    """

    def __init__(self, outcome: str, detail: str, *, status: int | None = None,
                 retryable: bool | None = None, retry_after: float | None = None,
                 code: int | None = None, used_weight: int | None = None) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome = outcome
        self.detail = detail
        self.status = status
        self.code = code
        self.retryable = outcome in RETRYABLE if retryable is None else retryable
        self.retry_after = retry_after
        self.used_weight = used_weight


def make_session(node_id: str | None, pool_size: int = 8) -> requests.Session:
    """A session that reuses connections and names the service.

    ``node_id`` is sent as ``X-Marketfeed-Node`` (the simulated exchange
    counts calls by it); pass None for a third party, who has no business
    knowing our hosts and pids.
    """
    session = requests.Session()
    # Retries are ours (each attempt must be counted and bounded by the
    # fetch deadline), so urllib3's own are off.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    if node_id:
        session.headers[NODE_HEADER] = node_id
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


def _weight(headers: Any) -> int | None:
    raw = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("X-MBX-USED-WEIGHT")
    return int(raw) if raw and raw.strip().isdigit() else None


class HttpClient:
    """Runs :class:`Call` objects over one session; see the module docstring.

    ``observer.upstream_call(provider, outcome, seconds)`` is told about every
    attempt (and every skipped call, through :meth:`record`); ``stats`` counts the same
    by ``(provider, outcome)``.
    """

    def __init__(
        self,
        node_id: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        retries: int = 2,
        max_bytes: int = 1_000_000,
        observer: Observer | None = None,
        session: requests.Session | None = None,
        send_node_header: bool = True,
        node_header_base: str | None = None,
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
        self.observer: Observer = observer or Quiet()
        # Our node id names a host and a pid: it goes to the simulated exchange
        # only. With ``node_header_base`` set, only to URLs under it (a
        # per-provider override may point at a real host while UPSTREAM=sim).
        self.node_header_base = node_header_base.rstrip("/") + "/" if node_header_base else None
        self.session = session or make_session(
            node_id if send_node_header and self.node_header_base is None else None)
        self.clock = clock
        self.stats: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._closed = event_class()

    # --- calls ----------------------------------------------------------
    def run(self, call: Call, deadline: float, retries: int | None = None) -> Reply:
        """The parsed answer to ``call``, or :class:`CallFailed` with the last outcome.

        ``retries`` overrides the client's own for this call (0: a single probe).
        """
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            started = self.clock()
            try:
                reply = self._attempt(call, deadline)
            except CallFailed as exc:
                seconds = self.clock() - started
                self.record(call.provider, exc.outcome, seconds)
                log_event(log, "upstream_call_failed", logging.WARNING, node=self.node_id,
                          provider=call.provider, part=call.part, outcome=exc.outcome,
                          status=exc.status, code=exc.code, detail=exc.detail, attempt=attempt + 1,
                          seconds=round(seconds, 3), retry_after_s=exc.retry_after)
                if not exc.retryable or attempt >= retries:
                    raise
                pause = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.0)
                if deadline - self.clock() < pause + MIN_ATTEMPT:
                    raise  # no time left in this fetch for another try
                if self._closed.wait(pause):
                    raise
                attempt += 1
                continue
            self.record(call.provider, "ok", self.clock() - started)
            return reply

    def _attempt(self, call: Call, deadline: float) -> Reply:
        left = max(MIN_ATTEMPT, deadline - self.clock())
        timeout = (min(self.connect_timeout, left), min(self.read_timeout, left))
        try:
            headers = dict(call.headers)
            if self.node_header_base is not None and call.url.startswith(self.node_header_base):
                headers[NODE_HEADER] = self.node_id
            response = self.session.get(call.url, params=call.params, headers=headers or None,
                                        timeout=timeout, stream=True, allow_redirects=False)
        except requests.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            raise CallFailed("timeout", _short(exc)) from None
        except requests.RequestException as exc:
            raise CallFailed("connection_error", _short(exc)) from None
        try:
            status = response.status_code
            weight = _weight(response.headers)
            if not 200 <= status < 300:
                raise self._refusal(call, response, weight)
            body = self._read_body(response, deadline, self.max_bytes)
            # Fully read: hand the connection back to the pool for reuse.
            response.raw.release_conn()
        finally:
            response.close()
        try:
            return Reply(call.parse(loads_strict(body)), weight)
        except InvalidResponse as exc:
            raise CallFailed("invalid", str(exc), used_weight=weight) from None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            # A parser that trips over a shape it did not foresee: still bad data.
            raise CallFailed("invalid", f"{type(exc).__name__}: {exc}", used_weight=weight) from None

    def _refusal(self, call: Call, response: requests.Response, weight: int | None) -> CallFailed:
        """The CallFailed for a non-2xx answer, with the provider's own explanation."""
        status = response.status_code
        try:
            body = self._read_body(response, self.clock() + self.read_timeout, ERROR_BODY_BYTES,
                                   truncate=True)
        except CallFailed:
            body = b""
        try:
            code, message = call.explain(status, body, response.headers.get("Content-Type", ""))
        except Exception:  # noqa: BLE001 - an odd error body must not hide the status
            code, message = None, ""
        detail = f"HTTP {status}" + (f" {code}" if code is not None else "") \
            + (f": {message}" if message else "")
        outcome = REFUSALS.get(status, "http_error")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is None and outcome != "http_error":
            try:
                retry_after = call.wait_hint(response.headers, time.time())
            except Exception:  # noqa: BLE001 - an odd header must not hide the refusal
                retry_after = None
        return CallFailed(outcome, detail[:300], status=status, code=code, used_weight=weight,
                          retryable=outcome == "http_error" and status >= 500, retry_after=retry_after)

    def _read_body(self, response: requests.Response, deadline: float, cap: int,
                   truncate: bool = False) -> bytes:
        """The body, at most ``cap`` bytes: past it, cut (``truncate``) or refused (too_large)."""
        declared = response.headers.get("Content-Length", "")
        if not truncate and declared.isdigit() and int(declared) > cap:
            raise CallFailed("too_large", f"Content-Length {declared} > cap {cap}")
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
                if len(body) > cap:
                    if truncate:
                        return bytes(body[:cap])  # an error answer: its start is enough
                    raise CallFailed("too_large", f"body exceeds cap {cap} bytes")
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise CallFailed("timeout", _short(exc)) from None
        except urllib3.exceptions.DecodeError as exc:
            raise CallFailed("invalid", f"cannot decode body: {_short(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise CallFailed("connection_error", _short(exc)) from None
        return bytes(body)

    def record(self, provider: str, outcome: str, seconds: float) -> None:
        """Count one attempt (or one skipped call) and tell the observer."""
        with self._lock:
            self.stats[(provider, outcome)] += 1
        notify(lambda: self.observer.upstream_call(provider, outcome, seconds), "upstream_call")

    def close(self) -> None:
        self._closed.set()
        self.session.close()


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."
