"""Redis URLs: checking them, parsing Sentinel URLs, and never showing a password.

    redis://[user:pass@]host:port/db      rediss://...      unix:///path/redis.sock
    redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db][?sentinel_password=...]

Standard library only, so that settings can be checked (in the Gunicorn
master, before it forks) without importing redis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from feed.errors import ConfigError

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "REDIS_SCHEMES",
    "SENTINEL_OPTIONS",
    "SentinelURL",
    "check_redis_url",
    "parse_sentinel_url",
    "passwords_in",
    "redact_url",
]

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
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


def passwords_in(url: str) -> list[str]:
    """Every password ``url`` holds (user-info and ``*password*`` options), decoded."""
    _, sep, rest = url.partition("://")
    if not sep:
        return []
    found = [unquote(m.group(2)) for m in _PASSWORD_OPTION.finditer(rest)]
    userinfo, at, _ = _PASSWORD_OPTION.sub("", rest).rpartition("@")
    if at and ":" in userinfo:
        found.append(unquote(userinfo.split(":", 1)[1]))
    return found


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigError` unless ``url`` is a usable Redis URL."""
    check_redis_url_shape(url)
    if urlsplit(url).scheme.endswith("+sentinel"):
        # Options, database and every address of a Sentinel URL, checked now
        # rather than in each worker.
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


# --- Sentinel URLs ------------------------------------------------------------

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
    """Parse a Sentinel URL; a :class:`~feed.errors.ConfigError` says what is wrong."""
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
