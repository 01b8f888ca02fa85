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
from urllib.parse import urlsplit

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

from feed.logs import log_event
from feed.redisconn.url import SentinelURL, check_redis_url, parse_sentinel_url

__all__ = ["SentinelURL", "connect", "parse_sentinel_url"]

log = logging.getLogger(__name__)

# How often a Sentinel client asks the sentinels who is master, besides on
# every new connection. It bounds how long a live, not yet demoted old master
# keeps receiving our commands after the sentinels switched (about 10 s with
# Sentinel's defaults when nothing else made us reconnect).
MASTER_CHECK_INTERVAL = 1.0

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


def _address(addr: tuple[str, int] | None) -> str | None:
    return None if addr is None else f"{addr[0]}:{addr[1]}"
