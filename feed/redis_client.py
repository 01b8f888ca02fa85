"""Redis clients built from ``REDIS_URL``, with timeouts suited to a lease.

Commands must fail fast: a leader whose renewal hangs longer than its lease
is worse than one that sees an error and retries. So every client gets short
connect and read timeouts and at most one immediate retry.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import check_redis_url

__all__ = ["SentinelURL", "connect", "parse_sentinel_url"]


class SentinelURL:
    """A parsed ``redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db]`` URL."""

    def __init__(self, hosts: list[tuple[str, int]], master: str, db: int,
                 username: str | None, password: str | None, ssl: bool,
                 sentinel_password: str | None) -> None:
        self.hosts = hosts
        self.master = master
        self.db = db
        self.username = username
        self.password = password
        self.ssl = ssl
        self.sentinel_password = sentinel_password


def parse_sentinel_url(url: str) -> SentinelURL:
    check_redis_url(url)
    scheme, rest = url.split("://", 1)
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    userinfo, _, hostlist = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if pw else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "26379"
        hosts.append((host.strip("[]"), int(port)))
    parts = [p for p in path.split("/") if p]
    master = parts[0]
    db = int(parts[1]) if len(parts) > 1 else 0
    options = parse_qs(query)
    sentinel_password = options.get("sentinel_password", [None])[0]
    return SentinelURL(hosts, master, db, username, password,
                       scheme.startswith("rediss"), sentinel_password)


def connect(url: str, timeout: float = 2.0, **kwargs: object) -> redis.Redis:
    """A client for ``url`` (redis://, rediss://, unix:// or redis+sentinel://)."""
    options: dict[str, object] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 30,
    }
    options.update(kwargs)
    if urlsplit(url).scheme.endswith("+sentinel"):
        from redis.sentinel import Sentinel

        spec = parse_sentinel_url(url)
        sentinel_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if spec.sentinel_password:
            sentinel_kwargs["password"] = spec.sentinel_password
        sentinel = Sentinel(spec.hosts, sentinel_kwargs=sentinel_kwargs, **{
            k: v for k, v in options.items() if k != "health_check_interval"})
        return sentinel.master_for(
            spec.master, db=spec.db, username=spec.username, password=spec.password,
            ssl=spec.ssl, health_check_interval=30,
        )
    check_redis_url(url)
    return redis.Redis.from_url(url, **options)
