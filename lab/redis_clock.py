"""Redis's own clock, the one the leadership log is written in.

Times measured across processes (a fault sent here, an acquisition recorded
by a script there) are compared on this clock, never on a local one. One
``TIME`` round trip per reading.
"""

from __future__ import annotations

import redis

__all__ = ["redis_now", "redis_now_ms"]


def redis_now(client: redis.Redis) -> float:
    """Redis ``TIME`` in unix seconds."""
    sec, usec = client.time()
    return int(sec) + int(usec) / 1e6


def redis_now_ms(client: redis.Redis) -> int:
    """Redis ``TIME`` in unix milliseconds, as stream entry ids count."""
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000
