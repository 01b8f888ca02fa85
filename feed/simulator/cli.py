"""``python -m feed sim``: run the simulated exchange until SIGTERM or SIGINT.

On start it prints exactly one JSON line to stdout,
``{"event":"sim_listening","url":"http://127.0.0.1:PORT"}``, so a parent that
asked for ``--port 0`` learns the port. Logs go to stderr as JSON lines.
Rate limits are off unless ``--limits real`` or a limit's own flag (one per
field of :class:`~feed.simulator.limits.Limits`, ``--binance-weight-per-minute
6000``; ``off`` switches one off) says otherwise; ``--demo-key`` and
``--pro-key`` (repeatable) name the CoinGecko keys it accepts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from feed.logs import configure_logging, log_event
from feed.simulator.limits import FIELDS, PRESETS, LimitError, Limits, parse_keys, parse_limits
from feed.simulator.process import SERVICE_KEY_PLAN, SERVICE_KEY_SHA256
from feed.simulator.server import SimulatedExchange

__all__ = ["main", "options"]

_LIMIT_HELP = {
    "coingecko_keyless_per_minute": "keyless CoinGecko calls per client IP per window (real: 5)",
    "coingecko_demo_per_minute": "CoinGecko calls per Demo key per window (real: 100)",
    "coingecko_pro_per_minute": "CoinGecko calls per Pro key per window (real: 500)",
    "coingecko_demo_monthly": "CoinGecko calls per Demo key per month (real: 10000)",
    "coingecko_cache_s": "seconds /coingecko answers are cached; 0: none (default 60)",
    "coingecko_pro_cache_s": "seconds /coingecko-pro answers are cached; 0: none (default 20)",
    "coingecko_global_cache_s": "seconds /global answers are cached on both hosts (default 600)",
    "coingecko_retry_after": "Retry-After seconds on CoinGecko's 429s (default off: no header)",
    "binance_weight_per_minute": "Binance request weight per client IP per window (real: 6000)",
    "binance_ban_s": "the first Binance 418 ban in seconds, doubling per ban up to 3 days (default 120)",
    "finnhub_per_minute": "Finnhub calls per key per window (real: 60)",
    "cmc_per_minute": "CoinMarketCap calls per key per window (real: 30)",
    "window_s": "length of the rate window in seconds, aligned to the clock (default 60)",
}

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m feed sim",
        description="A simulated exchange serving CoinGecko, Binance and Fear & Greed "
                    "shapes under /coingecko, /coingecko-pro, /binance and /feargreed, with call "
                    "counts at /_sim/stats, fault injection at /_sim/faults, limits at "
                    "/_sim/limits and CoinGecko keys at /_sim/keys.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port to bind; 0 picks a free one (default 8090)")
    p.add_argument("--seed", type=int, default=None, help="seed for prices and random faults")
    p.add_argument("--log-level", default="INFO", help="log level for stderr (default INFO)")
    p.add_argument("--limits", choices=tuple(PRESETS), default="off",
                   help="rate limits to start from: off (default; CoinGecko's cache stays on) or real")
    for name, (*_, nullable) in FIELDS.items():
        p.add_argument(_flag(name), dest=name, default=None, metavar="N|off" if nullable else "N",
                       help=_LIMIT_HELP[name])
    p.add_argument("--demo-key", action="append", default=[], metavar="KEY",
                   help="a CoinGecko Demo key to accept (repeatable; default: none)")
    p.add_argument("--pro-key", action="append", default=[], metavar="KEY",
                   help="a CoinGecko Pro key to accept (repeatable; default: none)")
    return p


def options(argv: list[str] | None = None) -> tuple[argparse.Namespace, Limits]:
    """The parsed flags and the limits they ask for; LimitError names a bad limit or key flag."""
    args = _parser().parse_args(argv)
    try:
        parse_keys({"demo": args.demo_key, "pro": args.pro_key})
    except LimitError as exc:
        raise LimitError(f"--demo-key / --pro-key: {exc}") from None
    given: dict[str, object] = {"preset": args.limits}
    for name, (whole, *_) in FIELDS.items():
        raw = getattr(args, name)
        if raw is None:
            continue
        if raw == "off":
            given[name] = None  # refused by parse_limits where off is not an option
            continue
        try:
            given[name] = int(raw) if whole else float(raw)
        except ValueError:
            kind = "an integer" if whole else "a number"
            raise LimitError(f"{_flag(name)} must be {kind} or off, got {raw!r}", name) from None
    try:
        limits = parse_limits(given, Limits())
    except LimitError as exc:
        if exc.field is None:
            raise
        # The message names the JSON field; name the flag a shell user typed.
        raise LimitError(_flag(exc.field) + str(exc).removeprefix(exc.field), exc.field) from None
    return args, limits


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    try:
        args, limits = options(argv)
    except LimitError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"--port must be 0-65535, got {args.port}", file=sys.stderr)
        return 2
    configure_logging(args.log_level.upper())
    demo, pro = list(args.demo_key or ()), list(args.pro_key or ())
    # The exchange an unconfigured Gunicorn master starts accepts the
    # service's own CoinGecko key by its SHA-256 (feed/simulator/process.py):
    # it never holds the key itself, so nothing it serves can give it away.
    digests: dict[str, list[str]] = {}
    own = os.environ.get(SERVICE_KEY_SHA256)
    if own:
        plan = "pro" if os.environ.get(SERVICE_KEY_PLAN, "demo").lower() == "pro" else "demo"
        digests[plan] = [own]
    try:
        sim = SimulatedExchange(args.host, args.port, args.seed, limits=limits,
                                demo_keys=demo, pro_keys=pro, key_digests=digests).start()
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
