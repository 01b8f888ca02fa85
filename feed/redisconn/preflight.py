"""``python -m feed preflight``: can this service use the Redis in ``REDIS_URL``?

Run by the Gunicorn master before it forks workers (in a process of its own:
the master must not import redis). It connects as the service will and
exercises every kind of command the service needs, on probe keys under the
key prefix that expire within a second: a Lua script through EVALSHA (with
SCRIPT LOAD) and through EVAL, the commands the scripts call (GET, SET with
PX, PEXPIRE, PTTL, DEL, TIME, XADD, PUBLISH, HSET, HINCRBY, HDEL), XREVRANGE,
HGETALL, and SUBSCRIBE. Presence (feed/election/presence.py) also needs
``PUBSUB NUMSUB`` inside scripts and ``PUBSUB CHANNELS``; a Redis that
refuses them gets a warning, not a failed start: the service then runs on
the lock's TTL alone.

Exit status: 0 usable; 1 unreachable now (not fatal: workers start, serve
``/health`` and connect when Redis appears); 3 refused for good (wrong
password, unknown user, missing permissions): the deploy must fail, with a
message that names ``REDIS_URL`` and says what is wrong, password masked.
"""

from __future__ import annotations

import argparse
import sys

import redis

from feed.config.settings import Settings
from feed.errors import ConfigError
from feed.keys import Keys
from feed.logs import redact_text
from feed.redisconn.health import misconfiguration
from feed.redisconn.url import redact_url

__all__ = ["PROBE", "PROBE_PRESENCE", "main", "probe", "probe_presence"]

UNREACHABLE = 1
REFUSED = 3

# KEYS: probe key, probe stream, probe hash
# ARGV: probe channel
# Returns 1 after calling, on keys that vanish within a second, every command
# the service's own scripts call; an ACL that forbids one fails it here.
PROBE = """
redis.call('HSET', KEYS[3], 'f', '1')
redis.call('HINCRBY', KEYS[3], 'n', 1)
redis.call('HDEL', KEYS[3], 'f')
redis.call('PEXPIRE', KEYS[3], 1000)
redis.call('SET', KEYS[1], '1', 'PX', 1000)
redis.call('GET', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 1000)
redis.call('PTTL', KEYS[1])
redis.call('TIME')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1, '*', 'event', 'preflight')
redis.call('PEXPIRE', KEYS[2], 1000)
redis.call('PUBLISH', ARGV[1], 'preflight')
redis.call('DEL', KEYS[1])
return 1
"""


# KEYS: a probe hash; ARGV: a probe channel. Returns the channel's subscriber
# count, after the commands presence adds inside scripts.
PROBE_PRESENCE = """
redis.call('HGET', KEYS[1], 'presence')
return redis.call('PUBSUB', 'NUMSUB', ARGV[1])[2]
"""


def probe_presence(client: redis.Redis, keys: Keys) -> str | None:
    """None if presence's commands run here, else why not (a ResponseError's text)."""
    try:
        client.register_script(PROBE_PRESENCE)(keys=[keys.name("preflight-hash")],
                                               args=[keys.name("preflight")])
        client.pubsub_channels(keys.alive_prefix + "*")
    except redis.ResponseError as exc:
        return redact_text(f"{type(exc).__name__}: {exc}").rstrip(".")
    return None


def probe(client: redis.Redis, keys: Keys) -> None:
    """Run the checks; raises the first RedisError."""
    client.ping()
    probe_keys = [keys.name("preflight"), keys.name("preflight-stream"), keys.name("preflight-hash")]
    channel = keys.name("preflight")
    client.register_script(PROBE)(keys=probe_keys, args=[channel])  # EVALSHA, SCRIPT LOAD
    client.eval(PROBE, 3, *probe_keys, channel)  # the reaper's way
    client.xrevrange(keys.leadership_log, count=1)
    client.hgetall(keys.upstream)
    sub = client.pubsub()
    try:
        sub.subscribe(keys.updates)
        sub.get_message(timeout=client.connection_pool.connection_kwargs.get("socket_timeout") or 1.0)
    finally:
        sub.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feed preflight",
                                     description="Check that the Redis in REDIS_URL can be used.")
    parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        return 0
    from feed.redisconn.client import connect

    shown = redact_url(settings.redis_url)
    try:
        client = connect(settings.redis_url, settings.redis_timeout)
        probe(client, settings.keys)
    except redis.RedisError as exc:
        error = redact_text(f"{type(exc).__name__}: {exc}").rstrip(".")
        problem = misconfiguration(exc)
        if problem == "auth":
            print(f"configuration error: REDIS_URL: Redis at {shown} refused the credentials: {error}. "
                  f"Check the user name and password in REDIS_URL.", file=sys.stderr)
            return REFUSED
        if problem == "permission":
            print(f"configuration error: REDIS_URL: the Redis user of {shown} may not run a command "
                  f"the service needs: {error}. Grant it the commands, keys ({settings.keys.prefix}:* "
                  f"and {settings.keys.data}) and channels ({settings.keys.prefix}:*) listed in "
                  f"docs/CONFIGURATION.md.", file=sys.stderr)
            return REFUSED
        print(f"warning: Redis at {shown} is not reachable now ({error}); workers start anyway and "
              f"connect when it is.", file=sys.stderr)
        return UNREACHABLE
    if settings.election and settings.presence:
        why = probe_presence(client, settings.keys)
        if why:
            print(f"warning: the Redis user of {shown} may not run PUBSUB NUMSUB / CHANNELS ({why}): "
                  f"presence is off, a dead instance's lock runs out on its TTL "
                  f"(LOCK_TTL_SECONDS) instead of within a second. Grant +pubsub|numsub "
                  f"+pubsub|channels to use it (docs/CONFIGURATION.md).", file=sys.stderr)
    return 0
