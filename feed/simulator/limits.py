"""The real APIs' limits: CoinGecko's keys, budgets and cache, Binance's request weight and bans.

:class:`Limits` says what is enforced; :class:`Gate` holds the counts and
judges each market request before it is answered. Rate limits are off
unless switched on (``Limits.real()``, ``POST /_sim/limits``,
``python -m feed sim --limits real``), so tests are not throttled by
accident; CoinGecko's answer cache is on, as on the real API.

Rate windows are **fixed windows aligned to the clock** (``window_s``, 60 s:
the UTC minute), as Binance's ``X-MBX-USED-WEIGHT-1M`` counts and resets;
CoinGecko's budgets use the same windows. A window's counts start from zero
at its first request. Keyless CoinGecko calls and Binance weight are
counted per client IP (the TCP peer address: everyone behind one address
shares it), Demo and Pro calls per key.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Protocol

from feed.simulator.routes import (
    BINANCE_DEFAULT_WEIGHT_LIMIT,
    CACHEABLE,
    COINGECKO_DEMO_ON_PRO,
    COINGECKO_KEY_INVALID,
    COINGECKO_KEY_MISSING,
    COINGECKO_KEY_PARAMS,
    COINGECKO_MONTHLY,
    COINGECKO_PRO_ON_PUBLIC,
    COINGECKO_RATE_LIMIT,
    FINNHUB_KEY_INVALID,
    FINNHUB_RATE_LIMIT,
    FINNHUB_SIGN_UP,
    PREFIXES,
    Answer,
    binance_weight,
    cmc_error,
    coingecko_error,
    error_answer,
)

__all__ = ["FIELDS", "MAX_BAN_S", "PRESETS", "Admission", "Gate", "Headers", "LimitError", "Limits",
           "parse_keys", "parse_limits"]

MAX_BAN_S = 3 * 86_400  # Binance's bans grow up to 3 days
MAX_KEYS = 1000
MAX_KEY_LENGTH = 200
COINGECKO_KEY_HEADERS = ("x-cg-pro-api-key", "x-cg-demo-api-key")
FINNHUB_KEY_HEADER = "X-Finnhub-Token"
CMC_KEY_HEADER = "X-CMC_PRO_API_KEY"


class Headers(Protocol):
    """A request's headers, looked up case-insensitively (``http.client.HTTPMessage``)."""

    def get(self, name: str, default: None = None) -> str | None: ...


class LimitError(ValueError):
    """A limits or keys request that cannot be applied; the message says why.

    ``field`` is the :class:`Limits` field at fault, when one is.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Limits:
    """What the simulated exchange enforces; ``None`` switches a rate limit off."""

    coingecko_keyless_per_minute: int | None = None  # per client IP, on /coingecko
    coingecko_demo_per_minute: int | None = None  # per Demo key
    coingecko_pro_per_minute: int | None = None  # per Pro key, on /coingecko-pro
    coingecko_demo_monthly: int | None = None  # calls per Demo key per calendar month (UTC)
    coingecko_cache_s: float = 60.0  # /coingecko answers cached this long; 0: no cache
    coingecko_pro_cache_s: float = 20.0  # the same for /coingecko-pro (paid plans: 20 s)
    coingecko_global_cache_s: float = 600.0  # /global on both hosts: 10 minutes on every plan
    coingecko_retry_after: int | None = None  # Retry-After on CoinGecko's 429s; None: no header
    binance_weight_per_minute: int | None = None  # request weight per client IP
    binance_ban_s: float = 120.0  # the first 418 ban; each further ban doubles, up to 3 days
    finnhub_per_minute: int | None = None  # per Finnhub key
    cmc_per_minute: int | None = None  # per CoinMarketCap key
    window_s: float = 60.0  # the rate window ("per minute"); shorter only for tests

    @classmethod
    def real(cls, **overrides: Any) -> Limits:
        """The documented limits of the real APIs, with ``overrides``."""
        return replace(cls(**PRESETS["real"]), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: ``preset`` values: the fields they set (the rest keep the defaults).
PRESETS: dict[str, dict[str, Any]] = {
    "off": {},
    # CoinGecko: keyless 5-15 calls/min depending on load (the low end here), Demo 100/min
    # (docs.coingecko.com/docs/errors-and-rate-limits; older pages said "approximately 30")
    # and 10,000 credits/month, a credit per successful call
    # (docs.coingecko.com/demo/reference/authentication), Pro plans 500/min and up.
    # Binance: 6000 weight/min.
    "real": {"coingecko_keyless_per_minute": 5, "coingecko_demo_per_minute": 100,
             "coingecko_pro_per_minute": 500, "coingecko_demo_monthly": 10_000,
             "binance_weight_per_minute": 6000, "finnhub_per_minute": 60,
             "cmc_per_minute": 30},
}

#: field: (integers only, low, high, None allowed)
FIELDS: dict[str, tuple[bool, float, float, bool]] = {
    "coingecko_keyless_per_minute": (True, 1, 1_000_000, True),
    "finnhub_per_minute": (True, 1, 1_000_000, True),
    "cmc_per_minute": (True, 1, 1_000_000, True),
    "coingecko_demo_per_minute": (True, 1, 1_000_000, True),
    "coingecko_pro_per_minute": (True, 1, 1_000_000, True),
    "coingecko_demo_monthly": (True, 1, 1_000_000_000, True),
    "coingecko_cache_s": (False, 0, 86_400, False),
    "coingecko_pro_cache_s": (False, 0, 86_400, False),
    "coingecko_global_cache_s": (False, 0, 86_400, False),
    "coingecko_retry_after": (True, 0, 86_400, True),
    "binance_weight_per_minute": (True, 1, 1_000_000_000, True),
    "binance_ban_s": (False, 0.01, MAX_BAN_S, False),
    "window_s": (False, 0.05, 3_600, False),
}
assert set(FIELDS) == {f.name for f in fields(Limits)}


def parse_limits(body: Any, current: Limits) -> Limits:
    """New limits from a decoded JSON body; :class:`LimitError` if it is bad.

    Fields not given keep their ``current`` values, unless ``preset`` is
    given: then they start from that preset.
    """
    allowed = ("preset", *FIELDS)
    if not isinstance(body, dict):
        raise LimitError('the body must be a JSON object, e.g. {"binance_weight_per_minute": 6000}')
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise LimitError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if not body:
        raise LimitError(f"no field given; set at least one of {', '.join(allowed)}")
    values: dict[str, Any] = {}
    for name, (whole, low, high, nullable) in FIELDS.items():
        if name not in body:
            continue
        value = body[name]
        if value is None and nullable:
            values[name] = None
            continue
        kinds = (int,) if whole else (int, float)
        if (isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value)
                or not low <= value <= high):
            kind = "an integer" if whole else "a number"
            off = " or null (off)" if nullable else ""
            got = "null" if value is None else repr(value)
            raise LimitError(f"{name} must be {kind} from {_plain(low)} to {_plain(high)}{off}, "
                             f"got {got}", name)
        values[name] = value
    base = current
    if "preset" in body:
        preset = body["preset"]
        if preset not in PRESETS:
            raise LimitError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        base = Limits(**PRESETS[preset])
    return replace(base, **values)


def parse_keys(body: Any) -> dict[str, tuple[str, ...]]:
    """``{"demo": keys, "pro": keys}`` (either or both) from a JSON body; :class:`LimitError` if bad."""
    if not isinstance(body, dict) or not body:
        raise LimitError('the body must be a JSON object with "demo" and/or "pro", '
                         'e.g. {"demo": ["CG-demo-1"], "pro": []}')
    unknown = sorted(set(body) - {"demo", "pro"})
    if unknown:
        raise LimitError(f"unknown field(s) {', '.join(unknown)}; allowed: demo, pro")
    out: dict[str, tuple[str, ...]] = {}
    for kind, keys in body.items():
        if not isinstance(keys, list) or len(keys) > MAX_KEYS:
            raise LimitError(f"{kind} must be a list of at most {MAX_KEYS} keys, got {type(keys).__name__}")
        for key in keys:
            if (not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH
                    or not key.isprintable() or any(c.isspace() for c in key)):
                raise LimitError(f"each {kind} key must be a string of 1 to {MAX_KEY_LENGTH} printable "
                                 f"characters without spaces, got {key!r}")
        out[kind] = tuple(dict.fromkeys(keys))
    both = set(out.get("demo", ())) & set(out.get("pro", ()))
    if both:
        raise LimitError(f"a key cannot be both demo and pro: {', '.join(sorted(both))}")
    return out


@dataclass
class Admission:
    """The gate's verdict on one request."""

    reject: Answer | None = None  # the limit's answer, or None: serve it
    applied: str | None = None  # which limit answered (counted in stats), e.g. "binance_429"
    headers: dict[str, str] | None = None  # headers for whatever is sent (X-MBX-USED-WEIGHT-1M)
    cache_key: tuple[Any, ...] | None = None  # where the answer is cached, if it may be
    cache_s: float = 0.0


class Gate:
    """Keys, budgets, bans and the CoinGecko cache of one simulated exchange; thread-safe."""

    def __init__(self, limits: Limits | None = None, demo_keys: Iterable[str] = (),
                 pro_keys: Iterable[str] = (), clock: Callable[[], float] = time.time, *,
                 key_digests: Mapping[str, Iterable[str]] | None = None) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._limits = limits or Limits()
        self._demo: tuple[str, ...] = ()
        self._pro: tuple[str, ...] = ()
        # The service's own key, known by its SHA-256 only: accepted, never
        # stored or shown (the embedded exchange must not hold a real key).
        digests = key_digests or {}
        self._digests = {kind: frozenset(digests.get(kind, ())) for kind in ("demo", "pro")}
        self.set_keys(parse_keys({"demo": list(demo_keys), "pro": list(pro_keys)}))
        self.reset()

    # --- configuration --------------------------------------------------
    @property
    def limits(self) -> Limits:
        return self._limits

    def set_limits(self, limits: Limits) -> None:
        """New limits; counts so far stay (``reset`` clears them)."""
        with self._lock:
            old, self._limits = self._limits, limits
            # Entries keep the expiry they were filled with: a new cache length starts afresh.
            lengths = ("coingecko_cache_s", "coingecko_pro_cache_s", "coingecko_global_cache_s")
            if any(getattr(old, f) != getattr(limits, f) for f in lengths):
                self._cache.clear()

    def keys(self) -> dict[str, list[str]]:
        with self._lock:
            return {"demo": list(self._demo), "pro": list(self._pro)}

    def set_keys(self, keys: Mapping[str, tuple[str, ...]]) -> None:
        """Replace the Demo and/or Pro keys given (as :func:`parse_keys` returns them)."""
        with self._lock:
            demo = keys.get("demo", self._demo)
            pro = keys.get("pro", self._pro)
            both = set(demo) & set(pro)
            if both:
                raise LimitError(f"a key cannot be both demo and pro: {', '.join(sorted(both))}")
            self._demo, self._pro = tuple(demo), tuple(pro)

    def _known(self, kind: str, key: str) -> bool:
        plain = self._pro if kind == "pro" else self._demo
        return key in plain or hashlib.sha256(key.encode()).hexdigest() in self._digests[kind]

    def reset(self) -> None:
        """Forget every count, ban, monthly credit used and cached answer."""
        with self._lock:
            # (bucket, who) -> (window number, count); bucket: binance | cg_keyless | cg_demo | cg_pro
            self._windows: dict[tuple[str, str], tuple[int, int]] = {}
            self._warned: dict[str, int] = {}  # IP -> the window in which Binance sent it a 429
            self._banned_until: dict[str, float] = {}
            self._bans: Counter[str] = Counter()  # IP -> bans so far (each doubles the next)
            self._monthly: dict[tuple[str, str], int] = {}  # (demo key, "YYYY-MM") -> calls
            self._cache: dict[tuple[Any, ...], tuple[float, Answer]] = {}

    def snapshot(self) -> dict[str, Any]:
        """The limits and what is counted against them now (``GET /_sim/limits``)."""
        with self._lock:
            now = self.clock()
            window = self._window(now)
            counts: dict[str, dict[str, int]] = {}
            for (bucket, who), (number, used) in self._windows.items():
                if number == window:
                    counts.setdefault(bucket, {})[who] = used
            monthly: dict[str, dict[str, int]] = {}
            for (key, month), n in self._monthly.items():
                monthly.setdefault(key, {})[month] = n
            return {
                "limits": self._limits.to_dict(),
                "keys": {"demo": len(self._demo), "pro": len(self._pro)},
                "window": {"started_at": window * self._limits.window_s,
                           "ends_in_s": round(self._window_end(now) - now, 3), "counts": counts},
                "binance_bans": {ip: {"until_ms": math.ceil(until * 1000), "bans": self._bans[ip]}
                                 for ip, until in self._banned_until.items() if until > now},
                "coingecko_demo_monthly": monthly,
                "cache_entries": sum(1 for expires, _ in self._cache.values() if expires > now),
            }

    # --- judging requests -------------------------------------------------
    def admit(self, prefix: str, path: str, query: dict[str, list[str]], headers: Headers,
              ip: str) -> Admission:
        """Whether a market request to ``/{prefix}{path}`` may be served, and how."""
        provider = PREFIXES.get(prefix)
        with self._lock:
            now = self.clock()
            if provider == "coingecko":
                return self._coingecko(prefix, path, query, headers, ip, now)
            if provider == "binance":
                return self._binance(path, query, ip, now)
            if provider == "finnhub":
                return self._finnhub(query, headers, now)
            if provider == "coinmarketcap":
                return self._cmc(headers, now)
            return Admission()

    def cached(self, admission: Admission, produce: Callable[[], Answer]) -> tuple[Answer, bool]:
        """``(answer, from_cache)``: a cached 200 while it is fresh, else ``produce()`` (then cached)."""
        key = admission.cache_key
        if key is None or admission.cache_s <= 0:
            return produce(), False
        with self._lock:
            now = self.clock()
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return _copy(hit[1]), True
        answer = produce()
        if answer.status == 200:
            with self._lock:
                # An answer is fresh from the first call that fills its entry; the
                # entries of other queries are dropped once stale, to stay bounded.
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                self._cache[key] = (now + admission.cache_s, _copy(answer))
        return answer, False

    def injected(self, prefix: str, status: int, retry_after: int | None) -> Answer:
        """The answer to an injected fixed status, with Binance's own Retry-After defaults."""
        with self._lock:
            now = self.clock()
            limits = self._limits
            if retry_after is None and PREFIXES.get(prefix) == "binance":
                if status == 429:
                    retry_after = self._seconds_left(now)
                elif status == 418:
                    retry_after = math.ceil(limits.binance_ban_s)
        return error_answer(prefix, status, retry_after=retry_after, now=now,
                            weight_limit=self._weight_limit(limits))

    # --- CoinGecko ---------------------------------------------------------
    def _coingecko(self, prefix: str, path: str, query: dict[str, list[str]], headers: Headers,
                   ip: str, now: float) -> Admission:
        limits = self._limits
        pro_host = prefix == "coingecko-pro"
        key = _coingecko_key(headers, query)
        if key is None:
            if pro_host:
                return Admission(coingecko_error(401, 10002, COINGECKO_KEY_MISSING), "coingecko_401_10002")
            bucket, who, limit = "cg_keyless", ip, limits.coingecko_keyless_per_minute
        elif self._known("pro", key):
            if not pro_host:
                return Admission(coingecko_error(400, 10010, COINGECKO_PRO_ON_PUBLIC, top_level=True),
                                 "coingecko_400_10010")
            bucket, who, limit = "cg_pro", key, limits.coingecko_pro_per_minute
        elif self._known("demo", key):
            if pro_host:
                return Admission(coingecko_error(400, 10011, COINGECKO_DEMO_ON_PRO, top_level=True),
                                 "coingecko_400_10011")
            bucket, who, limit = "cg_demo", key, limits.coingecko_demo_per_minute
        else:
            return Admission(coingecko_error(401, 10002, COINGECKO_KEY_INVALID), "coingecko_401_10002")
        month = time.strftime("%Y-%m", time.gmtime(now))
        monthly = limits.coingecko_demo_monthly
        if bucket == "cg_demo" and monthly is not None and self._monthly.get((key, month), 0) >= monthly:
            return Admission(coingecko_error(429, 429, COINGECKO_MONTHLY, limits.coingecko_retry_after),
                             "coingecko_429_monthly")
        used = self._count(bucket, who, now, 0)
        if limit is not None and used + 1 > limit:
            # A refused call does not count: the budget is the calls served. A keyed 429
            # says when its window ends, as CoinGecko's do (no Retry-After unless set).
            answer = coingecko_error(429, 429, COINGECKO_RATE_LIMIT, limits.coingecko_retry_after)
            if bucket != "cg_keyless":
                end = time.gmtime(math.ceil(self._window_end(now)))
                reset = time.strftime("%Y-%m-%d %H:%M:%S +0000", end)
                answer.headers.update({"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": "0",
                                       "x-ratelimit-reset": reset})
            return Admission(answer, f"coingecko_429_{bucket.removeprefix('cg_')}")
        self._count(bucket, who, now, 1)
        if bucket == "cg_demo":
            self._monthly[(key, month)] = self._monthly.get((key, month), 0) + 1
        if path not in CACHEABLE:
            return Admission()
        # The CDN caches per host and query; the key parameters are not part of it.
        params = tuple(sorted((k, tuple(v)) for k, v in query.items() if k not in COINGECKO_KEY_PARAMS))
        cache_s = limits.coingecko_pro_cache_s if pro_host else limits.coingecko_cache_s
        if path == "/api/v3/global" and cache_s:  # the host's cache is on: /global keeps 10 minutes
            cache_s = limits.coingecko_global_cache_s
        return Admission(cache_key=(prefix, path, params), cache_s=cache_s)

    # --- Binance -----------------------------------------------------------
    def _binance(self, path: str, query: dict[str, list[str]], ip: str, now: float) -> Admission:
        limits = self._limits
        until = self._banned_until.get(ip, 0.0)
        if until > now:
            used = self._count("binance", ip, now, 0)
            return Admission(_banned(until, now), "binance_418",
                             {"X-MBX-USED-WEIGHT-1M": str(used)})
        # Binance counts the weight of refused requests too: the header can pass the limit.
        used = self._count("binance", ip, now, binance_weight(path, query))
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        limit = limits.binance_weight_per_minute
        if limit is None or used <= limit:
            return Admission(headers=headers)
        window = self._window(now)
        if self._warned.get(ip) != window:
            self._warned[ip] = window
            answer = error_answer("binance", 429, retry_after=self._seconds_left(now), weight_limit=limit)
            return Admission(answer, "binance_429", headers)
        # Called again after its 429 in the same window: banned, longer each time.
        length = min(limits.binance_ban_s * 2 ** min(self._bans[ip], 40), MAX_BAN_S)
        self._bans[ip] += 1
        self._banned_until[ip] = now + length
        return Admission(_banned(now + length, now), "binance_418", headers)

    # --- Finnhub -------------------------------------------------------------
    def _finnhub(self, query: dict[str, list[str]], headers: Headers, now: float) -> Admission:
        # Any token of 8+ letters and digits is a key here, except one that says it is invalid.
        token = (headers.get(FINNHUB_KEY_HEADER) or (query.get("token") or [""])[-1] or "").strip()
        if not token:
            return Admission(Answer(429, {"error": FINNHUB_SIGN_UP}), "finnhub_429_no_key")
        if len(token) < 8 or not token.isalnum() or "invalid" in token.lower():
            return Admission(Answer(401, {"error": FINNHUB_KEY_INVALID}), "finnhub_401")
        limit = self._limits.finnhub_per_minute
        if limit is not None and self._count("finnhub", token, now, 0) + 1 > limit:
            return Admission(Answer(429, {"error": FINNHUB_RATE_LIMIT}), "finnhub_429")
        self._count("finnhub", token, now, 1)
        return Admission()

    # --- CoinMarketCap ----------------------------------------------------------
    def _cmc(self, headers: Headers, now: float) -> Admission:
        # Any key of 8+ characters is one here, except one that says it is invalid.
        key = (headers.get(CMC_KEY_HEADER) or "").strip()
        if not key:
            return Admission(cmc_error(1002), "cmc_401_1002")
        if len(key) < 8 or "invalid" in key.lower():
            return Admission(cmc_error(1001), "cmc_401_1001")
        limit = self._limits.cmc_per_minute
        if limit is not None and self._count("cmc", key, now, 0) + 1 > limit:
            return Admission(cmc_error(1008), "cmc_429_1008")
        self._count("cmc", key, now, 1)
        return Admission()

    # --- windows -------------------------------------------------------------
    def _window(self, now: float) -> int:
        return math.floor(now / self._limits.window_s)

    def _window_end(self, now: float) -> float:
        return (self._window(now) + 1) * self._limits.window_s

    def _seconds_left(self, now: float) -> int:
        return max(1, math.ceil(self._window_end(now) - now))

    def _count(self, bucket: str, who: str, now: float, add: int) -> int:
        """``who``'s count in this window after adding ``add``."""
        window = self._window(now)
        number, used = self._windows.get((bucket, who), (window, 0))
        if number != window:
            used = 0
        used += add
        if len(self._windows) > 100_000:  # bounded: old windows go first
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        self._windows[(bucket, who)] = (window, used)
        return used

    @staticmethod
    def _weight_limit(limits: Limits) -> int:
        return limits.binance_weight_per_minute or BINANCE_DEFAULT_WEIGHT_LIMIT

    def weight_limit(self) -> int:
        """The weight limit exchangeInfo states: the enforced one, else Binance's 6000."""
        return self._weight_limit(self._limits)


def _banned(until: float, now: float) -> Answer:
    return error_answer("binance", 418, retry_after=max(1, math.ceil(until - now)), banned_until=until)


def _plain(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _coingecko_key(headers: Headers, query: dict[str, list[str]]) -> str | None:
    """The key a request carries: a header first, else a query parameter (Pro before Demo)."""
    for name in COINGECKO_KEY_HEADERS:
        value = headers.get(name)
        if value:
            return value.strip()
    for name in COINGECKO_KEY_PARAMS:
        values = query.get(name)
        if values and values[-1]:
            return values[-1].strip()
    return None


def _copy(answer: Answer) -> Answer:
    # Faults (malformed bodies) rewrite a payload in place; the cached one must stay intact.
    return replace(answer, payload=_deep(answer.payload), headers=dict(answer.headers))


def _deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep(v) for v in value]
    return value
