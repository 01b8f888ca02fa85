"""Hand leadership over the moment a worker process dies.

A leader that is killed (OOM, SIGKILL, a crash) cannot release its lock, so
without help the others wait for the lock to expire (up to LOCK_TTL_SECONDS).
But when a Gunicorn worker dies, its master knows at once: its
``child_exit`` hook runs ``python -m feed reap --node-prefix ws-<where>-<pid>-``,
which releases the lock if (and only if) it is held by that dead process.
The release is the same as a graceful one (followers are woken through
pub/sub), recorded in the leadership log as ``lost`` with reason ``process_died``.

This is safe because the process is known to be dead: it can never write
again, so nothing needs fencing. A whole instance that dies (a host or
container crash) has no master left to do this; its lock expires as before.
"""

from __future__ import annotations

import argparse
import logging
import sys

import redis

from feed.config.settings import Settings
from feed.election.lock import RELEASE_DEAD
from feed.errors import ConfigError
from feed.keys import Keys
from feed.logs import configure_logging, log_event, redact_text
from feed.redisconn.values import text

__all__ = ["main", "reap"]

log = logging.getLogger(__name__)

def reap(client: redis.Redis, keys: Keys, node_prefix: str, events_maxlen: int = 1000) -> str | None:
    """Release the lock if a node of the dead process holds it; returns that node."""
    if not node_prefix.startswith("ws-") or not node_prefix.endswith("-"):
        raise ValueError(f"not a node prefix: {node_prefix!r}")
    holder = client.eval(RELEASE_DEAD, 3, keys.leader, keys.epoch, keys.leadership_log,
                         node_prefix, events_maxlen, keys.leader_events)
    return None if holder is None else str(text(holder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feed reap",
                                     description="Release the lock held by a dead worker process.")
    parser.add_argument("--node-prefix", required=True, help="ws-<where>-<pid>- of the dead process")
    args = parser.parse_args(argv)
    configure_logging("INFO")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url or not settings.election:
        return 0
    from feed.redisconn.client import connect

    try:
        client = connect(settings.redis_url, settings.redis_timeout)
        holder = reap(client, settings.keys, args.node_prefix, settings.events_maxlen)
    except (redis.RedisError, ValueError) as exc:
        log_event(log, "reap_failed", logging.WARNING, node_prefix=args.node_prefix,
                  error=redact_text(f"{type(exc).__name__}: {exc}"))
        return 1
    if holder:
        log_event(log, "dead_leader_released", node=holder, role="reaper", reason="process_died")
    return 0
