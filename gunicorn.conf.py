"""Gunicorn settings for marketfeed: gevent workers, one election node each.

Start with:  gunicorn -c gunicorn.conf.py
Imports stay light at module level: the master must not import redis,
requests or ssl before gevent patches the workers it forks. Heavy modules
are imported inside the hooks. The variables read here are declared with
every other setting (feed/config/settings.py); an unparsable one falls back
to its default here and is then named by the master's full validation,
which stops the start.
"""

import os

from feed.config.settings import env_setting

# --- the app -------------------------------------------------------------
# The factory is called in each worker after fork (never --preload: each
# worker must create its own Redis connections and its own node).
wsgi_app = "app:create_app()"
preload_app = False

# --- listening -----------------------------------------------------------
# HOST and PORT are the original service's variables (Railway sets PORT).
# Default 0.0.0.0:8081, as the original; an IPv6 host goes in brackets.
_host = env_setting("host")
bind = [f"[{_host}]:{env_setting('port')}" if ":" in _host else f"{_host}:{env_setting('port')}"]

# --- workers -------------------------------------------------------------
# One process per core is typical; each is an election candidate and serves
# its own WebSocket clients. WEB_CONCURRENCY is the usual platform variable.
workers = env_setting("web_concurrency")
worker_class = "gevent"
# Open WebSockets per worker (each is one greenlet). Sized for thousands.
worker_connections = env_setting("worker_connections")
# Long-lived WebSockets are not "requests" that time out.
timeout = 30
keepalive = 5

# Gunicorn's runtime control socket defaults to one path per user; several
# instances on one host (the lab, the tests) would fight over it, and the
# service needs no runtime control.
control_socket_disable = True

# --- shutdown ------------------------------------------------------------
# After SIGTERM a worker releases leadership at once and closes its clients
# with 1001 (feed/server/worker.py), so it normally exits in about a second. This is
# only the upper bound before Gunicorn kills it; keep it below the platform's
# draining time (railway.toml: drainingSeconds).
graceful_timeout = env_setting("graceful_timeout")

# --- logging -------------------------------------------------------------
# One JSON object per line, like the app's own logs. The access log is on
# (logconfig_dict turns it on), as one structured http_request event per
# request with credential-like query values masked (feed/server/request_log.py);
# the formatter also masks every secret setting's value in any line.
loglevel = env_setting("log_level")
accesslog = None
logger_class = "feed.server.request_log.RequestLogger"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "feed.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
    },
}


# --- master hooks ----------------------------------------------------------
def on_starting(server):
    """Validate settings, start what an unconfigured instance needs, check Redis."""
    import subprocess
    import sys

    from feed.config.settings import Settings
    from feed.errors import ConfigError
    from feed.server.embedded import EmbeddedServices

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        server.log.error("configuration error: %s", exc)
        raise SystemExit(2) from None
    for variable, instead in settings.unused():
        server.log.warning("%s is set but not used", variable, extra={"fields": {
            "event": "setting_not_used", "setting": variable, "instead": instead}})
    server.marketfeed_embedded = EmbeddedServices().start()
    if settings.redis_url:
        # A Redis that refuses our password or our commands fails the start
        # (so a deploy fails visibly and the old one keeps serving); one that
        # is only unreachable now does not. In a process of its own: the
        # master must not import redis (feed/redisconn/preflight.py).
        try:
            check = subprocess.run([sys.executable, "-m", "feed", "preflight"], capture_output=True,
                                   text=True, timeout=max(10.0, 4 * settings.redis_timeout + 5),
                                   cwd=os.path.dirname(os.path.abspath(__file__)), check=False)
        except subprocess.TimeoutExpired:
            server.log.warning("the Redis check did not finish; starting anyway")
            return
        message = (check.stderr.strip().splitlines() or [""])[-1]
        if check.returncode == 3:
            server.log.error("%s", message, extra={"fields": {"event": "start_refused"}})
            server.marketfeed_embedded.stop()
            raise SystemExit(3)
        if check.returncode != 0:
            server.log.warning("%s", message, extra={"fields": {"event": "redis_not_reachable_yet"}})
        elif message.startswith("warning:"):
            # Usable, but without presence: a dead instance's lock runs out on its TTL.
            server.log.warning("%s", message, extra={"fields": {"event": "presence_unavailable"}})


def child_exit(server, worker):
    """A worker ended (a crash, or a normal stop): clean up after it."""
    import sys

    from feed.election.identity import node_prefix

    # If the dead worker led, hand over now rather than when its lock expires
    # (feed/election/reaper.py). A separate process: the master must not import redis.
    # While the master is stopping (its listeners closed) workers exit after
    # releasing their lock themselves, so there is nothing to reap.
    if getattr(server, "LISTENERS", None):
        from feed.child_process import spawn

        replica = os.environ.get("RAILWAY_REPLICA_ID") or os.environ.get("RAILWAY_INSTANCE_ID")
        prefix = node_prefix(replica, worker.pid)
        spawn([sys.executable, "-m", "feed", "reap", "--node-prefix", prefix],
              cwd=os.path.dirname(os.path.abspath(__file__)))
    # Drop the dead worker's live gauges from the aggregated metrics.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    embedded = getattr(server, "marketfeed_embedded", None)
    if embedded is not None:
        embedded.stop()


# --- worker hooks ------------------------------------------------------------
def post_worker_init(worker):
    # Here gevent has patched the process and the app is loaded: start the node.
    from feed.server.worker import start_worker

    start_worker(worker)


def worker_int(worker):
    from feed.server.worker import stop_worker

    stop_worker(worker)


def worker_exit(server, worker):
    from feed.server.worker import stop_worker

    stop_worker(worker)
