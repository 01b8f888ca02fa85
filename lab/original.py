"""The original service re-enacted as a cluster: Redis, the simulated exchange, N ``bench.original`` nodes.

Each node runs the original's loop and its upstream calls (bench/original.py
with ``--sim``); the exchange counts the HTTP calls by provider, and each
node prints the TAAPI attempts it cannot send. Used by notebook 01 beside a
:class:`lab.cluster.Cluster` of the service, with the same exchange.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from typing import Any

import redis

from feed.simulator.server import SimulatedExchange
from lab.procs import LabRedis, LoggedProcess, child_env, register, unregister
from lab.redis_clock import redis_now

__all__ = ["OriginalCluster"]


class OriginalCluster:
    """``nodes`` original nodes with one shared Redis; ``election=False``: every node fetches."""

    def __init__(self, nodes: int = 3, *, election: bool = True, interval: float = 5.0, ttl: int = 10,
                 cache_scale: float = 1.0, finnhub_key: str | None = None, sim_seed: int | None = None,
                 name: str = "orig", fault: dict[str, Any] | None = None) -> None:
        self.size = nodes
        self.election = election
        self.interval = interval
        self.ttl = ttl
        self.cache_scale = cache_scale
        self.finnhub_key = finnhub_key
        self.name = name
        self.fault = fault  # injected before the first tick: the source fails from the start
        self.sim = SimulatedExchange(port=0, seed=sim_seed)
        self.redis: LabRedis | None = None
        self.nodes: list[LoggedProcess] = []
        self._marks: list[int] = []

    def start(self) -> OriginalCluster:
        register(self)
        try:
            self.redis = LabRedis(port=0).start()
            self.sim.start()
            if self.fault:
                self.sim.inject(**self.fault)
            for i in range(self.size):
                args = [sys.executable, "-m", "bench.original", "--redis", self.redis.url,
                        "--sim", self.sim.url, "--interval", str(self.interval), "--ttl", str(self.ttl),
                        "--cache-scale", str(self.cache_scale), "--node", f"{self.name}{i + 1}"]
                if not self.election:
                    args.append("--no-election")
                if self.finnhub_key:
                    args += ["--finnhub-key", self.finnhub_key]
                self.nodes.append(LoggedProcess(args, child_env(), name=f"{self.name}{i + 1}"))
            for node in self.nodes:
                node.wait_for("started", 30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        unregister(self)
        for node in self.nodes:
            node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        if self.redis is not None:
            self.redis.close()
        self.sim.stop()

    close = stop

    def __enter__(self) -> OriginalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counts(self) -> None:
        """Start a counting window: the exchange's counts and each node's printed attempts."""
        self.sim.reset_stats()
        self._marks = [len(node.lines) for node in self.nodes]

    def calls_by_provider(self) -> dict[str, int]:
        """Upstream calls since :meth:`reset_counts`: HTTP calls the exchange saw, and TAAPI attempts."""
        counts: Counter[str] = Counter(self.sim.stats()["by_provider"])
        for node, mark in zip(self.nodes, self._marks or [0] * len(self.nodes), strict=True):
            counts.update(e["provider"] for e in node.lines[mark:]
                          if e.get("event") == "call" and e.get("provider") == "taapi")
        return dict(counts)

    def align(self, fraction: float = 0.5) -> None:
        """Wait until ``fraction`` of an interval after the newest tick's write (the leader's, or any node's).

        A counting window that starts there and lasts a whole number of
        intervals holds exactly one tick of the leader per interval.
        """
        assert self.redis is not None, "not started"
        client = redis.Redis.from_url(self.redis.url, socket_timeout=5)
        try:
            raw = client.get("latest_market_data")
            if raw is None:
                return
            written = json.loads(raw)["written"]
            time.sleep((written + fraction * self.interval - redis_now(client)) % self.interval)
        finally:
            client.close()

    def calling_nodes(self) -> int:
        return len(self.sim.stats()["by_node"])

    def inject(self, **fault: Any) -> None:
        self.sim.inject(**fault)
