"""``python -m feed COMMAND``: operator and developer commands.

    status     the cluster view, read straight from Redis (REDIS_URL)
    sim        run the simulated exchange
    reap       release the lock held by a dead worker process (run by the Gunicorn master)
    preflight  check that the Redis in REDIS_URL can be used (run by the Gunicorn master)
    config     the settings reference (docs/CONFIGURATION.md's tables), or check the environment
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "status": ("feed.server.cluster", "print who leads, the epoch and recent leadership events"),
    "sim": ("feed.simulator.cli", "run the simulated exchange (python -m feed sim --port 8090)"),
    "reap": ("feed.election.reaper", "release the lock of a dead worker (run by the Gunicorn master)"),
    "preflight": ("feed.redisconn.preflight", "check that REDIS_URL can be used (run by the master)"),
    "config": ("feed.config.reference", "print the settings reference, or --check the environment"),
}


def usage() -> str:
    lines = ["usage: python -m feed COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
