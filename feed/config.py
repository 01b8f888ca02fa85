"""Settings: one object read from the environment, validated once at start-up.

Names and defaults of the original service are kept (``REDIS_URL``,
``FETCH_INTERVAL_SECONDS`` = 5, ``PORT`` = 8080, ``RAILWAY_REPLICA_ID``); the
rest are ours. Every rule is checked in :meth:`Settings.validate`, which names
the setting and the rule when it refuses a value.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["DEFAULT_PREFIX", "ConfigError", "Keys", "Settings"]

DEFAULT_PREFIX = "websocket"
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
UPSTREAM_MODES = ("sim", "live")
KNOWN_PROVIDERS = ("coingecko", "binance", "feargreed")
NODE_ID_MODES = ("auto", "full", "opaque")
MIN_TOKEN_CHARS = 8
# Settings whose values are secrets: never logged, shown or sent (besides
# the password a REDIS_URL may hold).
SECRET_VARS = ("WS_TOKEN", "OPERATOR_TOKEN", "COINGECKO_API_KEY")


class ConfigError(ValueError):
    """A setting is missing, unparsable or breaks a rule; the message says which."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


@dataclass(frozen=True)
class Keys:
    """Every Redis name the service uses, derived from one prefix.

    With the default prefix the names are the original service's, verbatim
    (``websocket:leader``, ``latest_market_data``), so operators' checks keep
    working; any other prefix namespaces all of them, so two deployments can
    share one Redis.
    """

    prefix: str = DEFAULT_PREFIX

    def name(self, suffix: str) -> str:
        """``<prefix>:<suffix>``: a key or channel of this deployment."""
        return f"{self.prefix}:{suffix}"

    @property
    def leader(self) -> str:
        return self.name("leader")

    @property
    def epoch(self) -> str:
        return self.name("epoch")

    @property
    def data(self) -> str:
        # The original stored the snapshot under a bare name; keep it for the
        # default deployment, namespace it for every other one.
        if self.prefix == DEFAULT_PREFIX:
            return "latest_market_data"
        return self.name("latest_market_data")

    @property
    def updates(self) -> str:
        return self.name("updates")

    @property
    def leader_events(self) -> str:
        return self.name("leader-events")

    @property
    def events(self) -> str:
        return self.name("events")


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


@dataclass(frozen=True)
class Settings:
    """All tunables with their defaults; see ``docs/CONFIGURATION.md``."""

    # --- the original service's settings -------------------------------
    redis_url: str | None = None  # REDIS_URL; None: embedded Redis (gunicorn)
    fetch_interval: float = 5.0  # FETCH_INTERVAL_SECONDS
    port: int = 8080  # PORT
    replica_id: str | None = None  # RAILWAY_REPLICA_ID, part of the node id

    # --- election and cache --------------------------------------------
    key_prefix: str = DEFAULT_PREFIX  # KEY_PREFIX
    lock_ttl: float = 10.0  # LOCK_TTL_SECONDS
    renew_interval: float = 3.0  # RENEW_INTERVAL_SECONDS
    lease_margin: float = 2.0  # LEASE_MARGIN_SECONDS
    cache_ttl: float = 10.0  # CACHE_TTL_SECONDS
    stale_after: float = 15.0  # STALE_AFTER_SECONDS
    events_maxlen: int = 1000  # EVENTS_MAXLEN
    election: bool = True  # ELECTION=off: every node fetches (lab baseline)
    step_down_after: int = 0  # STEP_DOWN_AFTER_FAILURES, 0 = never
    redis_timeout: float = 2.0  # REDIS_TIMEOUT_SECONDS (connect and command)
    node_id: str | None = None  # NODE_ID, normally generated per process

    # --- upstream market APIs ------------------------------------------
    upstream: str = "sim"  # UPSTREAM: sim | live
    providers: tuple[str, ...] = KNOWN_PROVIDERS  # PROVIDERS
    symbols: tuple[str, ...] = ("BTC", "ETH", "SOL", "BNB", "XRP")  # SYMBOLS
    coingecko_url: str | None = None  # COINGECKO_BASE_URL
    binance_url: str | None = None  # BINANCE_BASE_URL
    feargreed_url: str | None = None  # FEAR_GREED_BASE_URL
    sim_url: str | None = None  # SIM_URL: a running simulated exchange
    http_connect_timeout: float = 3.0  # HTTP_CONNECT_TIMEOUT_SECONDS
    http_read_timeout: float = 5.0  # HTTP_READ_TIMEOUT_SECONDS
    http_retries: int = 2  # HTTP_RETRIES
    max_response_bytes: int = 1_000_000  # MAX_RESPONSE_BYTES

    # --- WebSocket clients ---------------------------------------------
    allowed_origins: tuple[str, ...] = ()  # ALLOWED_ORIGINS, comma separated
    ws_token: str | None = None  # WS_TOKEN: clients must present it
    allow_no_origin: bool = True  # WS_ALLOW_NO_ORIGIN: clients that send no Origin (bots)
    ping_interval: float = 25.0  # WS_PING_INTERVAL_SECONDS
    max_message_bytes: int = 4096  # WS_MAX_MESSAGE_BYTES
    send_timeout: float = 10.0  # WS_SEND_TIMEOUT_SECONDS: stuck-client limit
    send_buffer: int = 65536  # WS_SEND_BUFFER_BYTES: kernel send buffer per client, 0 = auto
    max_clients: int = 10000  # WS_MAX_CLIENTS: per worker; more get HTTP 503
    send_threads: int = 2  # WS_SEND_THREADS: OS threads writing one broadcast (1 = none)
    commands_per_second: float = 20.0  # WS_COMMANDS_PER_SECOND (burst x 2)
    ws_node_ids: str = "auto"  # WS_NODE_IDS: auto | full | opaque (node ids in client frames)

    # --- operators and proxies -----------------------------------------
    operator_token: str | None = None  # OPERATOR_TOKEN: bearer token for /status, /metrics
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")  # FORWARDED_ALLOW_IPS

    # -------------------------------------------------------------------
    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    @property
    def opaque_node_ids(self) -> bool:
        """Whether client frames carry opaque labels instead of node ids."""
        if self.ws_node_ids == "auto":
            return bool(self.operator_token)
        return self.ws_node_ids == "opaque"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from ``env`` (default ``os.environ``) and validate them."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, spec in _ENV.items():
            raw = env.get(spec.var)
            if raw is None or raw.strip() == "":
                continue
            values[name] = spec.parse(raw.strip())
        values.update(overrides)
        return cls(**values).validate()

    def validate(self) -> Settings:
        """Refuse impossible combinations, naming the setting and the rule."""
        for name in (
            "fetch_interval",
            "lock_ttl",
            "renew_interval",
            "cache_ttl",
            "stale_after",
            "redis_timeout",
            "http_connect_timeout",
            "http_read_timeout",
            "send_timeout",
            "commands_per_second",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(_VAR[name], f"must be a positive number of seconds, got {value!r}")
        if not math.isfinite(self.lease_margin) or self.lease_margin < 0:
            raise ConfigError("LEASE_MARGIN_SECONDS", f"must be >= 0, got {self.lease_margin!r}")
        if self.ping_interval < 0 or not math.isfinite(self.ping_interval):
            raise ConfigError("WS_PING_INTERVAL_SECONDS", "must be >= 0 (0 turns pings off)")
        # The same rule Kubernetes applies to LeaseDuration and RenewDeadline:
        # a lease must survive at least one lost renewal.
        if not self.lock_ttl > 2 * self.renew_interval:
            raise ConfigError(
                "LOCK_TTL_SECONDS",
                f"must be greater than 2 x RENEW_INTERVAL_SECONDS "
                f"({self.lock_ttl:g} <= 2 x {self.renew_interval:g}); a leader "
                f"must survive one lost renewal",
            )
        if not self.lease_margin < self.lock_ttl - self.renew_interval:
            raise ConfigError(
                "LEASE_MARGIN_SECONDS",
                f"must be less than LOCK_TTL_SECONDS - RENEW_INTERVAL_SECONDS "
                f"({self.lease_margin:g} >= {self.lock_ttl:g} - {self.renew_interval:g}); "
                f"otherwise a leader would give up before its next renewal",
            )
        if self.lock_ttl < 0.1:
            raise ConfigError("LOCK_TTL_SECONDS", "must be at least 0.1 s")
        if not 1 <= self.port <= 65535:
            raise ConfigError("PORT", f"must be a TCP port 1-65535, got {self.port}")
        if self.events_maxlen < 1:
            raise ConfigError("EVENTS_MAXLEN", "must be at least 1")
        if self.step_down_after < 0:
            raise ConfigError("STEP_DOWN_AFTER_FAILURES", "must be >= 0 (0 = never)")
        if self.http_retries < 0 or self.http_retries > 10:
            raise ConfigError("HTTP_RETRIES", "must be between 0 and 10")
        if self.max_response_bytes < 1024:
            raise ConfigError("MAX_RESPONSE_BYTES", "must be at least 1024")
        if self.send_buffer != 0 and not 2048 <= self.send_buffer <= 64 * 1024 * 1024:
            raise ConfigError("WS_SEND_BUFFER_BYTES", "must be 0 (kernel default) or 2048 - 67108864")
        if not 1 <= self.send_threads <= 64:
            raise ConfigError("WS_SEND_THREADS", "must be between 1 and 64")
        if self.max_clients < 1:
            raise ConfigError("WS_MAX_CLIENTS", "must be at least 1")
        if not 16 <= self.max_message_bytes <= 1_048_576:
            raise ConfigError("WS_MAX_MESSAGE_BYTES", "must be between 16 and 1048576")
        if not self.key_prefix or any(c.isspace() for c in self.key_prefix):
            raise ConfigError("KEY_PREFIX", "must be a non-empty name without spaces")
        if self.redis_url is not None:
            check_redis_url(self.redis_url)
        if self.upstream not in UPSTREAM_MODES:
            raise ConfigError(
                "UPSTREAM", f"must be one of {', '.join(UPSTREAM_MODES)}, got {self.upstream!r}"
            )
        if not self.providers:
            raise ConfigError("PROVIDERS", "must name at least one provider")
        for p in self.providers:
            if p not in KNOWN_PROVIDERS:
                raise ConfigError("PROVIDERS", f"unknown provider {p!r}; known: {', '.join(KNOWN_PROVIDERS)}")
        if not self.symbols:
            raise ConfigError("SYMBOLS", "must name at least one symbol")
        for s in self.symbols:
            if not (s.isascii() and s.isalnum() and len(s) <= 12):
                raise ConfigError("SYMBOLS", f"{s!r} is not a ticker symbol (letters and digits, at most 12)")
        for name in ("coingecko_url", "binance_url", "feargreed_url", "sim_url"):
            url = getattr(self, name)
            if url is not None:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise ConfigError(_VAR[name], f"must be an http(s) URL, got {redact_url(url)!r}")
        for name in ("ws_token", "operator_token"):
            token = getattr(self, name)
            if token is not None and (len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token)):
                raise ConfigError(_VAR[name], f"must be at least {MIN_TOKEN_CHARS} characters without "
                                              f"spaces (a shorter token is guessable)")
        if self.ws_node_ids not in NODE_ID_MODES:
            raise ConfigError("WS_NODE_IDS", f"must be one of {', '.join(NODE_ID_MODES)}, "
                                             f"got {self.ws_node_ids!r}")
        for item in self.forwarded_allow_ips:
            if item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ConfigError("FORWARDED_ALLOW_IPS", f"{item!r} is not an IP address or "
                                                             f"network (or *)") from None
        for origin in self.allowed_origins:
            if origin != "*" and not urlsplit(origin).netloc:
                raise ConfigError("ALLOWED_ORIGINS", f"{origin!r} is not an origin like https://example.com")
        return self


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigError` unless ``url`` is a usable Redis URL."""
    check_redis_url_shape(url)
    if urlsplit(url).scheme.endswith("+sentinel"):
        # Options, database and every address of a Sentinel URL, checked now
        # rather than in each worker. (Imported here: it imports this module.)
        from .redis_url import parse_sentinel_url

        parse_sentinel_url(url)


def check_redis_url_shape(url: str) -> None:
    """The checks every Redis URL gets: scheme, host or socket, ports, master name."""
    _, sep, rest = url.partition("://")
    userinfo, at, _ = _PASSWORD_OPTION.sub("", rest).rpartition("@")
    if sep and at and any(c in userinfo for c in "/?#"):
        # A URL parser would take the rest of such a password for a path, a
        # query or a fragment: the connection would fail in a confusing way.
        raise ConfigError("REDIS_URL", f"the user name or password in {redact_url(url)!r} holds a "
                                       f"character that must be percent-encoded: # as %23, / as %2F, "
                                       f"? as %3F")
    try:
        parts = urlsplit(url)
        if parts.scheme.endswith("+sentinel"):
            # A sentinel URL lists several host:port pairs; check each one.
            hostlist = parts.netloc.rpartition("@")[2]
            for item in hostlist.split(","):
                host, _, port = item.strip().rpartition(":")
                if not (host or port) or (host and not port.isdigit()):
                    raise ValueError(f"bad sentinel address {item.strip()!r}")
                if host and not 0 < int(port) < 65536:
                    raise ValueError(f"port out of range in {item.strip()!r}")
        else:
            parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError("REDIS_URL", f"cannot parse {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(
            "REDIS_URL",
            f"scheme must be one of {', '.join(REDIS_SCHEMES)}, got {redact_url(url)!r}",
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError("REDIS_URL", "a unix:// URL needs a socket path")
    elif not parts.hostname:
        raise ConfigError("REDIS_URL", f"needs a host, got {redact_url(url)!r}")
    if parts.scheme.endswith("+sentinel") and not parts.path.strip("/"):
        raise ConfigError("REDIS_URL", "a sentinel URL needs the master's name as its path, e.g. /mymaster")


# A query option whose name says it holds a password (``?sentinel_password=``).
_PASSWORD_OPTION = re.compile(r"([?&][^=&#]*password[^=&#]*=)([^&#]*)", re.IGNORECASE)


def redact_url(url: str | None) -> str | None:
    """The URL with any password replaced by ``***``; safe for logs and pages.

    Both places a password can be are masked: the user-info (``:pw@``) and
    query options whose name contains "password" (``?sentinel_password=``).
    Done on the text, not through a URL parser: a password with an unencoded
    ``#``, ``/``, ``?`` or ``@`` would make a parser see the password as a
    path or a fragment and show it. Everything before the last ``@`` after
    the scheme is treated as user-info; masking too much is the safe error.
    """
    if not url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    rest = _PASSWORD_OPTION.sub(r"\1***", rest)
    if "@" in rest:
        userinfo, _, hostinfo = rest.rpartition("@")
        user = userinfo.split(":", 1)[0]
        rest = f"{user}:***@{hostinfo}"
    return f"{scheme}://{rest}"


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The secrets among the settings in ``env``: tokens, API keys, Redis passwords.

    Log lines mask each of them wherever it appears (:mod:`feed.logs`).
    Values shorter than 4 characters are left out: masking them would
    garble every line, and such a token is refused at start-up anyway.
    """
    found = [env.get(var, "") for var in SECRET_VARS]
    _, sep, rest = env.get("REDIS_URL", "").partition("://")
    if sep:
        found += [unquote(m.group(2)) for m in _PASSWORD_OPTION.finditer(rest)]
        userinfo, at, _ = _PASSWORD_OPTION.sub("", rest).rpartition("@")
        if at and ":" in userinfo:
            found.append(unquote(userinfo.split(":", 1)[1]))
    return [v for v in dict.fromkeys(found) if len(v) >= 4]


# --- environment parsing ------------------------------------------------


@dataclass(frozen=True)
class _Var:
    var: str
    kind: str

    def parse(self, raw: str) -> object:
        try:
            if self.kind == "float":
                return float(raw)
            if self.kind == "int":
                return int(raw)
            if self.kind == "bool":
                low = raw.lower()
                if low in ("1", "true", "on", "yes"):
                    return True
                if low in ("0", "false", "off", "no"):
                    return False
                raise ValueError(raw)
            if self.kind == "csv":
                return _csv(raw)
            if self.kind == "csv-lower":
                return tuple(p.lower() for p in _csv(raw))
            if self.kind == "csv-upper":
                return tuple(p.upper() for p in _csv(raw))
            if self.kind == "origins":
                return _origins(raw)
            if self.kind == "lower":
                return raw.lower()
            return raw
        except ValueError:
            shown = redact_url(raw) if self.var == "REDIS_URL" else raw
            raise ConfigError(self.var, f"cannot parse {shown!r} as {self.kind}") from None


_ENV: dict[str, _Var] = {
    "redis_url": _Var("REDIS_URL", "str"),
    "fetch_interval": _Var("FETCH_INTERVAL_SECONDS", "float"),
    "port": _Var("PORT", "int"),
    "replica_id": _Var("RAILWAY_REPLICA_ID", "str"),
    "key_prefix": _Var("KEY_PREFIX", "str"),
    "lock_ttl": _Var("LOCK_TTL_SECONDS", "float"),
    "renew_interval": _Var("RENEW_INTERVAL_SECONDS", "float"),
    "lease_margin": _Var("LEASE_MARGIN_SECONDS", "float"),
    "cache_ttl": _Var("CACHE_TTL_SECONDS", "float"),
    "stale_after": _Var("STALE_AFTER_SECONDS", "float"),
    "events_maxlen": _Var("EVENTS_MAXLEN", "int"),
    "election": _Var("ELECTION", "bool"),
    "step_down_after": _Var("STEP_DOWN_AFTER_FAILURES", "int"),
    "redis_timeout": _Var("REDIS_TIMEOUT_SECONDS", "float"),
    "node_id": _Var("NODE_ID", "str"),
    "upstream": _Var("UPSTREAM", "lower"),
    "providers": _Var("PROVIDERS", "csv-lower"),
    "symbols": _Var("SYMBOLS", "csv-upper"),
    "coingecko_url": _Var("COINGECKO_BASE_URL", "str"),
    "binance_url": _Var("BINANCE_BASE_URL", "str"),
    "feargreed_url": _Var("FEAR_GREED_BASE_URL", "str"),
    "sim_url": _Var("SIM_URL", "str"),
    "http_connect_timeout": _Var("HTTP_CONNECT_TIMEOUT_SECONDS", "float"),
    "http_read_timeout": _Var("HTTP_READ_TIMEOUT_SECONDS", "float"),
    "http_retries": _Var("HTTP_RETRIES", "int"),
    "max_response_bytes": _Var("MAX_RESPONSE_BYTES", "int"),
    "allowed_origins": _Var("ALLOWED_ORIGINS", "origins"),
    "ws_token": _Var("WS_TOKEN", "str"),
    "allow_no_origin": _Var("WS_ALLOW_NO_ORIGIN", "bool"),
    "ping_interval": _Var("WS_PING_INTERVAL_SECONDS", "float"),
    "max_message_bytes": _Var("WS_MAX_MESSAGE_BYTES", "int"),
    "send_timeout": _Var("WS_SEND_TIMEOUT_SECONDS", "float"),
    "send_buffer": _Var("WS_SEND_BUFFER_BYTES", "int"),
    "max_clients": _Var("WS_MAX_CLIENTS", "int"),
    "send_threads": _Var("WS_SEND_THREADS", "int"),
    "commands_per_second": _Var("WS_COMMANDS_PER_SECOND", "float"),
    "ws_node_ids": _Var("WS_NODE_IDS", "lower"),
    "operator_token": _Var("OPERATOR_TOKEN", "str"),
    "forwarded_allow_ips": _Var("FORWARDED_ALLOW_IPS", "csv"),
}
_VAR = {name: spec.var for name, spec in _ENV.items()}
