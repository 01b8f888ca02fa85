"""What every benchmark shares: the C load generator, the servers under test,
the publisher, and the figures of the machine.

Servers under test, each run by Gunicorn with gevent workers on one Redis:

* ``ours``     the service (``gunicorn -c gunicorn.conf.py``);
* ``ours-1thread``  the same with WS_SEND_THREADS=1 (one thread writes a broadcast);
* ``naive``    bench/baselines/naive_app.py: flask-sock, ``ws.send`` per client;
* ``socketio`` bench/baselines/socketio_app.py: Flask-SocketIO + Redis queue.

A broadcast is injected where the leader's write would put it: on the Redis
updates channel (ours, naive) or through Flask-SocketIO's queue (socketio).
Its payload carries ``bench_t`` (the publish time) and ``bench_id``; the
load generator stamps each arrival, so latency is publish -> client receipt.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from feed.redisconn.embedded import RedisProcess, free_port  # noqa: E402
from feed.simulator.process import SimProcess  # noqa: E402
from lab.cluster import ServiceInstance  # noqa: E402
from lab.procs import LoggedProcess, child_env  # noqa: E402

BUILD = ROOT / "bench" / ".build"
IMPLS = ("ours", "ours-1thread", "naive", "socketio")


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "command": _command(),
    }


def _command() -> str:
    """How this benchmark was started, as one would type it from the repository."""
    script = Path(sys.argv[0])
    head = [".venv/bin/python", *sys.argv]
    if script.parent == ROOT / "bench":
        head = [".venv/bin/python", "-m", f"bench.{script.stem}", *sys.argv[1:]]
    return " ".join(head)


def build_loadgen() -> Path:
    """Compile bench/loadgen.c (gcc, zlib) unless the binary is up to date."""
    src = ROOT / "bench" / "loadgen.c"
    out = BUILD / "loadgen"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(out), str(src), "-lz"], check=True)
    return out


class Loadgen:
    """One loadgen process: ``count`` clients for ``seconds``, then its report."""

    def __init__(self, port: int, count: int, seconds: float, *, path: str = "/ws",
                 deflate: bool = False, socketio: bool = False, reconnect: bool = False,
                 rate: int = 2000) -> None:
        args = [str(build_loadgen()), "127.0.0.1", str(port), path, str(count), str(seconds),
                "--connect-rate", str(rate)]
        if deflate:
            args.append("--deflate")
        if socketio:
            args.append("--socketio")
        if reconnect:
            args.append("--reconnect")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)

    def result(self, timeout: float = 600) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=timeout)
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        summary = next(r for r in rows if r.get("summary"))
        summary["messages_by_id"] = {r["bench_id"]: r for r in rows if "bench_id" in r}
        return summary


def envelope(bench_id: int, size: int = 2048) -> dict[str, Any]:
    """A snapshot envelope of about ``size`` bytes carrying the publish time."""
    env: dict[str, Any] = {
        "type": "snapshot", "epoch": 9 * 10**14, "seq": bench_id + 1, "leader": "bench",
        "fetched_at": "2026-01-01T00:00:00.000Z",
        "data": {"bench_t": time.time(), "bench_id": bench_id, "pad": ""},
    }
    env["data"]["pad"] = "x" * max(0, size - len(json.dumps(env)) - 20)
    return env


@dataclass
class Server:
    """A server under test: its port, its worker pids, a way to publish to it."""

    impl: str
    port: int
    procs: list[Any]
    redis_url: str
    worker_pids: list[int] = field(default_factory=list)
    path: str = "/ws"
    _sio: Any = None

    @property
    def socketio(self) -> bool:
        return self.impl == "socketio"

    def publish(self, bench_id: int, size: int = 2048) -> None:
        env = envelope(bench_id, size)
        if self.impl == "socketio":
            if self._sio is None:
                from flask_socketio import SocketIO

                self._sio = SocketIO(message_queue=self.redis_url, channel="bench-socketio")
            env["data"]["bench_t"] = time.time()
            self._sio.emit("snapshot", env)
        else:
            client = redis.Redis.from_url(self.redis_url)
            env["data"]["bench_t"] = time.time()
            client.publish("websocket:updates", json.dumps(env, separators=(",", ":")))
            client.close()

    def workers(self) -> list[psutil.Process]:
        return [psutil.Process(p) for p in self.worker_pids]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.workers())

    def cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.workers())

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


def start_server(impl: str, redis_url: str, sim_url: str, *, workers: int = 1,
                 env: dict[str, str] | None = None, name: str = "bench") -> Server:
    """Start ``impl`` with ``workers`` gevent workers; returns when they serve."""
    port = free_port()
    if impl in ("ours", "ours-1thread"):
        # No fetching during the measurement: the benchmark publishes.
        settings = {"FETCH_INTERVAL_SECONDS": "3600", "WS_PING_INTERVAL_SECONDS": "0",
                    "WS_MAX_CLIENTS": "20000", **(env or {})}
        if impl == "ours-1thread":
            settings["WS_SEND_THREADS"] = "1"
        inst = ServiceInstance(name, workers=workers, redis_url=redis_url, sim_url=sim_url,
                               env=settings, port=port).wait_ready(60)
        return Server(impl, port, [inst], redis_url, list(inst.nodes.values()))
    module = {"naive": "bench.baselines.naive_app:app", "socketio": "bench.baselines.socketio_app:app"}[impl]
    args = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(workers), "-b", f"127.0.0.1:{port}",
            "--worker-connections", "20000", "--graceful-timeout", "3", "--no-control-socket",
            "--log-level", "warning", module]
    proc = LoggedProcess(args, child_env(REDIS_URL=redis_url, **(env or {})), name=impl)
    deadline = time.monotonic() + 60
    parent = psutil.Process(proc.pid)
    path = "/socket.io/?EIO=4&transport=websocket" if impl == "socketio" else "/ws"
    while True:
        kids = parent.children()
        if len(kids) >= workers and _accepts(port):
            time.sleep(1.0)  # let every worker finish importing
            return Server(impl, port, [proc], redis_url, [k.pid for k in parent.children()], path=path)
        if time.monotonic() > deadline or not proc.alive():
            proc.stop()
            raise RuntimeError(f"{impl} did not start:\n" + "\n".join(proc.raw[-30:]))
        time.sleep(0.2)


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Backends:
    """A Redis and the simulated exchange for a benchmark run."""

    def __enter__(self) -> Backends:
        self.redis = RedisProcess().start()
        self.sim = SimProcess().start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sim.stop()
        self.redis.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows``; ``columns`` are (key, header)."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = []
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body])
