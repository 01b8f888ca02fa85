"""What one path to Redis (the election, the subscription) knows about it.

Reachable or not, the last error, and whether that error is a
misconfiguration no retry will fix: authentication refused (a wrong
password, an unknown user) or a command the Redis user may not run. Those
are reported as a ``problem`` (``/health`` then says ``degraded`` and why)
and logged again every minute while they last, not once and never again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from feed.logs import log_event, redact_text

__all__ = ["RedisHealth", "misconfiguration"]

log = logging.getLogger(__name__)


def misconfiguration(exc: BaseException) -> str | None:
    """``auth`` or ``permission`` if ``exc`` says Redis refuses us for good, else None."""
    if isinstance(exc, (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError)):
        return "auth"
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return "permission"
    return None


class RedisHealth:
    """One path's view of Redis; ``node`` and ``path`` name it in the log."""

    REPEAT_EVERY = 60.0  # seconds between repeats of a misconfiguration's log line

    def __init__(self, node: str, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.path = path
        self.clock = clock
        self.ok: bool | None = None  # None until the first round trip
        self.error: str | None = None
        self.problem: str | None = None  # auth | permission
        self._logged_at = -self.REPEAT_EVERY

    def succeeded(self, role: str) -> None:
        if self.ok is not True:
            log_event(log, "redis_connected", node=self.node, role=role, path=self.path)
        self.ok = True
        self.error = None
        self.problem = None

    def failed(self, exc: BaseException, role: str) -> None:
        text = redact_text(f"{type(exc).__name__}: {exc}")
        problem = misconfiguration(exc)
        now = self.clock()
        if problem is not None:
            if problem != self.problem or now - self._logged_at >= self.REPEAT_EVERY:
                self._logged_at = now
                log_event(log, "redis_misconfigured", logging.ERROR, node=self.node, role=role,
                          path=self.path, problem=problem, error=text,
                          fix="check the user name and password in REDIS_URL" if problem == "auth"
                          else "grant the Redis user the commands, keys and channels the service uses "
                               "(docs/CONFIGURATION.md)")
        elif self.ok is not False:
            log_event(log, "redis_unreachable", logging.WARNING, node=self.node, role=role,
                      path=self.path, error=text)
        self.ok = False
        self.error = text
        self.problem = problem
