"""What the Gunicorn master starts when nothing is configured.

* No ``REDIS_URL``: a private redis-server (see :mod:`feed.redisconn.embedded`),
  shared by all workers of this instance.
* ``UPSTREAM`` resolving to ``sim`` (nothing configured) and no ``SIM_URL``: the simulated exchange,
  as a child process (``python -m feed sim --port 0``).
* No ``PROMETHEUS_MULTIPROC_DIR``: a fresh directory for the workers' metrics.

Each is announced in the log, and everything started is stopped on exit.
Only the standard library is imported here: the master must not import
redis, requests or ssl before gevent patches the workers it forks.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import MutableMapping

from feed.config.settings import resolve_upstream
from feed.logs import log_event
from feed.redisconn.embedded import RedisProcess
from feed.simulator.process import SimProcess

__all__ = ["EmbeddedServices"]

log = logging.getLogger(__name__)


class EmbeddedServices:
    """Starts the defaults an unconfigured instance needs; see the module docstring."""

    def __init__(self, env: MutableMapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.redis: RedisProcess | None = None
        self.sim: SimProcess | None = None
        self.metrics_dir: str | None = None

    def start(self) -> EmbeddedServices:
        env = self.env
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            self.metrics_dir = tempfile.mkdtemp(prefix="marketfeed-metrics-")
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        # Decided before REDIS_URL points at an embedded Redis, and pinned
        # for the workers: a deployment (REDIS_URL set) gets real data.
        upstream, why = resolve_upstream(env.get("UPSTREAM", ""), env.get("REDIS_URL"), env.get("SIM_URL"))
        env["UPSTREAM"] = upstream
        log_event(log, "upstream_selected", upstream=upstream, why=why)
        if not env.get("REDIS_URL"):
            port = int(env.get("EMBEDDED_REDIS_PORT", "0") or 0)
            self.redis = RedisProcess(port=port).start()
            env["REDIS_URL"] = self.redis.url
            log_event(log, "default_in_use", what="embedded_redis", redis_url=self.redis.url,
                      binary=self.redis.binary,
                      note="REDIS_URL is not set: this instance runs its own Redis (nothing persisted, "
                           "not shared with other instances); set REDIS_URL to share one")
        if upstream == "sim" and not env.get("SIM_URL"):
            self.sim = SimProcess().start()
            env["SIM_URL"] = self.sim.url or ""
            log_event(log, "default_in_use", what="simulated_exchange", sim_url=self.sim.url,
                      note="fetching from a simulated exchange started by this instance (every snapshot "
                           "says simulated); set REDIS_URL or UPSTREAM=live for the real market APIs")
        return self

    def stop(self) -> None:
        if self.sim is not None:
            self.sim.stop()
            self.sim = None
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None
