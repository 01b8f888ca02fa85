"""Redis clients built from ``REDIS_URL``, with timeouts suited to a lease.

Commands must fail fast: a leader whose renewal hangs longer than its lease
is worse than one that sees an error and retries. So every client gets short
connect and read timeouts and at most one immediate retry.

``redis+sentinel://`` (and ``rediss+sentinel://``) URLs give a client whose
connections go to whichever server the sentinels currently name as master;
everything else (election, fenced writes, pub/sub, the cache) uses it exactly
like a plain client. See ``docs/SENTINEL.md`` for what holds during a failover.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)

from .config import ConfigError, check_redis_url, redact_url
from .logs import log_event

__all__ = ["SentinelURL", "connect", "parse_sentinel_url"]

log = logging.getLogger("feed.redis")

DEFAULT_SENTINEL_PORT = 26379
# How often a Sentinel client asks the sentinels who is master, besides on
# every new connection. It bounds how long a live, not yet demoted old master
# keeps receiving our commands after the sentinels switched (about 10 s with
# Sentinel's defaults when nothing else made us reconnect).
MASTER_CHECK_INTERVAL = 1.0

_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", "sentinel_ssl")


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db][?options]`` URL.

    ``username``/``password``/``db``/``ssl`` are for the Redis servers;
    ``sentinel_*`` for the sentinels themselves (by default they get no
    credentials and the same TLS setting as the servers).
    """

    hosts: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    sentinel_ssl: bool = False

    def __repr__(self) -> str:  # never show a password, even in a traceback
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        return (f"SentinelURL(hosts={hosts!r}, master={self.master!r}, db={self.db}, "
                f"username={self.username!r}, ssl={self.ssl}, "
                f"sentinel_username={self.sentinel_username!r}, sentinel_ssl={self.sentinel_ssl})")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a Sentinel URL; a :class:`~feed.config.ConfigError` says what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.endswith("+sentinel"):
        raise ConfigError("REDIS_URL", f"not a sentinel URL: {_redact(url)!r}")
    # The shared checks (scheme, host:port pairs, master name) without the
    # query: it may hold the sentinels' password.
    check_redis_url(url.split("?", 1)[0])
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    userinfo, _, hostlist = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) or None
    hosts = tuple(_sentinel_address(item.strip(), url) for item in hostlist.split(","))
    parts = [unquote(p) for p in path.split("/") if p]
    if len(parts) > 2:
        raise ConfigError("REDIS_URL", f"a sentinel URL's path is /master or /master/db, "
                                       f"got {'/' + path!r}")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ConfigError("REDIS_URL", f"the database after the master name must be a "
                                           f"number, got {parts[1]!r}")
        db = int(parts[1])
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - set(_SENTINEL_OPTIONS))
    if unknown:
        # Name the option, never its value (it may be a password).
        raise ConfigError("REDIS_URL", f"unknown sentinel URL option(s) {', '.join(unknown)}; "
                                       f"known: {', '.join(_SENTINEL_OPTIONS)}")
    ssl = scheme.startswith("rediss")
    sentinel_ssl = ssl
    if "sentinel_ssl" in options:
        sentinel_ssl = _flag(options["sentinel_ssl"][-1])
    return SentinelURL(
        hosts=hosts, master=parts[0], db=db, username=username, password=password, ssl=ssl,
        sentinel_username=options.get("sentinel_username", [""])[-1] or None,
        sentinel_password=options.get("sentinel_password", [""])[-1] or None,
        sentinel_ssl=sentinel_ssl,
    )


def connect(url: str, timeout: float = 2.0, *,
            master_check_interval: float = MASTER_CHECK_INTERVAL, **kwargs: object) -> redis.Redis:
    """A client for ``url`` (redis://, rediss://, unix:// or redis+sentinel://).

    ``timeout`` bounds every connect and every reply, to the sentinels as well
    as to the servers. ``kwargs`` go to the server connections (not to the
    sentinels). ``master_check_interval`` applies to Sentinel URLs only.
    """
    options: dict[str, object] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 30,
    }
    options.update(kwargs)
    if urlsplit(url).scheme.endswith("+sentinel"):
        return _connect_sentinel(parse_sentinel_url(url), timeout, master_check_interval, options)
    check_redis_url(url)
    return redis.Redis.from_url(url, **options)


# --- Sentinel ---------------------------------------------------------------


class _SentinelConnection(SentinelManagedConnection):
    """Reconnects through the sentinels on every path, not only in ``connect()``.

    redis-py 8.1's ``send_packed_command`` reconnects a dropped connection to
    the address it had, skipping the lookup that ``connect()`` does. So the
    one retry after ``READONLY`` or a connection error went back to the old
    master; with this, it goes to whichever server the sentinels name now.
    """

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        if not self._sock:
            self.connect()
        super().send_packed_command(command, check_health)


class _SentinelSSLConnection(_SentinelConnection, SSLConnection):
    pass


class _FollowingPool(SentinelConnectionPool):
    """A master pool that also moves connections already open when the master changes.

    redis-py asks the sentinels only when it opens a connection, and drops
    idle connections when that answer changes. A connection that stays open
    (the pub/sub one, a busy one) would keep talking to the old master for as
    long as that server lives and has not been demoted: after a manual
    failover or across a partition, that is seconds of writes to a server
    whose data is about to be thrown away. :meth:`check_master`, called
    periodically, marks every open connection to reconnect (rediscovering the
    master) after its current command, without cutting that command off.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._watch_stop = threading.Event()
        self._watched: tuple[str, int] | None = None  # the master at the last check

    def check_master(self) -> int:
        """Ask the sentinels now; returns how many open connections were sent to a new master."""
        address = self.get_master_address()  # also drops idle connections on a change
        # Compared with the connections themselves, not with the pool's
        # address: another connection may have noticed the change first.
        with self._lock:
            stale = [c for c in self._in_use_connections if (c.host, c.port) != address]
        for conn in stale:
            conn.mark_for_reconnect()
        previous, self._watched = self._watched, address
        if previous is not None and previous != address:
            log_event(log, "redis_master_changed", logging.WARNING, master=self.service_name,
                      old=_address(previous), new=_address(address), moved_connections=len(stale))
        return len(stale)

    def close(self) -> None:
        self._watch_stop.set()
        super().close()
        self.sentinel_manager.close()

    def watch(self, interval: float) -> None:
        """Run :meth:`check_master` every ``interval`` s in a daemon thread (a greenlet under gevent)."""
        if interval > 0:
            threading.Thread(target=_watch, args=(weakref.ref(self), self._watch_stop, interval),
                             name=f"sentinel-watch-{self.service_name}", daemon=True).start()


def _watch(ref: weakref.ref, stop: threading.Event, interval: float) -> None:
    # Holds the pool only weakly between rounds, so a dropped client ends the loop.
    # Only changes are logged: a failover would otherwise log every second.
    known = True
    while not stop.wait(interval):
        pool = ref()
        if pool is None:
            return
        try:
            pool.check_master()
            if not known:
                log_event(log, "redis_master_known", master=pool.service_name,
                          address=_address(pool.master_address))
            known = True
        except (redis.RedisError, OSError) as exc:
            # MasterNotFoundError: no sentinel answered, or none vouches for a
            # master (it is down and not yet replaced). New connections fail
            # the same way meanwhile, and the node's loops retry them.
            if known:
                what = "no master" if isinstance(exc, MasterNotFoundError) else "sentinels unreachable"
                log_event(log, "redis_master_unknown", logging.WARNING, master=pool.service_name,
                          reason=what, error=f"{type(exc).__name__}: {exc}")
            known = False
        except Exception:  # a watcher that dies silently is worse: log, go on
            log.exception("sentinel watch failed", extra={"fields": {"event": "sentinel_watch_error"}})
        del pool


def _connect_sentinel(spec: SentinelURL, timeout: float, interval: float,
                      options: dict[str, object]) -> redis.Redis:
    # Sentinel connections: the same timeouts, and no retry of their own. The
    # next sentinel in the list is the retry; redis-py's default (10 retries
    # with backoff) would stall every master lookup for seconds per dead one.
    sentinel_kwargs: dict[str, object] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if spec.sentinel_username:
        sentinel_kwargs["username"] = spec.sentinel_username
    if spec.sentinel_password:
        sentinel_kwargs["password"] = spec.sentinel_password
    if spec.sentinel_ssl:
        sentinel_kwargs["ssl"] = True
    sentinel = Sentinel(list(spec.hosts), sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(
        spec.master, connection_pool_class=_FollowingPool,
        connection_class=_SentinelSSLConnection if spec.ssl else _SentinelConnection,
        db=spec.db, username=spec.username, password=spec.password, **options,
    )
    client.connection_pool.watch(interval)
    return client


def _sentinel_address(item: str, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, port = item[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = item.rpartition(":")
        if not host:
            host, port = port, ""
    if not host:
        raise ConfigError("REDIS_URL", f"empty sentinel address in {_redact(url)!r}")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("REDIS_URL", f"bad sentinel port in {item!r}")
    return host, int(port)


def _flag(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError("REDIS_URL", f"sentinel_ssl must be true or false, got {raw!r}")


def _address(addr: tuple[str, int] | None) -> str | None:
    return None if addr is None else f"{addr[0]}:{addr[1]}"


def _redact(url: str) -> str:
    """``redact_url`` plus the query, which may carry the sentinels' password."""
    base, sep, _ = url.partition("?")
    return (redact_url(base) or "") + (f"{sep}***" if sep else "")
