"""Sentinel URLs: ``redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db][?options]``.

Standard library only, so that settings can be checked (in the Gunicorn
master, before it forks) without importing redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from .config import ConfigError, check_redis_url_shape, redact_url

__all__ = ["DEFAULT_SENTINEL_PORT", "SENTINEL_OPTIONS", "SentinelURL", "parse_sentinel_url"]

DEFAULT_SENTINEL_PORT = 26379
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", "sentinel_ssl")


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
        raise ConfigError("REDIS_URL", f"not a sentinel URL: {redact_url(url)!r}")
    # The shared checks (scheme, host:port pairs, master name) without the
    # query: it may hold the sentinels' password.
    check_redis_url_shape(url.split("?", 1)[0])
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
    unknown = sorted(set(options) - set(SENTINEL_OPTIONS))
    if unknown:
        # Name the option, never its value (it may be a password).
        raise ConfigError("REDIS_URL", f"unknown sentinel URL option(s) {', '.join(unknown)}; "
                                       f"known: {', '.join(SENTINEL_OPTIONS)}")
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


def _sentinel_address(item: str, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, port = item[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = item.rpartition(":")
        if not host:
            host, port = port, ""
    if not host:
        raise ConfigError("REDIS_URL", f"empty sentinel address in {redact_url(url)!r}")
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
