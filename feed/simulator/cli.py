"""``python -m feed sim``: run the simulated exchange until SIGTERM or SIGINT.

On start it prints exactly one JSON line to stdout,
``{"event":"sim_listening","url":"http://127.0.0.1:PORT"}``, so a parent that
asked for ``--port 0`` learns the port. Logs go to stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from feed.logs import configure_logging, log_event
from feed.simulator.server import SimulatedExchange

__all__ = ["main"]

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m feed sim",
        description="A simulated exchange serving CoinGecko, Binance and Fear & Greed "
                    "shapes under /coingecko, /binance and /feargreed, with call counts "
                    "at /_sim/stats and fault injection at /_sim/faults.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port to bind; 0 picks a free one (default 8090)")
    p.add_argument("--seed", type=int, default=None, help="seed for prices and random faults")
    p.add_argument("--log-level", default="INFO", help="log level for stderr (default INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"--port must be 0-65535, got {args.port}", file=sys.stderr)
        return 2
    configure_logging(args.log_level.upper())
    try:
        sim = SimulatedExchange(args.host, args.port, args.seed).start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log_event(log, "sim_signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(json.dumps({"event": "sim_listening", "url": sim.url}, separators=(",", ":")), flush=True)
    try:
        # A timed wait keeps the main thread returning to the interpreter,
        # where the signal handlers run.
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0
