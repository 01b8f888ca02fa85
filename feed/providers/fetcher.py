"""The fetcher: every configured provider called at once, merged into one snapshot.

Calls run concurrently (threads, or greenlets once gevent has patched the
process) so one stalled provider costs its own data, not the others'. The
whole fetch is bounded by a budget derived from the fetch interval; every
timeout and retry inside it is clamped to what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from feed.config.settings import Settings
from feed.errors import ConfigError, FetchFailed
from feed.logs import log_event
from feed.providers import binance, coingecko, feargreed
from feed.providers.snapshot import CallResult, assemble, has_data
from feed.providers.transport import Call, CallFailed, HttpClient, OnCall

__all__ = ["PROVIDERS", "Fetcher", "base_urls", "build_fetcher", "fetch_budget"]

log = logging.getLogger(__name__)

PROVIDERS = {m.NAME: m for m in (coingecko, binance, feargreed)}
_OVERRIDE = {"coingecko": "coingecko_url", "binance": "binance_url", "feargreed": "feargreed_url"}
# Extra time a worker gets past the deadline to report before it is given up.
JOIN_GRACE = 0.5


def base_urls(settings: Settings) -> dict[str, str]:
    """Base URL per configured provider: override, else simulator or live API."""
    urls: dict[str, str] = {}
    for name in settings.providers:
        override = getattr(settings, _OVERRIDE[name])
        if override:
            urls[name] = override.rstrip("/")
        elif settings.upstream == "live":
            urls[name] = PROVIDERS[name].LIVE_URL
        elif settings.sim_url:
            urls[name] = f"{settings.sim_url.rstrip('/')}/{name}"
        else:
            raise ConfigError(
                "SIM_URL",
                "UPSTREAM=sim (the default) needs the URL of a running simulated exchange, "
                "e.g. SIM_URL=http://127.0.0.1:8090 (start one with: python -m feed sim "
                "--port 8090); or set UPSTREAM=live for the public APIs",
            )
    return urls


def fetch_budget(settings: Settings) -> float:
    """How long one whole fetch may take: well inside the interval, at least 1 s."""
    return max(1.0, 0.8 * settings.fetch_interval)


class Fetcher:
    """Callable returning one snapshot ``data`` dict; see :func:`build_fetcher`."""

    def __init__(
        self,
        client: HttpClient,
        calls: list[Call],
        symbols: tuple[str, ...],
        providers: tuple[str, ...],
        *,
        budget: float,
        thread_class: type = threading.Thread,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget <= 0:
            raise ValueError("budget must be positive")
        self.client = client
        self.calls = list(calls)
        self.symbols = symbols
        self.providers = providers
        self.budget = budget
        self.thread_class = thread_class
        self.clock = clock
        self.last: dict | None = None  # the last snapshot data, for inspection
        self._last_missing: list[str] = []

    @property
    def node_id(self) -> str:
        return self.client.node_id

    @property
    def stats(self) -> Counter[tuple[str, str]]:
        """Calls so far by ``(provider, outcome)``."""
        return self.client.stats

    def __call__(self) -> dict:
        deadline = self.clock() + self.budget
        results: list[CallResult | None] = [None] * len(self.calls)

        def work(i: int, call: Call) -> None:
            try:
                results[i] = CallResult(call, value=self.client.run(call, deadline))
            except CallFailed as exc:
                results[i] = CallResult(call, error=exc)
            except Exception as exc:  # one broken call must not sink the fetch
                log.exception("upstream call crashed", extra={"fields": {
                    "event": "upstream_call_crashed", "node": self.node_id,
                    "provider": call.provider}})
                results[i] = CallResult(call, error=CallFailed("invalid", repr(exc)[:200]))

        threads = []
        for i, call in enumerate(self.calls):
            t = self.thread_class(target=work, args=(i, call), daemon=True,
                                  name=f"fetch-{call.provider}-{call.part}")
            t.start()
            threads.append(t)
        for t in threads:
            t.join(max(0.0, deadline - self.clock()) + JOIN_GRACE)
        done = [r if r is not None else
                CallResult(call, error=CallFailed("timeout", "no answer by the fetch deadline"))
                for call, r in zip(self.calls, list(results), strict=True)]
        data = assemble(self.symbols, self.providers, done)
        if not has_data(data):
            failures = {p: s.get("error", "no data") for p, s in data["sources"].items()}
            raise FetchFailed(
                "every upstream provider failed: "
                + ", ".join(f"{p}={why}" for p, why in failures.items()),
                failures=failures,
            )
        if data["missing"] != self._last_missing:
            # Logged when what is missing changes, not on every fetch: a part
            # no configured provider supplies would otherwise log forever.
            self._last_missing = data["missing"]
            log_event(log, "snapshot_partial" if data["missing"] else "snapshot_complete",
                      node=self.node_id, missing=data["missing"],
                      failed={p: s["error"] for p, s in data["sources"].items() if not s["ok"]})
        self.last = data
        return data

    def close(self) -> None:
        """Close the session (pooled connections); the fetcher is unusable after."""
        self.client.close()


def build_fetcher(settings: Settings, node_id: str, on_call: OnCall | None = None) -> Fetcher:
    """The fetcher for ``settings``; raises ConfigError naming SIM_URL if it is needed."""
    urls = base_urls(settings)
    client = HttpClient(
        node_id,
        connect_timeout=settings.http_connect_timeout,
        read_timeout=settings.http_read_timeout,
        retries=settings.http_retries,
        max_bytes=settings.max_response_bytes,
        on_call=on_call,
    )
    calls: list[Call] = []
    for name in settings.providers:
        calls += PROVIDERS[name].calls(urls[name], settings.symbols)
    log_event(log, "fetcher_ready", node=node_id, upstream=settings.upstream,
              providers=list(settings.providers), symbols=list(settings.symbols),
              urls=urls, budget_s=fetch_budget(settings))
    return Fetcher(client, calls, settings.symbols, settings.providers,
                   budget=fetch_budget(settings))
