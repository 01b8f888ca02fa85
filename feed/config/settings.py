"""Settings: every tunable declared once, read from the environment, validated once.

Each field below is one setting: its environment variable, default, parser,
rule and one-line doc (:func:`feed.config.declare.setting`). Names and
defaults of the original service are kept (``REDIS_URL``,
``FETCH_INTERVAL_SECONDS`` = 5, ``PORT`` = 8081, ``HOST``, ``RAILWAY_REPLICA_ID``
and ``RAILWAY_INSTANCE_ID``, and the upstream keys it read).
:meth:`Settings.validate` applies every field's rule and the rules that
relate fields to each other, naming the setting and the rule when it refuses
a value; docs/CONFIGURATION.md's tables are generated from the same fields
(``python -m feed config --write``) and a test fails when they disagree.

Standard library only: the Gunicorn master validates before it forks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from feed.config.declare import (
    Parser,
    Setting,
    at_least,
    between,
    flag,
    http_url,
    lower,
    name_without_spaces,
    networks,
    non_negative,
    one_of,
    origins,
    positive,
    setting,
    tcp_port,
    token,
    words,
    words_as,
)
from feed.errors import ConfigError
from feed.keys import DEFAULT_PREFIX, Keys
from feed.providers.names import PROVIDER_NAMES
from feed.redisconn.url import check_redis_url, passwords_in, redact_url

__all__ = ["SECTIONS", "Settings", "env_setting", "resolve_upstream", "secret_values"]

#: Sections of docs/CONFIGURATION.md, in order: key -> title.
SECTIONS = {
    "original": "The original service's settings (same names, same defaults)",
    "election": "Election, cache and timing",
    "upstream": "Upstream market APIs ([PROVIDERS.md](PROVIDERS.md))",
    "clients": "WebSocket clients ([PROTOCOL.md](PROTOCOL.md))",
    "operators": "Operators and proxies",
    "gunicorn": "Gunicorn (gunicorn.conf.py)",
}
UPSTREAM_MODES = ("auto", "sim", "live")
NODE_ID_MODES = ("auto", "full", "opaque")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _redis_url(value: str) -> str | None:
    try:
        check_redis_url(value)
    except ConfigError as exc:
        return exc.message
    return None


def _providers(value: tuple[str, ...]) -> str | None:
    if not value:
        return "must name at least one provider"
    unknown = [p for p in value if p not in PROVIDER_NAMES]
    if unknown:
        return f"unknown provider {unknown[0]!r}; known: {', '.join(PROVIDER_NAMES)}"
    return None


def _symbols(value: tuple[str, ...]) -> str | None:
    if not value:
        return "must name at least one symbol"
    for s in value:
        if not (s.isascii() and s.isalnum() and len(s) <= 12):
            return f"{s!r} is not a ticker symbol (letters and digits, at most 12)"
    return None


def _api_key(value: str) -> str | None:
    if not value or any(c.isspace() for c in value) or len(value) > 200:
        return "must be the key as the provider gives it: one word, no spaces"
    return None


# SYMBOL=id pairs; the symbol upper-cased as SYMBOLS are, the id as given.
_ID_PAIRS = Parser("a comma-separated list of SYMBOL=id", lambda raw: tuple(
    f"{p.partition('=')[0].strip().upper()}={p.partition('=')[2].strip()}" if "=" in p else p
    for p in words(raw)))


def _id_pairs(value: tuple[str, ...]) -> str | None:
    for pair in value:
        symbol, eq, cid = pair.partition("=")
        if not eq or _symbols((symbol,)) or not cid or not all(c.isalnum() or c in "-_." for c in cid):
            return f"{pair!r} is not SYMBOL=coingecko-id (e.g. SHIB=shiba-inu)"
    return None


def _origins(value: tuple[str, ...]) -> str | None:
    from urllib.parse import urlsplit

    for origin in value:
        if origin != "*" and not urlsplit(origin).netloc:
            return f"{origin!r} is not an origin like https://example.com"
    return None


def _ping(value: float) -> str | None:
    if non_negative(value):
        return "must be >= 0 (0 turns pings off)"
    return None


@dataclass(frozen=True)
class Settings:
    """All tunables with their defaults; see docs/CONFIGURATION.md."""

    # --- the original service's -----------------------------------------------
    redis_url: str | None = setting(
        "REDIS_URL", None, "`redis://[user:pass@]host:port/db`, `rediss://...` (TLS), "
        "`unix:///path/redis.sock`, or `redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db]"
        "[?sentinel_password=...]` ([SENTINEL.md](SENTINEL.md)). Unset under Gunicorn: the master "
        "starts an embedded Redis for its own workers (not shared, not persisted) and says so in the log",
        section="original", rule=_redis_url, shown="unset")
    fetch_interval: float = setting(
        "FETCH_INTERVAL_SECONDS", 5.0, "how often the leader fetches the market APIs",
        section="original", rule=positive)
    port: int = setting("PORT", 8081, "HTTP port (Railway sets it; the original's default)",
                        section="original", rule=tcp_port())
    host: str = setting("HOST", "0.0.0.0", "the address to listen on (`::` for IPv6 too)",
                        section="original", rule=name_without_spaces)
    replica_id: str | None = setting(
        "RAILWAY_REPLICA_ID", None, "part of every node id, `ws-<replica>-<pid>-<random>`",
        section="original", shown="the host name")
    instance_id: str | None = setting(
        "RAILWAY_INSTANCE_ID", None, "stands in for `RAILWAY_REPLICA_ID` when that is unset (as in the "
        "original)", section="original", shown="unset")
    finnhub_api_key: str | None = setting(
        "FINNHUB_API_KEY", None, "a Finnhub key (free plan: 60 calls a minute): the US index ETFs DIA, SPY "
        "and QQQM, as the original showed them (`us_stock_indices`); unset: none", section="original",
        rule=_api_key, secret=True, shown="unset")
    cmc_api_key: str | None = setting(
        "CMC_API_KEY", None, "a CoinMarketCap key (Basic: 10,000 credits a month): its global metrics are "
        "the fallback for market totals while CoinGecko's fail, as in the original; unset: none",
        section="original", rule=_api_key, secret=True, shown="unset")
    taapi_secret: str | None = setting(
        "TAAPI_SECRET", None, "not used: BTC's RSI(14) comes from Binance's daily candles, with no key "
        "(named once in the log when set)", section="original", secret=True, shown="unset")

    original_compat: bool = setting(
        "ORIGINAL_COMPAT", False, "`on`: a drop-in for the original service's clients "
        "([COMPATIBILITY.md](COMPATIBILITY.md)): `/ws` speaks its `dashboard_update` protocol unless a "
        "client asks for `?protocol=marketfeed`, and the leader also keeps its Redis contract "
        "(`latest_market_data` as its flat object, `market_data_stream`) inside the fenced write",
        section="original", parser=flag, shown="off")
    original_cache_ttl: float = setting(
        "ORIGINAL_CACHE_TTL_SECONDS", 5.0, "with `ORIGINAL_COMPAT=on`: TTL of the flat "
        "`latest_market_data` (the original's 5 s)", section="original", rule=positive)
    original_stream_maxlen: int = setting(
        "ORIGINAL_STREAM_MAXLEN", 1000, "with `ORIGINAL_COMPAT=on`: `market_data_stream` is capped near "
        "this many entries (`XADD MAXLEN ~`, as the original)", section="original", rule=at_least(1))

    # --- election, cache and timing ---------------------------------------------
    key_prefix: str = setting(
        "KEY_PREFIX", DEFAULT_PREFIX, "names every Redis key: `<prefix>:leader`, `:epoch`, `:snapshot`, "
        "`:updates`, `:leader-events`, `:events`, and `<prefix>:latest_market_data` / "
        "`<prefix>:market_data_stream`, except that the default prefix keeps the original bare names. Two "
        "deployments on one Redis need only different prefixes", section="election", rule=name_without_spaces)
    lock_ttl: float = setting(
        "LOCK_TTL_SECONDS", 10.0, "TTL of the leader lock; must be > 2 x `RENEW_INTERVAL_SECONDS`",
        section="election", rule=positive)
    renew_interval: float = setting("RENEW_INTERVAL_SECONDS", 3.0, "how often the leader renews",
                                    section="election", rule=positive)
    lease_margin: float = setting(
        "LEASE_MARGIN_SECONDS", 2.0, "a leader whose renewals fail stops acting this long before its "
        "lock could expire; must be < TTL - renew interval", section="election", rule=non_negative)
    cache_ttl: float = setting("CACHE_TTL_SECONDS", 10.0, "TTL of the stored snapshot (`websocket:snapshot`)",
                               section="election", rule=positive)
    stale_after: float = setting(
        "STALE_AFTER_SECONDS", 15.0, "snapshots older than this are sent with `stale: true`, and "
        "connected clients get a `stale` message", section="election", rule=positive)
    step_down_after: int = setting(
        "STEP_DOWN_AFTER_FAILURES", 0, "a leader whose whole fetch fails this many times in a row "
        "releases leadership (and stays out for one TTL) so another instance can try; 0 = never",
        section="election", rule=at_least(0), shown="0 (off)")
    election: bool = setting(
        "ELECTION", True, "`off`: every worker fetches on its own (the no-election baseline of the "
        "lab; not for production)", section="election", parser=flag, shown="on")
    presence: bool = setting(
        "PRESENCE", True, "bind the lease to the leader's process as well as to the TTL: a follower "
        "(the deputy) takes over within about half a second when the leader's connections close "
        "(a whole instance killed); `off`: the TTL alone", section="election", parser=flag, shown="on")
    presence_grace: float = setting(
        "PRESENCE_GRACE_SECONDS", 0.3, "how long the leader's presence must be gone, on end, before the "
        "deputy takes over (a reconnect within it is no death)", section="election", rule=positive)
    presence_poll: float = setting(
        "PRESENCE_POLL_SECONDS", 0.2, "how often the deputy looks at the leader's presence (one round "
        "trip each)", section="election", rule=positive)
    events_maxlen: int = setting("EVENTS_MAXLEN", 1000, "length cap of the `websocket:events` leadership log",
                                 section="election", rule=at_least(1))
    redis_timeout: float = setting(
        "REDIS_TIMEOUT_SECONDS", 2.0, "connect and reply timeout of every Redis call (short on purpose: "
        "a lease is only as good as the time to learn it failed)", section="election", rule=positive)
    node_id: str | None = setting(
        "NODE_ID", None, "only for the lab's headless node (`python -m lab.node`); Gunicorn workers "
        "always get their own", section="election", shown="generated")

    # --- upstream market APIs ----------------------------------------------------
    upstream: str = setting(
        "UPSTREAM", "auto", "`live`: the real market APIs; `sim`: the simulated exchange (started by "
        "the Gunicorn master when `SIM_URL` is unset; every snapshot then says `simulated`); `auto`: "
        "`sim` when `SIM_URL` is set or nothing is (the embedded default), `live` when `REDIS_URL` is "
        "set, as on a deployment", section="upstream", parser=lower, rule=one_of(*UPSTREAM_MODES))
    sim_url: str | None = setting(
        "SIM_URL", None, "a running simulated exchange (`python -m feed sim --port 8090`)",
        section="upstream", rule=http_url, shown="unset")
    providers: tuple[str, ...] = setting(
        "PROVIDERS", PROVIDER_NAMES, "which providers run", section="upstream",
        parser=words_as(str.lower), rule=_providers)
    symbols: tuple[str, ...] = setting(
        "SYMBOLS", ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "LINK"), "which prices (the default: the "
        "original service's seven coins)", section="upstream",
        parser=words_as(str.upper), rule=_symbols)
    coingecko_url: str | None = setting(
        "COINGECKO_BASE_URL", None, "CoinGecko's base URL (a proxy, a mirror, a stand-in)",
        section="upstream", rule=http_url, shown="per `UPSTREAM` and `COINGECKO_API_PLAN`")
    coingecko_api_key: str | None = setting(
        "COINGECKO_API_KEY", None, "a CoinGecko API key, sent in the header its plan names "
        "(`x-cg-demo-api-key` or `x-cg-pro-api-key`); unset: keyless, limited per IP and shared with "
        "everyone behind that IP", section="upstream", rule=_api_key, secret=True, shown="unset")
    coingecko_api_plan: str = setting(
        "COINGECKO_API_PLAN", "demo", "`demo`: the key is a Demo key, for api.coingecko.com; `pro`: a "
        "Pro key, for pro-api.coingecko.com", section="upstream", parser=lower, rule=one_of("demo", "pro"))
    coingecko_ids: tuple[str, ...] = setting(
        "COINGECKO_IDS", (), "CoinGecko ids for tickers the shipped table does not know, as "
        "`SYMBOL=id` pairs (`SHIB=shiba-inu,PEPE=pepe`); CoinGecko ids are not tickers, so none is "
        "guessed", section="upstream", parser=_ID_PAIRS, rule=_id_pairs, shown="empty")
    coingecko_interval: float = setting(
        "COINGECKO_INTERVAL_SECONDS", 0.0, "how often CoinGecko's prices (`/simple/price`) are asked "
        "for; 0: its cache time, 60 s keyless and Demo, 20 s Pro (CoinGecko's changelog, 2025-01-13)",
        section="upstream", rule=non_negative, shown="0 (60 s, Pro 20 s)")
    coingecko_market_interval: float = setting(
        "COINGECKO_MARKET_INTERVAL_SECONDS", 600.0, "how often CoinGecko's market totals (`/global`) are "
        "asked for: CoinGecko caches them 10 minutes on every plan", section="upstream", rule=positive)
    coingecko_monthly_calls: int = setting(
        "COINGECKO_MONTHLY_CALLS", 0, "the plan's monthly call credits (about 10,000 for Demo; a credit is "
        "a good answer, refused calls are free): "
        "CoinGecko's cadence is stretched so the month's calls fit; 0 = no quota",
        section="upstream", rule=at_least(0), shown="0 (none)")
    binance_url: str | None = setting(
        "BINANCE_BASE_URL", None, "Binance's base URL; live default `https://data-api.binance.vision`, "
        "its host for public market data (`https://api.binance.us` for binance.us, whose symbols "
        "differ)", section="upstream", rule=http_url, shown="per `UPSTREAM`")
    binance_interval: float = setting(
        "BINANCE_INTERVAL_SECONDS", 0.0, "how often Binance is called; 0 = every fetch "
        "(`FETCH_INTERVAL_SECONDS`)", section="upstream", rule=non_negative, shown="0 (every fetch)")
    finnhub_url: str | None = setting(
        "FINNHUB_BASE_URL", None, "Finnhub's base URL (a proxy, a mirror, a stand-in)",
        section="upstream", rule=http_url, shown="per `UPSTREAM`")
    finnhub_interval: float = setting(
        "FINNHUB_INTERVAL_SECONDS", 300.0, "how often the three index ETFs are asked of Finnhub (one call "
        "each; the original kept them 5 minutes)", section="upstream", rule=positive)
    cmc_url: str | None = setting(
        "CMC_BASE_URL", None, "CoinMarketCap's base URL (a proxy, a mirror, a stand-in)",
        section="upstream", rule=http_url, shown="per `UPSTREAM`")
    cmc_interval: float = setting(
        "CMC_INTERVAL_SECONDS", 300.0, "how often CoinMarketCap is called at most, and only while "
        "CoinGecko's market totals fail (a month of it stays within Basic's 10,000 credits)",
        section="upstream", rule=positive)
    rsi_interval: float = setting(
        "RSI_INTERVAL_SECONDS", 3600.0, "how often BTC's daily candles are asked of Binance for its RSI(14) "
        "(`btc_rsi_14`; the value moves with today's close, the original kept it 3 h); 0 = no RSI",
        section="upstream", rule=non_negative)
    feargreed_url: str | None = setting(
        "FEAR_GREED_BASE_URL", None, "alternative.me's base URL (a proxy, a mirror, a stand-in)",
        section="upstream", rule=http_url, shown="per `UPSTREAM`")
    feargreed_interval: float = setting(
        "FEAR_GREED_INTERVAL_SECONDS", 3600.0, "how often the Fear & Greed index is called at most; "
        "sooner when its `time_until_update` says a new value is out (it changes once a day)",
        section="upstream", rule=positive)
    section_max_age: float = setting(
        "SECTION_MAX_AGE_SECONDS", 1800.0, "a section (a price, the market totals, the sentiment) "
        "whose last good value is older than this, and than twice its provider's interval, is "
        "dropped from snapshots and listed in `missing`", section="upstream", rule=positive)
    http_connect_timeout: float = setting(
        "HTTP_CONNECT_TIMEOUT_SECONDS", 3.0, "connect timeout of each HTTP call (a whole fetch is also "
        "bounded, by max(1 s, 0.8 x the fetch interval))", section="upstream", rule=positive)
    http_read_timeout: float = setting("HTTP_READ_TIMEOUT_SECONDS", 5.0, "read timeout of each HTTP call",
                                       section="upstream", rule=positive)
    http_retries: int = setting("HTTP_RETRIES", 2, "retries of connection errors, timeouts and 5xx, "
                                "with backoff", section="upstream", rule=between(0, 10))
    max_response_bytes: int = setting("MAX_RESPONSE_BYTES", 1_000_000, "larger responses are refused",
                                      section="upstream", rule=at_least(1024))

    # --- WebSocket clients ----------------------------------------------------------
    allowed_origins: tuple[str, ...] = setting(
        "ALLOWED_ORIGINS", (), "comma-separated origins (`https://dash.example.com`) allowed to open "
        "`/ws` besides this service's own; `*` allows any", section="clients", parser=origins,
        rule=_origins, shown="empty")
    allow_no_origin: bool = setting("WS_ALLOW_NO_ORIGIN", True, "allow clients that send no `Origin` "
                                    "(bots, scripts)", section="clients")
    ws_token: str | None = setting(
        "WS_TOKEN", None, "when set, `/ws` requires `?token=<it>` or `Authorization: Bearer <it>` (401 "
        "otherwise); at least 8 characters, no spaces", section="clients", rule=token, secret=True,
        shown="unset")
    ws_node_ids: str = setting(
        "WS_NODE_IDS", "auto", "how node ids appear in frames (`leader`, `served_by`) and in the "
        "`status` reply: `full` as they are, `opaque` as stable keyed labels (`n-` + 12 hex) with a "
        "short status; `auto`: opaque when `OPERATOR_TOKEN` is set", section="clients", parser=lower,
        rule=one_of(*NODE_ID_MODES))
    ping_interval: float = setting(
        "WS_PING_INTERVAL_SECONDS", 25.0, "protocol pings; a client that has not answered the previous "
        "one is closed (1008). 0 turns them off", section="clients", rule=_ping)
    max_message_bytes: int = setting(
        "WS_MAX_MESSAGE_BYTES", 4096, "larger client messages close the connection with 1009",
        section="clients", rule=between(16, 1_048_576))
    commands_per_second: float = setting(
        "WS_COMMANDS_PER_SECOND", 20.0, "per client, commands and pings together, bursts of twice "
        "that; beyond, close 1008", section="clients", rule=positive)
    send_timeout: float = setting(
        "WS_SEND_TIMEOUT_SECONDS", 10.0, "a client that takes no bytes for this long while a frame "
        "waits is closed (1008)", section="clients", rule=positive)
    send_buffer: int = setting(
        "WS_SEND_BUFFER_BYTES", 65536, "kernel send buffer per client (bounds what a stalled client can "
        "hold; the kernel doubles it); 0 = kernel default", section="clients",
        rule=between(2048, 64 * 1024 * 1024, or_zero=True))
    max_clients: int = setting("WS_MAX_CLIENTS", 10000, "per worker; beyond, the upgrade gets HTTP 503",
                               section="clients", rule=at_least(1))
    send_threads: int = setting(
        "WS_SEND_THREADS", 2, "OS threads that write one broadcast when 1,000 or more clients are ready "
        "(the kernel's send is most of the cost, and runs without the GIL); 1 = the worker's own "
        "thread only", section="clients", rule=between(1, 64))

    # --- operators and proxies ---------------------------------------------------------
    operator_token: str | None = setting(
        "OPERATOR_TOKEN", None, "when set, `/status` and `/metrics` require `Authorization: Bearer <it>` "
        "(401 otherwise; never taken from the query string), and `/health` answers only "
        "`{\"status\": ...}` without it (its 200/503 unchanged, for load balancers). At least 8 "
        "characters", section="operators", rule=token, secret=True, shown="unset")
    forwarded_allow_ips: tuple[str, ...] = setting(
        "FORWARDED_ALLOW_IPS", ("127.0.0.1", "::1"), "the proxies whose `X-Forwarded-Host` / "
        "`X-Forwarded-For` are believed (IPs or networks, `*` for any): Gunicorn's own variable, read "
        "by the service too. Behind Railway's edge nothing needs setting", section="operators",
        parser=words, rule=networks)

    # --- Gunicorn (read by gunicorn.conf.py) ------------------------------------------
    web_concurrency: int = setting(
        "WEB_CONCURRENCY", 3, "workers per instance; each is an election candidate with its own clients",
        section="gunicorn", rule=at_least(1))
    worker_connections: int = setting(
        "WORKER_CONNECTIONS", 10000, "concurrent HTTP requests per worker (upgraded WebSockets are not "
        "counted: see `WS_MAX_CLIENTS`)", section="gunicorn", rule=at_least(1))
    graceful_timeout: int = setting(
        "GRACEFUL_TIMEOUT", 10, "upper bound for a worker's exit after SIGTERM; keep below the "
        "platform's draining time", section="gunicorn", rule=at_least(1))
    log_level: str = setting("LOG_LEVEL", "info", "log level; logs are one JSON object per line on "
                             "stderr", section="gunicorn", parser=lower, rule=one_of(*LOG_LEVELS))
    embedded_redis_port: int = setting(
        "EMBEDDED_REDIS_PORT", 0, "port of the embedded Redis when `REDIS_URL` is unset",
        section="gunicorn", rule=tcp_port(or_zero=True), shown="0 (any free port)")
    prometheus_multiproc_dir: str | None = setting(
        "PROMETHEUS_MULTIPROC_DIR", None, "where workers keep their metrics for `/metrics` to merge",
        section="gunicorn", shown="a fresh temp dir")

    # ------------------------------------------------------------------------------
    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    @property
    def opaque_node_ids(self) -> bool:
        """Whether client frames carry opaque labels instead of node ids."""
        if self.ws_node_ids == "auto":
            return bool(self.operator_token)
        return self.ws_node_ids == "opaque"

    @property
    def replica_label(self) -> str | None:
        """What names this replica in node ids: Railway's replica id, else its instance id."""
        return self.replica_id or self.instance_id

    def unused(self) -> list[tuple[str, str]]:
        """``(variable, what to use instead)`` for each of the original's variables set but not used."""
        out = []
        if self.taapi_secret:
            out.append(("TAAPI_SECRET", "nothing: BTC's RSI(14) is computed from Binance's daily candles, "
                                        "no key needed; the secret can be removed"))
        return out

    @property
    def upstream_mode(self) -> str:
        """``sim`` or ``live``: what ``UPSTREAM`` means here (see :func:`resolve_upstream`)."""
        return resolve_upstream(self.upstream, self.redis_url, self.sim_url)[0]

    @property
    def simulated(self) -> bool:
        return self.upstream_mode == "sim"

    @classmethod
    def declared(cls) -> Iterator[tuple[str, Setting]]:
        """``(field name, declaration)`` of every setting, in declaration order."""
        for f in fields(cls):
            yield f.name, f.metadata["setting"]

    @classmethod
    def env_names(cls) -> set[str]:
        return {spec.env for _, spec in cls.declared()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from ``env`` (default ``os.environ``) and validate them."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, spec in cls.declared():
            raw = env.get(spec.env)
            if raw is not None and raw.strip() != "":
                values[name] = _parse(spec, raw.strip())
        values.update(overrides)
        return cls(**values).validate()

    def validate(self) -> Settings:
        """Refuse impossible values and combinations, naming the setting and the rule."""
        for name, spec in self.declared():
            value = getattr(self, name)
            if value is not None and spec.rule is not None:
                problem = spec.rule(value)
                if problem:
                    raise ConfigError(spec.env, problem)
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
        if self.presence and not self.presence_grace + self.presence_poll < self.lock_ttl - self.lease_margin:
            # Presence must decide before the lease could: otherwise it only adds cost.
            raise ConfigError(
                "PRESENCE_GRACE_SECONDS",
                f"PRESENCE_GRACE_SECONDS + PRESENCE_POLL_SECONDS must be less than LOCK_TTL_SECONDS - "
                f"LEASE_MARGIN_SECONDS ({self.presence_grace:g} + {self.presence_poll:g} >= "
                f"{self.lock_ttl:g} - {self.lease_margin:g}); or set PRESENCE=off",
            )
        return self


def _parse(spec: Setting, raw: str) -> Any:
    try:
        return spec.parser(raw)
    except ValueError:
        shown = "***" if spec.secret else redact_url(raw) if spec.env == "REDIS_URL" else raw
        raise ConfigError(spec.env, f"cannot parse {shown!r}: expected {spec.parser.kind}") from None


def env_setting(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting's value from ``env``, its default if unset or unparsable.

    For ``gunicorn.conf.py``, which needs a few values before the master's
    full validation runs (that one then names any bad value and stops).
    """
    env = os.environ if env is None else env
    spec = dict(Settings.declared())[name]
    field_default = next(f.default for f in fields(Settings) if f.name == name)
    raw = env.get(spec.env)
    if raw is None or raw.strip() == "":
        return field_default
    try:
        return _parse(spec, raw.strip())
    except ConfigError:
        return field_default


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The secrets among the settings in ``env``: every ``secret`` setting, Redis passwords.

    Log lines mask each of them wherever it appears (:mod:`feed.logs`).
    Values shorter than 4 characters are left out: masking them would
    garble every line, and such a token is refused at start-up anyway.
    """
    found = [env.get(spec.env, "") for _, spec in Settings.declared() if spec.secret]
    found += passwords_in(env.get("REDIS_URL", ""))
    return [v for v in dict.fromkeys(found) if len(v) >= 4]



def resolve_upstream(upstream: str, redis_url: str | None, sim_url: str | None) -> tuple[str, str]:
    """``(mode, why)``: ``sim`` or ``live`` for an ``UPSTREAM`` value, and the reason, for the log.

    ``auto`` is real data wherever the service is deployed: a shared Redis
    (``REDIS_URL``) means a deployment, so the real APIs, unless a simulator
    was asked for (``SIM_URL``). With nothing configured it is the embedded
    demo: the simulator. The Gunicorn master pins the answer in ``UPSTREAM``
    before it sets ``REDIS_URL`` to its embedded Redis.
    """
    upstream = (upstream or "auto").strip().lower()
    if upstream in ("sim", "live"):
        return upstream, f"UPSTREAM={upstream}"
    if sim_url:
        return "sim", "UPSTREAM=auto and SIM_URL is set"
    if redis_url:
        return "live", "UPSTREAM=auto and REDIS_URL is set (a deployment): the real market APIs"
    return "sim", "UPSTREAM=auto and nothing is configured (REDIS_URL unset): the embedded demo"
