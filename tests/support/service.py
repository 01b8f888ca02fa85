"""Real Gunicorn instances of the service and real WebSocket clients for tests."""

from __future__ import annotations

from lab.cluster import ServiceInstance

# Scaled-down timing for tests: same rules as the defaults, faster.
FAST_ENV = {
    "LOCK_TTL_SECONDS": "2",
    "RENEW_INTERVAL_SECONDS": "0.5",
    "LEASE_MARGIN_SECONDS": "0.3",
    "FETCH_INTERVAL_SECONDS": "0.5",
    "CACHE_TTL_SECONDS": "10",
    "REDIS_TIMEOUT_SECONDS": "0.5",
    "GRACEFUL_TIMEOUT": "5",
}


class Instance(ServiceInstance):
    """One ``gunicorn -c gunicorn.conf.py`` process tree on a free port.

    The lab's instance (:class:`lab.cluster.ServiceInstance`) with the tests'
    scaled-down timing and two workers by default.
    """

    def __init__(self, name: str, *, workers: int = 2, redis_url: str | None = None,
                 sim_url: str | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__(name, workers=workers, redis_url=redis_url, sim_url=sim_url,
                         env={**FAST_ENV, **(env or {})})

    def wait_ready(self, timeout: float = 30.0) -> Instance:
        try:
            super().wait_ready(timeout)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None
        return self
