"""``python -m lab.node``: one headless node (election + feed, no web server).

It runs under gevent, like a Gunicorn worker, and logs JSON lines to stderr.
The lab and the tests start several of these as election candidates; with
``--fake`` it fetches a built-in random walk instead of the providers, and
``--fetch-delay`` makes each fetch take that long (to pause a leader mid-fetch).
On SIGTERM or SIGINT it releases leadership at once and exits.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from feed.config.settings import Settings  # noqa: E402
from feed.election.identity import make_node_id  # noqa: E402
from feed.errors import ConfigError  # noqa: E402
from feed.logs import configure_logging, log_event  # noqa: E402
from feed.node.node import FeedNode  # noqa: E402
from feed.redisconn.client import connect  # noqa: E402
from lab.fake_source import fake_fetcher  # noqa: E402

log = logging.getLogger("lab.node")  # also when run as __main__

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.node", description=__doc__.split("\n")[0])
    parser.add_argument("--fake", action="store_true", help="fetch a built-in random walk")
    parser.add_argument("--fetch-delay", type=float, default=0.0, help="seconds each fake fetch takes")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print("configuration error: REDIS_URL: must be set for a headless node", file=sys.stderr)
        return 2
    client = connect(settings.redis_url, settings.redis_timeout)
    node_id = settings.node_id or make_node_id(settings.replica_label)
    if args.fake:
        fetch = fake_fetcher(args.fetch_delay, settings.symbols)
        closer = None
    else:
        from feed.providers.fetcher import build_fetcher

        fetcher = build_fetcher(settings, node_id, None)
        fetch, closer = fetcher, fetcher.close

    node = FeedNode(settings, client, fetch, node_id=node_id)
    done = gevent.event.Event()

    def shutdown() -> None:
        log_event(log, "signal_received", node=node.node_id, role=node.role)
        node.stop()
        done.set()

    gevent.signal_handler(signal.SIGTERM, shutdown)
    gevent.signal_handler(signal.SIGINT, shutdown)
    node.start()
    done.wait()
    if closer:
        closer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
