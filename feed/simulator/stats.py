"""Call counts of the simulated exchange: by path, calling node, provider, status and client IP.

Only market calls are counted; the control endpoints under ``/_sim`` are not,
so a test can read the counts without changing them. Both CoinGecko hosts
count as provider ``coingecko`` (``by_path`` tells them apart).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from typing import Any

from feed.times import iso_utc

__all__ = ["CallStats"]


class CallStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.started_at = time.time()
            self.total = 0
            self.by_path: Counter[str] = Counter()
            self.by_node: Counter[str] = Counter()
            self.by_provider: Counter[str] = Counter()
            self.by_node_and_path: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self.by_status: Counter[str] = Counter()
            self.by_provider_status: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self.by_ip: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()
            self.limits: Counter[str] = Counter()
            self.cache: Counter[str] = Counter()
            self.user_agents: Counter[str] = Counter()
            self.connections = 0

    def count_call(self, provider: str, path: str, node: str, user_agent: str, ip: str = "unknown") -> None:
        with self._lock:
            self.total += 1
            self.by_ip[ip] += 1
            self.by_path[path] += 1
            self.by_node[node] += 1
            self.by_provider[provider] += 1
            self.by_node_and_path[node][path] += 1
            self.user_agents[user_agent[:100]] += 1

    def count_status(self, status: int, provider: str = "unknown") -> None:
        with self._lock:
            self.by_status[str(status)] += 1
            self.by_provider_status[provider][str(status)] += 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def count_limit(self, kind: str) -> None:
        """An answer a limit gave (``binance_429``, ``coingecko_401_10010``, ...)."""
        with self._lock:
            self.limits[kind] += 1

    def count_cache(self, hit: bool) -> None:
        with self._lock:
            self.cache["hits" if hit else "misses"] += 1

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total,
                "by_path": dict(self.by_path),
                "by_node": dict(self.by_node),
                "by_node_and_path": {n: dict(c) for n, c in self.by_node_and_path.items()},
                "by_provider": dict(self.by_provider),
                "by_status": dict(self.by_status),
                "by_provider_status": {p: dict(c) for p, c in self.by_provider_status.items()},
                "by_ip": dict(self.by_ip),
                "faults_applied": dict(self.faults),
                "limits_applied": dict(self.limits),
                "cache": {"hits": self.cache["hits"], "misses": self.cache["misses"]},
                "user_agents": dict(self.user_agents),
                "connections": self.connections,
                "started_at": iso_utc(self.started_at),
            }
