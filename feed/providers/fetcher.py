"""The fetch loop: one tick of the leader's schedule, within the cluster's upstream budget.

Every ``FETCH_INTERVAL_SECONDS`` the leader asks for a snapshot. The loop
asks each provider's adapter (feed/providers/adapters.py) for its calls and
their cadence, calls only the endpoints that are due and that no block
forbids, concurrently (threads, or greenlets once gevent has patched the
process) within a deadline derived from the fetch interval, and settles
each outcome: a good answer goes to the section store
(feed/providers/sections.py), a refusal becomes a block, a failure a
back-off. Then it assembles the snapshot from the store: the newest good
value of every section, fresh or kept.

What it learns goes to the budget (:mod:`feed.providers.budget`), which the
leader writes through its fence to Redis: a 429's Retry-After, a 418 ban, a
451 from a restricted region, a 403, a rejected key; each endpoint's next
call; the calls counted per minute, day and month; the symbols each
provider lists. A new leader starts from there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import redis

from feed.config.settings import Settings
from feed.election.term import Term
from feed.envelope import Envelope
from feed.errors import ConfigError, FetchFailed
from feed.logs import log_event
from feed.observer import Observer, notify
from feed.providers.adapters import ADAPTERS, Adapter, Context, month_end
from feed.providers.budget import Block, Budget, BudgetStore, MemoryBudgetStore
from feed.providers.sections import SectionStore
from feed.providers.snapshot import (
    BASE_PARTS,
    PARTS,
    CallResult,
    Freshness,
    ProviderStatus,
    describe,
    has_data,
)
from feed.providers.transport import Call, CallFailed, HttpClient, Reply
from feed.redisconn.url import redact_url

__all__ = ["BLOCKS", "Fetcher", "Plan", "base_urls", "build_fetcher", "fetch_budget"]

log = logging.getLogger(__name__)

# Extra time a worker gets past the deadline to report before it is given up.
JOIN_GRACE = 0.5
# How long a refusal keeps a provider out: (first block, longest), seconds.
# A 429 or 418 names its own time (Retry-After); these are for when it does not.
# Each further incident in a row doubles it; a good answer starts it over.
# docs/PROVIDERS.md's back-off table gives the same numbers (a test reads both).
BLOCKS = {
    "rate_limited": (60.0, 3600.0),
    "banned": (120.0, 3 * 86400.0 + 3600.0),  # Binance's bans: 2 minutes to 3 days, honoured in full
    "restricted": (3600.0, 86400.0),
    "forbidden": (600.0, 6 * 3600.0),
    "unauthorized": (3600.0, 6 * 3600.0),
    "quota": (0.0, 31 * 86400.0),
}


def base_urls(settings: Settings) -> dict[str, str]:
    """Base URL per configured provider: override, else simulator or live API."""
    urls: dict[str, str] = {}
    for name in active_providers(settings):
        adapter = ADAPTERS[name]
        override = getattr(settings, adapter.url_setting)
        if override:
            urls[name] = override.rstrip("/")
        elif settings.upstream_mode == "live":
            urls[name] = adapter.live_base(settings)
        elif settings.sim_url:
            urls[name] = f"{settings.sim_url.rstrip('/')}/{adapter.sim_path(settings)}"
        else:
            raise ConfigError(
                "SIM_URL",
                "UPSTREAM=sim needs the URL of a running simulated exchange, "
                "e.g. SIM_URL=http://127.0.0.1:8090 (start one with: python -m feed sim "
                "--port 8090); or set UPSTREAM=live for the public APIs",
            )
    return urls


#: Sections several calls of one tick add to, instead of replacing.
MERGED_PARTS = ("prices", "indices")


def active_providers(settings: Settings) -> tuple[str, ...]:
    """The configured providers that have something to do (Finnhub needs its key)."""
    return tuple(p for p in settings.providers if ADAPTERS[p].available(settings))


def fetch_budget(settings: Settings) -> float:
    """How long one whole fetch may take: well inside the interval, at least 1 s."""
    return max(1.0, 0.8 * settings.fetch_interval)


@dataclass(frozen=True)
class Plan:
    """What to fetch, from where, how often: everything :class:`Fetcher` takes from settings."""

    symbols: tuple[str, ...]
    providers: tuple[str, ...]
    urls: dict[str, str]
    fetch_interval: float
    intervals: dict[str, float]  # by provider, as configured
    section_max_age: float
    simulated: bool = False  # the simulated exchange: every snapshot says so
    #: Each provider's adapter, made for a fetcher's context.
    adapters: dict[str, Callable[[Context], Adapter]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Plan:
        urls = base_urls(settings)
        providers = active_providers(settings)
        return cls(
            symbols=settings.symbols, providers=providers, urls=urls,
            fetch_interval=settings.fetch_interval,
            intervals={p: ADAPTERS[p].interval_of(settings) for p in providers},
            section_max_age=settings.section_max_age, simulated=settings.simulated,
            adapters={p: partial(ADAPTERS[p].from_settings, settings=settings, url=urls[p])
                      for p in providers})


class Fetcher:
    """Callable ``fetcher(term, previous) -> data``; see the module docstring.

    ``term`` is the leader's (its budget writes go through that fence);
    ``previous`` the newest snapshot the node holds, whose sections are kept
    when their providers are not due, blocked or failing.
    """

    def __init__(self, client: HttpClient, plan: Plan, store: BudgetStore | None = None, *,
                 deadline: float, thread_class: type = threading.Thread,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sections: SectionStore | None = None) -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.client = client
        self.plan = plan
        self.budget = Budget(store or MemoryBudgetStore(), wall)
        self.deadline = deadline
        self.thread_class = thread_class
        self.clock = clock
        self.wall = wall
        self.sections = sections or SectionStore()
        self.status: dict[str, ProviderStatus] = {p: ProviderStatus() for p in plan.providers}
        self.last: dict | None = None  # the last snapshot data, for inspection
        self._last_missing: list[str] = []
        self._deadline_at = 0.0  # this tick's deadline (monotonic)
        self._adopted: Term | None = None  # the term whose previous snapshot was adopted
        ctx = Context(node_id=client.node_id, budget=self.budget, symbols=plan.symbols, wall=wall,
                      base=self._base,
                      run=lambda calls: self._run(calls, self._deadline_at),
                      skipped=lambda provider: self.client.record(provider, "skipped", 0.0))
        self.adapters: dict[str, Adapter] = {name: plan.adapters[name](ctx) for name in plan.providers}
        # The sections besides prices these providers supply, in the snapshot's order.
        supplied = {c.part for a in self.adapters.values() for c in a.calls()} | set(BASE_PARTS)
        self.parts = tuple(p for p in PARTS[1:] if p in supplied)

    @property
    def node_id(self) -> str:
        return self.client.node_id

    @property
    def stats(self) -> Counter[tuple[str, str]]:
        """Calls so far by ``(provider, outcome)``."""
        return self.client.stats

    def blocked_for(self, provider: str) -> float:
        """Seconds until ``provider`` may be called again (0: now)."""
        block = self.budget.blocked(provider, self._base(provider))
        return 0.0 if block is None else max(0.0, block.until - self.wall())

    # --- one tick ---------------------------------------------------------------
    def __call__(self, term: Term | None = None, previous: Envelope | None = None) -> dict:
        term = term or Term(self.node_id, 0)
        now = self.wall()
        self.budget.begin(term)
        if self._adopted != term:
            self._adopted = term
            self.sections.adopt(previous, self.plan.providers)
        self._deadline_at = self.clock() + self.deadline
        results = self._run_tick(now)
        for result in results:
            self._settle(result, now)
        try:
            if not self.budget.save():
                log_event(log, "budget_write_refused", logging.DEBUG, node=self.node_id, epoch=term.epoch)
        except redis.RedisError as exc:
            # Kept pending for the next tick's write; the snapshot is still worth trying.
            log_event(log, "budget_write_failed", logging.WARNING, node=self.node_id, epoch=term.epoch,
                      error=f"{type(exc).__name__}: {exc}")
        statuses = self._statuses(now)
        observer: Observer = self.client.observer
        for provider, st in statuses.items():
            blocked, calls = st.blocked_for_s or 0.0, self.budget.calls(provider)
            notify(lambda p=provider, b=blocked, c=calls: observer.upstream_state(p, b, c), "upstream_state")
        data = self.sections.assemble(self.plan.symbols, self.plan.providers, self._freshness(now),
                                      statuses, now, simulated=self.plan.simulated, parts=self.parts)
        attempted = [r for r in results if r.call.part != "symbols"]
        if not has_data(data) or (attempted and all(r.error is not None for r in attempted)):
            failures = {p: s.get("error") or "no data" for p, s in data["sources"].items() if not s["ok"]}
            raise FetchFailed("every upstream call failed: "
                              + ", ".join(f"{p}={why}" for p, why in failures.items()), failures=failures,
                              data=data if has_data(data) else None)
        if data["missing"] != self._last_missing:
            # Logged when what is missing changes, not on every fetch: a part
            # no configured provider supplies would otherwise log forever.
            self._last_missing = data["missing"]
            log_event(log, "snapshot_partial" if data["missing"] else "snapshot_complete",
                      node=self.node_id, missing=data["missing"],
                      failed={p: s["error"] for p, s in data["sources"].items() if not s["ok"]})
        self.last = data
        return data

    def next_due(self, term: Term) -> float | None:
        """When the first endpoint is next due by the cluster's budget (unix seconds; None: no call known).

        The leader anchors a new term's schedule here, not on the last
        snapshot: the budget's next-call times are written only by fetches
        (through the fence), so neither a publish between fetches nor a
        change of leader moves them. Loads the budget if ``term`` is new;
        raises RedisError if it cannot.
        """
        self.budget.begin(term)
        now = self.wall()
        times: list[float] = []
        for adapter in self.adapters.values():
            if self.budget.blocked(adapter.name, self._base(adapter.name)) is not None:
                continue
            times += [self._when_due(adapter, call, now) for call in adapter.calls()]
        return min(times) if times else None

    # --- what to call -------------------------------------------------------------
    def _due_calls(self, adapter: Adapter, now: float) -> list[Call]:
        """``adapter``'s calls due now; blocked ones count as skipped."""
        due = []
        name = adapter.name
        for call in adapter.calls():
            refusal = adapter.refusal(now)
            if refusal is not None and self.budget.blocked(name, self._base(name)) is None:
                self._block(call, refusal, now)
            if self.budget.blocked(name, self._base(name)) is not None:
                self.client.record(name, "skipped", 0.0)
                continue
            if self._when_due(adapter, call, now) <= now + 0.05:  # a tick may begin a hair early
                due.append(call)
        return due

    def _when_due(self, adapter: Adapter, call: Call, now: float) -> float:
        """When ``call`` is next due: the budget's time, else its kept section's age, else now."""
        when = self.budget.next_due(call.endpoint)
        if when is not None:
            return when
        kept = self.sections.get(call.endpoint)
        return kept.fetched_at + adapter.interval(call.endpoint, now) if kept else now

    def _interval(self, endpoint: str, now: float) -> float:
        adapter = self.adapters.get(endpoint.partition(".")[0])
        return adapter.interval(endpoint, now) if adapter is not None else self.plan.fetch_interval

    def _freshness(self, now: float) -> dict[str, Freshness]:
        out = {}
        for endpoint in self.sections.endpoints():
            interval = self._interval(endpoint, now)
            out[endpoint] = Freshness(stale_after=interval + self.plan.fetch_interval + 1.0,
                                      max_age=max(self.plan.section_max_age, 2 * interval))
        return out

    # --- calling ----------------------------------------------------------------------
    def _run_tick(self, now: float) -> list[CallResult]:
        """This tick's calls, concurrently: one job per provider (its preparation, then its due calls)."""
        jobs = list(self.adapters.values())
        out: list[list[CallResult]] = [[] for _ in jobs]

        def work(i: int) -> None:
            adapter = jobs[i]
            failed, recovered = adapter.prepare(now)
            for part in recovered:
                self._recovered(adapter.name, part)
            if any(r.error is not None and r.error.outcome in BLOCKS for r in failed):
                # Refused while preparing (a 451 on the lookup): this tick asks it nothing more.
                out[i] = failed
                return
            out[i] = failed + self._run(self._due_calls(adapter, now), self._deadline_at)

        threads = [self.thread_class(target=work, args=(i,), daemon=True, name=f"fetch-{jobs[i].name}")
                   for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, self._deadline_at - self.clock()) + 2 * JOIN_GRACE)
        return [r for results in out for r in results]

    def _run(self, calls: list[Call], deadline: float) -> list[CallResult]:
        results: list[CallResult | None] = [None] * len(calls)

        def work(i: int, call: Call) -> None:
            try:
                # An endpoint already failing gets one probe per due time, not a burst of
                # retries: its back-off is what spaces the calls (a half-open breaker).
                probe = self.budget.failures(call.endpoint) > 0
                reply = self.client.run(call, deadline, retries=0 if probe else None)
                results[i] = CallResult(call, value=reply)
            except CallFailed as exc:
                results[i] = CallResult(call, error=exc)
            except Exception as exc:  # one broken call must not sink the fetch
                log.exception("upstream call crashed", extra={"fields": {
                    "event": "upstream_call_crashed", "node": self.node_id, "provider": call.provider}})
                results[i] = CallResult(call, error=CallFailed("invalid", repr(exc)[:200]))

        threads = []
        for i, call in enumerate(calls):
            t = self.thread_class(target=work, args=(i, call), daemon=True, name=f"fetch-{call.endpoint}")
            t.start()
            threads.append(t)
        for t in threads:
            t.join(max(0.0, deadline - self.clock()) + JOIN_GRACE)
        return [r if r is not None else
                CallResult(call, error=CallFailed("timeout", "no answer by the fetch deadline"))
                for call, r in zip(calls, list(results), strict=True)]

    def _settle(self, result: CallResult, now: float) -> None:
        """Record one call's outcome: keep its value, or the block or back-off it earned."""
        call, budget = result.call, self.budget
        adapter = self.adapters[call.provider]
        budget.count(call.provider)
        if result.error is None:
            budget.answered(call.provider)
            ended = budget.block(call.provider)
            if ended is not None and ended.until <= now:
                # A block ended and the next call succeeded: the incident is over, and the
                # next refusal starts again from its first block length. (A block another
                # endpoint earned in this very tick stays.)
                budget.set_block(call.provider, None)
            reply: Reply = result.value
            value = adapter.answered(call, reply.value, now)
            # Prices and the index ETFs come a few per call: each answer adds to the section.
            self.sections.put(call.endpoint, value, now, merge=call.part in MERGED_PARTS)
            budget.set_next_due(call.endpoint, now + adapter.interval(call.endpoint, now))
            budget.set_failures(call.endpoint, 0)
            adapter.weighed(call, reply.used_weight, now)
            self._recovered(call.provider, call.part)
            return
        exc = result.error
        outcome = adapter.outcome(exc)
        if outcome != exc.outcome:
            # The provider's own code says more than its HTTP status (a refused key as a 400).
            exc = CallFailed(outcome, exc.detail, status=exc.status, retryable=False,
                             retry_after=exc.retry_after, code=exc.code, used_weight=exc.used_weight)
        adapter.weighed(call, exc.used_weight, now)
        st = self.status[call.provider]
        st.ok = False
        st.error, st.retry_after_s = exc.outcome, exc.retry_after
        st.detail = describe(exc.outcome, exc.status, exc.code)
        if call.part not in st.failed:
            st.failed = (*st.failed, call.part)
        if adapter.failed(call, exc, now):
            return
        if exc.outcome in BLOCKS:
            self._block(call, exc, now)
            return
        fails = budget.failures(call.endpoint) + 1
        budget.set_failures(call.endpoint, fails)
        # Back off within the endpoint's cadence: a tick, two, four...
        pause = min(adapter.backoff_limit(call, now), self.plan.fetch_interval * 2 ** (fails - 1))
        budget.set_next_due(call.endpoint, now + pause)

    def _recovered(self, provider: str, part: str) -> None:
        st = self.status[provider]
        st.failed = tuple(p for p in st.failed if p != part)
        if not st.failed:
            self.status[provider] = ProviderStatus(unknown=st.unknown)

    def _block(self, call: Call, exc: CallFailed, now: float) -> None:
        outcome = exc.outcome
        first, longest = BLOCKS[outcome]
        previous = self.budget.block(call.provider)
        if previous is not None and previous.since == now and previous.outcome == outcome:
            return  # one incident per provider per tick: its other endpoint said the same
        repeats = previous.repeats + 1 if previous is not None and previous.outcome == outcome else 1
        if exc.retry_after is not None and outcome in ("rate_limited", "banned"):
            seconds = min(exc.retry_after, longest)
        elif outcome == "quota":
            seconds = month_end(now) - now
        else:
            seconds = min(first * 2 ** (repeats - 1), longest)
        # The block (shown on /status) carries the fixed words; the body is in the log line below.
        block = Block(until=now + seconds, status=exc.status, outcome=outcome,
                      detail=describe(outcome, exc.status, exc.code),
                      base=self._base(call.provider), since=now, repeats=repeats)
        self.budget.set_block(call.provider, block)
        fix = self.adapters[call.provider].fix(exc, outcome)
        level = logging.ERROR if outcome in ("restricted", "unauthorized", "banned") else logging.WARNING
        log_event(log, "upstream_blocked", level, node=self.node_id, provider=call.provider, outcome=outcome,
                  status=exc.status, code=exc.code, detail=exc.detail, blocked_for_s=round(seconds, 1),
                  fix=fix)

    def _base(self, provider: str) -> str:
        """The provider's base URL as blocks record it (redacted: it may carry credentials)."""
        return redact_url(self.plan.urls[provider]) or ""

    # --- reporting ---------------------------------------------------------------------
    def _statuses(self, now: float) -> dict[str, ProviderStatus]:
        out = {}
        for provider, st in self.status.items():
            st = replace(st)
            block = self.budget.blocked(provider, self._base(provider))
            if block is not None:
                st.ok = False
                st.blocked_for_s = round(block.until - now, 1)
                st.error = st.error or block.outcome
                st.detail = st.detail or block.detail
            st.unknown = self.adapters[provider].unknown()
            out[provider] = st
        return out

    def close(self) -> None:
        """Close the session (pooled connections); the fetcher is unusable after."""
        self.client.close()


def build_fetcher(settings: Settings, node_id: str, observer: Observer | None = None,
                  store: BudgetStore | None = None) -> Fetcher:
    """The fetcher for ``settings``; raises ConfigError naming SIM_URL if it is needed.

    ``store`` holds the budget (Redis for an elected leader, memory by default).
    """
    plan = Plan.from_settings(settings)
    client = HttpClient(
        node_id,
        connect_timeout=settings.http_connect_timeout,
        read_timeout=settings.http_read_timeout,
        retries=settings.http_retries,
        max_bytes=settings.max_response_bytes,
        observer=observer,
        # Our node ids are for the simulated exchange, never for a third party:
        # only to URLs under SIM_URL, whatever a per-provider override says.
        send_node_header=False,
        node_header_base=settings.sim_url if settings.simulated and settings.sim_url else None,
    )
    log_event(log, "fetcher_ready", node=node_id, upstream=settings.upstream_mode,
              providers=list(plan.providers), symbols=list(settings.symbols),
              urls={p: redact_url(u) for p, u in plan.urls.items()}, intervals=plan.intervals,
              deadline_s=fetch_budget(settings), coingecko_key=bool(settings.coingecko_api_key))
    return Fetcher(client, plan, store, deadline=fetch_budget(settings))
