"""The fetcher: one tick of the leader's schedule, within the cluster's upstream budget.

Every ``FETCH_INTERVAL_SECONDS`` the leader asks for a snapshot. The fetcher
calls only the endpoints that are due by their own cadence (Binance every
tick, CoinGecko every ``COINGECKO_INTERVAL_SECONDS``, the Fear & Greed index
when it says a new value is out) and that no block forbids, concurrently
(threads, or greenlets once gevent has patched the process), within a
deadline derived from the fetch interval. Then it merges the newest good
value of every section, fresh or kept (:mod:`feed.providers.snapshot`).

What it learns goes to the budget (:mod:`feed.providers.budget`), which the
leader writes through its fence to Redis: a 429's Retry-After, a 418 ban, a
451 from a restricted region, a 403, a rejected key; each endpoint's next
call; the calls counted per minute, day and month; the symbols each
provider lists. A new leader starts from there.
"""

from __future__ import annotations

import calendar
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import redis

from feed.config.settings import Settings
from feed.election.term import Term
from feed.envelope import Envelope
from feed.errors import ConfigError, FetchFailed
from feed.logs import log_event
from feed.observer import Observer, notify
from feed.providers import binance, coingecko, feargreed
from feed.providers.budget import Block, Budget, BudgetStore, MemoryBudgetStore
from feed.providers.snapshot import CallResult, Freshness, Kept, ProviderStatus, assemble, has_data
from feed.providers.transport import Call, CallFailed, HttpClient, Reply
from feed.redisconn.url import redact_url

__all__ = ["PROVIDERS", "Fetcher", "Plan", "base_urls", "build_fetcher", "fetch_budget"]

log = logging.getLogger(__name__)

PROVIDERS = {m.NAME: m for m in (coingecko, binance, feargreed)}
_OVERRIDE = {"coingecko": "coingecko_url", "binance": "binance_url", "feargreed": "feargreed_url"}
# Extra time a worker gets past the deadline to report before it is given up.
JOIN_GRACE = 0.5
# How long a refusal keeps a provider out: (first block, longest), seconds.
# A 429 or 418 names its own time (Retry-After); these are for when it does not.
BLOCKS = {
    "rate_limited": (60.0, 3600.0),
    "banned": (120.0, 3 * 86400.0 + 3600.0),  # Binance's bans: 2 minutes to 3 days, honoured in full
    "restricted": (3600.0, 86400.0),
    "forbidden": (600.0, 6 * 3600.0),
    "unauthorized": (3600.0, 6 * 3600.0),
    "quota": (0.0, 31 * 86400.0),
}
LOOKUP_EVERY = 86400.0  # symbols each provider lists, looked up again after a day
LOOKUPS_PER_TICK = 8  # single-symbol exchangeInfo calls a tick, at most (weight 20 each)
LOOKUP_BACKOFF = 60.0  # longest pause between failed lookups, seconds
WEIGHT_LIMIT = 6000  # Binance's REQUEST_WEIGHT per minute per IP
WEIGHT_HEADROOM = 0.9  # past this share of it, wait for the next minute

FIX = {
    "restricted": "Binance refuses this region (HTTP 451): deploy in a region it serves, or set "
                  "BINANCE_BASE_URL to another host (https://api.binance.us for binance.us, whose "
                  "symbols differ); prices come from CoinGecko meanwhile",
    "banned": "Binance banned this IP for calling past its limit (HTTP 418); no call until the ban ends",
    "forbidden": "the provider's firewall refused this host (HTTP 403); backing off",
    10002: "COINGECKO_API_KEY is missing or not a valid key: check it, or unset it to call keyless",
    10010: "COINGECKO_API_KEY is a Pro key: set COINGECKO_API_PLAN=pro (it goes to pro-api.coingecko.com)",
    10011: "COINGECKO_API_KEY is a Demo key: set COINGECKO_API_PLAN=demo (it goes to api.coingecko.com)",
    "quota": "the month's CoinGecko calls (COINGECKO_MONTHLY_CALLS) are used up",
}


def base_urls(settings: Settings) -> dict[str, str]:
    """Base URL per configured provider: override, else simulator or live API."""
    urls: dict[str, str] = {}
    for name in settings.providers:
        override = getattr(settings, _OVERRIDE[name])
        if override:
            urls[name] = override.rstrip("/")
        elif settings.upstream == "live":
            urls[name] = (coingecko.auth(settings.coingecko_api_plan, settings.coingecko_api_key)[0]
                          if name == "coingecko" else PROVIDERS[name].LIVE_URL)
        elif settings.sim_url:
            pro = name == "coingecko" and settings.coingecko_api_key and settings.coingecko_api_plan == "pro"
            urls[name] = f"{settings.sim_url.rstrip('/')}/{'coingecko-pro' if pro else name}"
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


@dataclass(frozen=True)
class Plan:
    """What to fetch, from where, how often: everything :class:`Fetcher` takes from settings."""

    symbols: tuple[str, ...]
    providers: tuple[str, ...]
    urls: dict[str, str]
    fetch_interval: float
    intervals: dict[str, float]  # by provider
    section_max_age: float
    coingecko_ids: dict[str, str] = field(default_factory=dict)
    coingecko_unknown: tuple[str, ...] = ()
    coingecko_headers: dict[str, str] = field(default_factory=dict, repr=False)
    coingecko_monthly_calls: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Plan:
        ids, unknown = coingecko.ids_for(settings.symbols, settings.coingecko_ids)
        return cls(
            symbols=settings.symbols, providers=settings.providers, urls=base_urls(settings),
            fetch_interval=settings.fetch_interval,
            intervals={"coingecko": settings.coingecko_interval,
                       "binance": settings.binance_interval or settings.fetch_interval,
                       "feargreed": settings.feargreed_interval},
            section_max_age=settings.section_max_age, coingecko_ids=ids, coingecko_unknown=tuple(unknown),
            coingecko_headers=coingecko.auth(settings.coingecko_api_plan, settings.coingecko_api_key)[1],
            coingecko_monthly_calls=settings.coingecko_monthly_calls)


class Fetcher:
    """Callable ``fetcher(term, previous) -> data``; see the module docstring.

    ``term`` is the leader's (its budget writes go through that fence);
    ``previous`` the newest snapshot the node holds, whose sections are kept
    when their providers are not due, blocked or failing.
    """

    def __init__(self, client: HttpClient, plan: Plan, store: BudgetStore | None = None, *,
                 deadline: float, thread_class: type = threading.Thread,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.client = client
        self.plan = plan
        self.budget = Budget(store or MemoryBudgetStore(), wall)
        self.deadline = deadline
        self.thread_class = thread_class
        self.clock = clock
        self.wall = wall
        self.kept: dict[str, Kept] = {}
        self.status: dict[str, ProviderStatus] = {p: ProviderStatus() for p in plan.providers}
        self.last: dict | None = None  # the last snapshot data, for inspection
        self._last_missing: list[str] = []
        self._next_sentiment: float | None = None
        if plan.coingecko_unknown and "coingecko" in plan.providers:
            log_event(log, "symbols_unknown", logging.WARNING, node=self.node_id, provider="coingecko",
                      symbols=list(plan.coingecko_unknown),
                      fix="CoinGecko ids are not tickers: give them as COINGECKO_IDS=SYMBOL=id,...")

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
        if self.budget.begin(term):
            self._adopt(previous)
        deadline = self.clock() + self.deadline
        results = self._run_tick(now, deadline)
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
        observer = self.client.observer
        for provider, st in statuses.items():
            blocked, calls = st.blocked_for_s or 0.0, self.budget.calls(provider)
            notify(lambda p=provider, b=blocked, c=calls: observer.upstream_state(p, b, c), "upstream_state")
        data = assemble(self.plan.symbols, self.plan.providers, self.kept, self._freshness(now),
                        statuses, now)
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

    def _adopt(self, previous: Envelope | None) -> None:
        """A new term: keep the sections of the newest snapshot, where they are newer than ours."""
        if previous is None:
            return
        data = previous.data
        by_endpoint: dict[str, dict[str, Any]] = {}
        for symbol, quote in (data.get("prices") or {}).items():
            if isinstance(quote, dict) and quote.get("source") in self.plan.providers:
                by_endpoint.setdefault(f"{quote['source']}.prices", {})[symbol] = quote
        for endpoint, quotes in by_endpoint.items():
            when = max(_when(q, previous.fetched_at) for q in quotes.values())
            values = {s: {k: v for k, v in q.items() if k not in ("source", "fetched_at")}
                      for s, q in quotes.items()}
            self._keep(endpoint, values, when, merge=True)
        for part in ("market", "sentiment"):
            section = data.get(part)
            if isinstance(section, dict) and section.get("source") in self.plan.providers:
                value = {k: v for k, v in section.items() if k not in ("source", "fetched_at")}
                self._keep(f"{section['source']}.{part}", value, _when(section, previous.fetched_at))

    def _keep(self, endpoint: str, value: Any, when: float, merge: bool = False) -> None:
        old = self.kept.get(endpoint)
        if old is not None and old.fetched_at >= when:
            return
        if merge and old is not None and isinstance(old.value, dict):
            value = {**old.value, **value}
        self.kept[endpoint] = Kept(value, when)

    # --- what to call -------------------------------------------------------------
    def _calls(self) -> list[Call]:
        plan, calls = self.plan, []
        for provider in plan.providers:
            url = plan.urls[provider]
            if provider == "coingecko":
                if plan.coingecko_ids:
                    calls.append(coingecko.price_call(url, plan.coingecko_ids, plan.coingecko_headers))
                calls.append(coingecko.global_call(url, plan.coingecko_headers))
            elif provider == "binance":
                pairs = self._binance_pairs()
                if pairs:
                    calls.append(binance.ticker_call(url, pairs))
            else:
                calls.append(feargreed.fng_call(url))
        return calls

    def _due_calls(self, now: float, provider: str | None = None, but: str | None = None) -> list[Call]:
        """The calls due now (of ``provider`` only, or of all ``but`` one); blocked ones count as skipped."""
        due = []
        for call in self._calls():
            if call.provider == but or (provider is not None and call.provider != provider):
                continue
            if call.provider == "coingecko" and self._quota_spent() and \
                    self.budget.blocked("coingecko", self._base("coingecko")) is None:
                self._block(call, CallFailed("quota", f"{self.plan.coingecko_monthly_calls} calls this "
                                                      f"month, all used"), now)
            if self.budget.blocked(call.provider, self._base(call.provider)) is not None:
                self.client.record(call.provider, "skipped", 0.0)
                continue
            when = self.budget.next_due(call.endpoint)
            if when is None:
                kept = self.kept.get(call.endpoint)
                when = kept.fetched_at + self._interval(call.endpoint, now) if kept else now
            if when <= now + 0.05:  # a tick may begin a hair early
                due.append(call)
        return due

    def _interval(self, endpoint: str, now: float) -> float:
        """The endpoint's cadence now: its setting, stretched by a quota, shortened by an update due."""
        provider = endpoint.partition(".")[0]
        interval = self.plan.intervals.get(provider, self.plan.fetch_interval)
        if provider == "feargreed" and self._next_sentiment is not None:
            # The index changes once a day; ask again shortly after it has.
            interval = min(interval, max(60.0, self._next_sentiment - now + 30.0))
        if provider == "coingecko" and self.plan.coingecko_monthly_calls:
            left = self.plan.coingecko_monthly_calls - self.budget.calls("coingecko")["month"]
            per_round = 1 + bool(self.plan.coingecko_ids)
            seconds_left = _month_end(now) - now
            if left > 0:
                interval = max(interval, seconds_left / (left / per_round))
        return interval

    def _quota_spent(self) -> bool:
        quota = self.plan.coingecko_monthly_calls
        return bool(quota) and self.budget.calls("coingecko")["month"] >= quota

    def _freshness(self, now: float) -> dict[str, Freshness]:
        out = {}
        for endpoint in self.kept:
            interval = self._interval(endpoint, now)
            out[endpoint] = Freshness(stale_after=interval + self.plan.fetch_interval + 1.0,
                                      max_age=max(self.plan.section_max_age, 2 * interval))
        return out

    # --- calling ----------------------------------------------------------------------
    def _run_tick(self, now: float, deadline: float) -> list[CallResult]:
        """This tick's calls, concurrently; Binance's after its symbol lookup, if one is due."""
        jobs: list[Callable[[], list[CallResult]]] = []
        for call in self._due_calls(now, but="binance"):
            jobs.append(lambda call=call: self._run([call], deadline))

        def binance_job() -> list[CallResult]:
            done = self._look_up_binance(now, deadline)
            return done + self._run(self._due_calls(now, "binance"), deadline)

        if "binance" in self.plan.providers:
            jobs.append(binance_job)
        out: list[list[CallResult]] = [[] for _ in jobs]

        def work(i: int) -> None:
            out[i] = jobs[i]()

        threads = [self.thread_class(target=work, args=(i,), daemon=True, name=f"fetch-job-{i}")
                   for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - self.clock()) + 2 * JOIN_GRACE)
        return [r for results in out for r in results]

    def _run(self, calls: list[Call], deadline: float) -> list[CallResult]:
        results: list[CallResult | None] = [None] * len(calls)

        def work(i: int, call: Call) -> None:
            try:
                reply = self.client.run(call, deadline)
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
        self.budget.count(call.provider)
        if result.error is None:
            reply: Reply = result.value
            value = reply.value
            if call.endpoint == "feargreed.sentiment" and isinstance(value, dict):
                until = value.pop("next_update_s", None)
                self._next_sentiment = now + until if isinstance(until, int) else None
            if call.endpoint == "coingecko.prices":
                absent = sorted(set(self.plan.coingecko_ids) - set(value))
                budget.put_json("unknown:coingecko", absent or None)
            self._keep(call.endpoint, value, now, merge=call.part == "prices")
            budget.set_next_due(call.endpoint, now + self._interval(call.endpoint, now))
            budget.set_failures(call.endpoint, 0)
            self._note_weight(call, reply.used_weight, now)
            self._recovered(call.provider, call.part)
            return
        exc = result.error
        self._note_weight(call, exc.used_weight, now)
        st = self.status[call.provider]
        st.ok = False
        st.error, st.detail, st.retry_after_s = exc.outcome, exc.detail, exc.retry_after
        if call.part not in st.failed:
            st.failed = (*st.failed, call.part)
        if call.provider == "binance" and exc.code == binance.UNKNOWN_SYMBOL:
            # A pair Binance does not (or no longer) list: look the symbols up again.
            budget.put_json("symbols:binance", None)
            budget.set_next_due(call.endpoint, now)
            return
        if exc.outcome in BLOCKS:
            self._block(call, exc, now)
            return
        fails = budget.failures(call.endpoint) + 1
        budget.set_failures(call.endpoint, fails)
        # Back off within the endpoint's cadence: a tick, two, four... A
        # lookup is asked once a day, so it backs off up to a minute.
        longest = LOOKUP_BACKOFF if call.part == "symbols" else self._interval(call.endpoint, now)
        pause = min(longest, self.plan.fetch_interval * 2 ** (fails - 1))
        budget.set_next_due(call.endpoint, now + pause)

    def _recovered(self, provider: str, part: str) -> None:
        st = self.status[provider]
        st.failed = tuple(p for p in st.failed if p != part)
        if not st.failed:
            self.status[provider] = ProviderStatus(unknown=st.unknown)

    def _block(self, call: Call, exc: CallFailed, now: float, outcome: str | None = None) -> None:
        outcome = outcome or exc.outcome
        first, longest = BLOCKS[outcome]
        previous = self.budget.block(call.provider)
        repeats = previous.repeats + 1 if previous is not None and previous.outcome == outcome else 1
        if exc.retry_after is not None and outcome in ("rate_limited", "banned"):
            seconds = min(exc.retry_after, longest)
        elif outcome == "quota":
            seconds = _month_end(now) - now
        else:
            seconds = min(first * 2 ** (repeats - 1), longest)
        block = Block(until=now + seconds, status=exc.status, outcome=outcome, detail=exc.detail,
                      base=self._base(call.provider), since=now, repeats=repeats)
        self.budget.set_block(call.provider, block)
        fix = FIX.get(exc.code) if exc.code in FIX else FIX.get(outcome)
        level = logging.ERROR if outcome in ("restricted", "unauthorized", "banned") else logging.WARNING
        log_event(log, "upstream_blocked", level, node=self.node_id, provider=call.provider, outcome=outcome,
                  status=exc.status, code=exc.code, detail=exc.detail, blocked_for_s=round(seconds, 1),
                  fix=fix)

    def _note_weight(self, call: Call, used: int | None, now: float) -> None:
        if used is None or call.provider != "binance":
            return
        self.budget.put_json("weight:binance", {"used": used, "at": int(now * 1000)})
        if used >= WEIGHT_HEADROOM * WEIGHT_LIMIT:
            # Close to the per-minute limit: the next call waits for the next minute.
            self.budget.set_next_due(call.endpoint, math.floor(now / 60 + 1) * 60)

    # --- symbols -------------------------------------------------------------------
    def _binance_book(self) -> dict[str, Any] | None:
        """The last lookup of the configured symbols, while it holds (a day, same symbols, same host).

        ``known`` maps symbols to the pairs Binance trades, ``unknown`` lists
        the ones it does not, ``pending`` the ones still to ask one by one.
        """
        book = self.budget.get_json("symbols:binance")
        if not isinstance(book, dict):
            return None
        fresh = self.wall() - book.get("at", 0) / 1000.0 < LOOKUP_EVERY
        same = book.get("asked") == list(self.plan.symbols) and book.get("base") == self._base("binance")
        return book if fresh and same else None

    def _binance_pairs(self) -> dict[str, str]:
        book = self._binance_book()
        return dict(book["known"]) if book else {}

    def _look_up_binance(self, now: float, deadline: float) -> list[CallResult]:
        """Which configured symbols Binance lists, asked once a day (or when its answers change).

        One exchangeInfo call asks for them all; if one of them is unknown
        Binance fails the whole batch (-1121), so the rest are asked one by
        one, at most ``LOOKUPS_PER_TICK`` a tick (each weighs 20), the pairs
        found so far priced meanwhile. Returns a failed lookup (a refusal or
        an outage), for the tick to settle.
        """
        book = self._binance_book()
        if book is not None and not book.get("pending"):
            return []
        if self.budget.blocked("binance", self._base("binance")) is not None:
            self.client.record("binance", "skipped", 0.0)
            return []
        if (self.budget.next_due("binance.symbols") or 0) > now:
            return []
        url, symbols = self.plan.urls["binance"], self.plan.symbols
        if book is None:
            result = self._run([binance.lookup_call(url, symbols)], deadline)[0]
            if result.error is not None and result.error.code != binance.UNKNOWN_SYMBOL:
                return [result]  # settled by the tick, with blocks and back-off as for any call
            self.budget.count("binance")
            book = {"asked": list(symbols), "base": self._base("binance"), "at": int(now * 1000),
                    "known": {}, "unknown": [], "pending": []}
            if result.error is None:
                self._file(book, symbols, result.value.value)
            else:
                book["pending"] = list(symbols)
        if book["pending"]:
            asking = tuple(book["pending"][:LOOKUPS_PER_TICK])
            results = self._run([binance.lookup_call(url, (s,)) for s in asking], deadline)
            failed = []
            for symbol, result in zip(asking, results, strict=True):
                if result.error is not None and result.error.code != binance.UNKNOWN_SYMBOL:
                    failed.append(result)  # stays pending
                    continue
                self.budget.count("binance")
                book["pending"].remove(symbol)
                self._file(book, (symbol,), result.value.value if result.error is None else {})
            if failed:
                self.budget.put_json("symbols:binance", book)
                return failed[:1]  # one back-off for the lot: they failed for the same reason
        self.budget.put_json("symbols:binance", book)
        self.budget.set_failures("binance.symbols", 0)
        if not book["pending"]:
            self._recovered("binance", "symbols")
            if book["unknown"]:
                log_event(log, "symbols_unknown", logging.WARNING, node=self.node_id, provider="binance",
                          symbols=book["unknown"], fix="Binance does not list these against USDT; their "
                                                       "prices come from CoinGecko")
        return []

    @staticmethod
    def _file(book: dict[str, Any], symbols: tuple[str, ...], listed: dict[str, str]) -> None:
        """Sort ``symbols`` into the book's known (traded) and unknown, by an exchangeInfo answer."""
        for symbol in symbols:
            if listed.get(binance.pair(symbol)) == "TRADING":
                book["known"][symbol] = binance.pair(symbol)
            elif symbol not in book["unknown"]:
                book["unknown"].append(symbol)

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
            if provider == "binance":
                book = self._binance_book()
                st.unknown = tuple(book["unknown"]) if book else ()
            elif provider == "coingecko":
                absent = self.budget.get_json("unknown:coingecko") or []
                st.unknown = tuple(sorted({*self.plan.coingecko_unknown, *absent}))
            out[provider] = st
        return out

    def close(self) -> None:
        """Close the session (pooled connections); the fetcher is unusable after."""
        self.client.close()


def _when(section: dict[str, Any], default: float) -> float:
    from feed.times import parse_iso

    try:
        return parse_iso(section["fetched_at"])
    except (KeyError, TypeError, ValueError):
        return default


def _month_end(now: float) -> float:
    t = datetime.fromtimestamp(now, tz=UTC)
    days = calendar.monthrange(t.year, t.month)[1]
    return datetime(t.year, t.month, days, tzinfo=UTC).timestamp() + 86400.0


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
        # Our node ids are for the simulated exchange, never for a third party.
        send_node_header=settings.upstream == "sim",
    )
    log_event(log, "fetcher_ready", node=node_id, upstream=settings.upstream,
              providers=list(settings.providers), symbols=list(settings.symbols),
              urls={p: redact_url(u) for p, u in plan.urls.items()}, intervals=plan.intervals,
              deadline_s=fetch_budget(settings), coingecko_key=bool(settings.coingecko_api_key))
    return Fetcher(client, plan, store, deadline=fetch_budget(settings))
