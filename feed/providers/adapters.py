"""One adapter per upstream provider: what to call, how often, what an answer means, what its status says.

The fetch loop (feed/providers/fetcher.py) names no provider: it asks each
adapter for its calls, its cadence and whether anything refuses them now,
runs what is due, and hands each outcome back. What is particular to a
provider lives here, beside the others, as cryptofeed's exchange classes
declare theirs; the wire shapes (URLs, parsing, error bodies) stay in the
provider's own module (``coingecko.py``, ``binance.py``, ``feargreed.py``).

A new REST provider is a wire module and an adapter registered in
:data:`ADAPTERS` (plus its name in feed/providers/names.py and its shape in
the simulator); a stream would write to the same section store
(feed/providers/sections.py) from its own package.
"""

from __future__ import annotations

import calendar
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from feed.config.settings import Settings
from feed.logs import log_event
from feed.providers import binance, coingecko, coinmarketcap, feargreed, finnhub
from feed.providers.budget import Budget
from feed.providers.snapshot import CallResult
from feed.providers.symbol_book import SymbolBook
from feed.providers.transport import Call, CallFailed

__all__ = ["ADAPTERS", "Adapter", "Context", "month_end"]

log = logging.getLogger(__name__)

WEIGHT_LIMIT = 6000  # Binance's REQUEST_WEIGHT per minute per IP
# CoinGecko's cache of /simple/price: 60 s keyless and Demo, 20 s on paid plans (changelog, 2025-01-13).
PRICE_CACHE, PRO_PRICE_CACHE = 60.0, 20.0
WEIGHT_HEADROOM = 0.9  # past this share of it, wait for the next minute
LOOKUP_BACKOFF = 60.0  # longest pause between failed lookups, seconds


@dataclass(frozen=True)
class Context:
    """What an adapter may use, given by its fetcher."""

    node_id: str
    budget: Budget
    symbols: tuple[str, ...]
    wall: Callable[[], float]
    #: The redacted base URL of a provider, as blocks record it.
    base: Callable[[str], str]
    #: Run calls concurrently within this tick's deadline.
    run: Callable[[list[Call]], list[CallResult]]
    #: Count a call that a block kept from going out.
    skipped: Callable[[str], None]


class Adapter(ABC):
    """The defaults: a provider with fixed calls, a fixed cadence and nothing particular.

    A provider's adapter says at least what its calls are (:meth:`calls`).
    """

    name: ClassVar[str]
    live_url: ClassVar[str]
    #: The setting that points this provider elsewhere (a proxy, a stand-in).
    url_setting: ClassVar[str]
    #: The outcome -> what an operator should do, for this provider's refusals.
    fixes: ClassVar[dict[Any, str]] = {}

    def __init__(self, ctx: Context, url: str, interval: float) -> None:
        self.ctx = ctx
        self.url = url
        self.cadence = interval
        self._rejected: set[str] = set()  # coins the last answer priced impossibly

    @classmethod
    def from_settings(cls, ctx: Context, settings: Settings, url: str) -> Adapter:
        return cls(ctx, url, cls.interval_of(settings))

    @classmethod
    def interval_of(cls, settings: Settings) -> float:
        """The configured cadence of this provider's calls."""
        return settings.fetch_interval

    @classmethod
    def available(cls, settings: Settings) -> bool:
        """False if ``settings`` leave this provider nothing to do (a provider that needs a key)."""
        return True

    # --- where ---------------------------------------------------------------
    @classmethod
    def live_base(cls, settings: Settings) -> str:
        return cls.live_url

    @classmethod
    def sim_path(cls, settings: Settings) -> str:
        return cls.name

    # --- what, and how often ----------------------------------------------------
    @abstractmethod
    def calls(self) -> list[Call]:
        """Every call of one round, due or not."""

    def interval(self, endpoint: str, now: float) -> float:
        """The endpoint's cadence now."""
        return self.cadence

    def refusal(self, now: float) -> CallFailed | None:
        """A reason no call may go out now that no block records yet (a quota used up)."""
        return None

    def prepare(self, now: float) -> tuple[list[CallResult], tuple[str, ...]]:
        """Work before this tick's calls (a lookup).

        Returns ``(failed results, settled as calls are; parts recovered)``.
        """
        return [], ()

    def backoff_limit(self, call: Call, now: float) -> float:
        """The longest back-off after repeated failures of ``call``."""
        return self.interval(call.endpoint, now)

    def quotes_rejected(self, rejected: dict[str, str]) -> None:
        """Coins an answer priced impossibly (dropped, the others kept): logged when the set changes."""
        if set(rejected) != self._rejected:
            self._rejected = set(rejected)
            if rejected:
                log_event(log, "quotes_rejected", logging.WARNING, node=self.ctx.node_id, provider=self.name,
                          symbols=sorted(rejected), why=[v[:120] for v in rejected.values()])

    # --- what an answer means -------------------------------------------------------
    def answered(self, call: Call, value: Any, now: float) -> Any:
        """A good answer's value, as the section keeps it."""
        if call.part == "prices":
            self.quotes_rejected(getattr(value, "rejected", {}))
        return value

    def failed(self, call: Call, exc: CallFailed, now: float) -> bool:
        """True if this failure is handled here (no back-off, no block)."""
        return False

    def outcome(self, exc: CallFailed) -> str:
        """What a failure means for this provider: by default its HTTP status's outcome."""
        return exc.outcome

    def weighed(self, call: Call, used: int | None, now: float) -> None:
        """The provider's own count of what we used (a header), after any answer; most send none."""
        return None

    # --- what its status says -----------------------------------------------------------
    def unknown(self) -> tuple[str, ...]:
        """Configured symbols this provider does not list."""
        return ()

    def fix(self, exc: CallFailed, outcome: str) -> str | None:
        return self.fixes.get(exc.code) if exc.code in self.fixes else self.fixes.get(outcome)


class CoinGeckoAdapter(Adapter):
    """Prices and market totals; a key selects the host and header; a monthly quota may pace it."""

    name = coingecko.NAME
    live_url = coingecko.LIVE_URL
    url_setting = "coingecko_url"
    fixes: ClassVar[dict[Any, str]] = {
        10002: "COINGECKO_API_KEY is missing or not a valid key: check it, or unset it to call keyless",
        10010: "COINGECKO_API_KEY is a Pro key: set COINGECKO_API_PLAN=pro "
               "(it goes to pro-api.coingecko.com)",
        10011: "COINGECKO_API_KEY is a Demo key: set COINGECKO_API_PLAN=demo "
               "(it goes to api.coingecko.com)",
        "quota": "the month's CoinGecko calls (COINGECKO_MONTHLY_CALLS) are used up",
        "forbidden": "the provider's firewall refused this host (HTTP 403); backing off",
    }

    #: Error codes that mean the key is refused, whatever the HTTP status (the wrong host is a 400).
    KEY_REFUSED = frozenset({10002, 10010, 10011})

    def __init__(self, ctx: Context, url: str, interval: float, *, ids: dict[str, str],
                 unlisted: tuple[str, ...], headers: dict[str, str], monthly_calls: int,
                 market_interval: float = 600.0) -> None:
        super().__init__(ctx, url, interval)
        self.ids = ids
        self.unlisted = unlisted
        self.headers = headers
        self.monthly_calls = monthly_calls
        self.market_interval = market_interval
        if unlisted:
            log_event(log, "symbols_unknown", logging.WARNING, node=ctx.node_id, provider=self.name,
                      symbols=list(unlisted),
                      fix="CoinGecko ids are not tickers: give them as COINGECKO_IDS=SYMBOL=id,...")

    @classmethod
    def from_settings(cls, ctx: Context, settings: Settings, url: str) -> Adapter:
        ids, unlisted = coingecko.ids_for(settings.symbols, settings.coingecko_ids)
        return cls(ctx, url, cls.interval_of(settings), ids=ids, unlisted=tuple(unlisted),
                   headers=coingecko.auth(settings.coingecko_api_plan, settings.coingecko_api_key)[1],
                   monthly_calls=settings.coingecko_monthly_calls,
                   market_interval=settings.coingecko_market_interval)

    @classmethod
    def interval_of(cls, settings: Settings) -> float:
        """The prices' cadence: as set, else CoinGecko's cache time for the plan."""
        if settings.coingecko_interval:
            return settings.coingecko_interval
        pro = bool(settings.coingecko_api_key) and settings.coingecko_api_plan == "pro"
        return PRO_PRICE_CACHE if pro else PRICE_CACHE

    @classmethod
    def live_base(cls, settings: Settings) -> str:
        return coingecko.auth(settings.coingecko_api_plan, settings.coingecko_api_key)[0]

    @classmethod
    def sim_path(cls, settings: Settings) -> str:
        pro = settings.coingecko_api_key and settings.coingecko_api_plan == "pro"
        return "coingecko-pro" if pro else cls.name

    def calls(self) -> list[Call]:
        calls = [coingecko.price_call(self.url, self.ids, self.headers)] if self.ids else []
        return [*calls, coingecko.global_call(self.url, self.headers)]

    def interval(self, endpoint: str, now: float) -> float:
        """Each endpoint at CoinGecko's cache time; with a monthly quota, the credits spread.

        The market totals keep their cadence while the credits allow it; the
        prices get what is left, spread over the rest of the month. When even
        the totals do not fit, both stretch alike.
        """
        own = self.market_interval if endpoint == "coingecko.market" else self.cadence
        if not self.monthly_calls:
            return own
        left = self.monthly_calls - self.ctx.budget.credits(self.name)["month"]
        if left <= 0:
            return own  # the quota's block keeps it out
        remaining = month_end(now) - now
        market_calls = remaining / self.market_interval
        if market_calls >= left:  # even the totals do not fit: every endpoint stretches alike
            return max(own, remaining / (left / (1 + bool(self.ids))))
        if endpoint == "coingecko.market":
            return own
        return max(own, remaining / (left - market_calls))

    def refusal(self, now: float) -> CallFailed | None:
        # Only good answers cost a credit (CoinGecko's Demo docs); calls are counted apart.
        if self.monthly_calls and self.ctx.budget.credits(self.name)["month"] >= self.monthly_calls:
            return CallFailed("quota", f"{self.monthly_calls} calls this month, all used")
        return None

    def outcome(self, exc: CallFailed) -> str:
        return "unauthorized" if exc.code in self.KEY_REFUSED else exc.outcome

    def answered(self, call: Call, value: Any, now: float) -> Any:
        if call.part == "prices":
            rejected = getattr(value, "rejected", {})
            self.quotes_rejected(rejected)
            # Unknown: left out of the answer; a coin refused for its numbers is listed, not unknown.
            absent = sorted(set(self.ids) - set(value) - set(rejected))
            self.ctx.budget.put_json("unknown:coingecko", absent or None)
        return value

    def unknown(self) -> tuple[str, ...]:
        absent = self.ctx.budget.get_json("unknown:coingecko") or []
        return tuple(sorted({*self.unlisted, *absent}))


class BinanceAdapter(Adapter):
    """Prices for the pairs its symbol book lists; its weight header paces it."""

    name = binance.NAME
    live_url = binance.LIVE_URL
    url_setting = "binance_url"
    fixes: ClassVar[dict[Any, str]] = {
        "restricted": "Binance refuses this region (HTTP 451): deploy in a region it serves, or set "
                      "BINANCE_BASE_URL to another host (https://api.binance.us for binance.us, whose "
                      "symbols differ); prices come from CoinGecko meanwhile",
        "banned": "Binance banned this IP for calling past its limit (HTTP 418); no call until the ban ends",
        "forbidden": "the provider's firewall refused this host (HTTP 403); backing off",
    }

    def __init__(self, ctx: Context, url: str, interval: float, *, rsi_interval: float = 3600.0) -> None:
        super().__init__(ctx, url, interval)
        self.rsi_interval = rsi_interval
        self.book = SymbolBook(ctx.budget, ctx.symbols, ctx.base(self.name), url, ctx.wall)

    @classmethod
    def from_settings(cls, ctx: Context, settings: Settings, url: str) -> Adapter:
        return cls(ctx, url, cls.interval_of(settings), rsi_interval=settings.rsi_interval)

    @classmethod
    def interval_of(cls, settings: Settings) -> float:
        return settings.binance_interval or settings.fetch_interval

    def calls(self) -> list[Call]:
        pairs = self.book.pairs()
        calls = [binance.ticker_call(self.url, pairs)] if pairs else []
        # BTC's daily RSI from its daily candles: no key, one call an hour by default (0: none).
        return [*calls, binance.rsi_call(self.url)] if self.rsi_interval else calls

    def interval(self, endpoint: str, now: float) -> float:
        return self.rsi_interval if endpoint == "binance.indicators" else self.cadence

    def prepare(self, now: float) -> tuple[list[CallResult], tuple[str, ...]]:
        """The symbol book, looked up when missing, old or incomplete (feed/providers/symbol_book.py)."""
        budget = self.ctx.budget
        if not self.book.needs_lookup():
            return [], ()
        if budget.blocked(self.name, self.ctx.base(self.name)) is not None:
            self.ctx.skipped(self.name)
            return [], ()
        if (budget.next_due("binance.symbols") or 0) > now:
            return [], ()
        failed, complete = self.book.look_up(now, self.ctx.run)
        if failed:
            return failed, ()
        budget.set_failures("binance.symbols", 0)
        if not complete:
            return [], ()
        unknown = self.book.unknown()
        if unknown:
            log_event(log, "symbols_unknown", logging.WARNING, node=self.ctx.node_id, provider=self.name,
                      symbols=list(unknown), fix="Binance does not list these against USDT; their "
                                                 "prices come from CoinGecko")
        return [], ("symbols",)

    def backoff_limit(self, call: Call, now: float) -> float:
        # A lookup is asked once a day, so it backs off up to a minute.
        return LOOKUP_BACKOFF if call.part == "symbols" else self.interval(call.endpoint, now)

    def failed(self, call: Call, exc: CallFailed, now: float) -> bool:
        if exc.code == binance.UNKNOWN_SYMBOL:
            # A pair Binance does not (or no longer) list: look the symbols up again.
            self.book.forget()
            self.ctx.budget.set_next_due(call.endpoint, now)
            return True
        return False

    def weighed(self, call: Call, used: int | None, now: float) -> None:
        if used is None:
            return
        self.ctx.budget.put_json("weight:binance", {"used": used, "at": int(now * 1000)})
        if used >= WEIGHT_HEADROOM * WEIGHT_LIMIT:
            # Close to the per-minute limit: the next call waits for the next minute.
            self.ctx.budget.set_next_due(call.endpoint, math.floor(now / 60 + 1) * 60)

    def unknown(self) -> tuple[str, ...]:
        return self.book.unknown()


class FearGreedAdapter(Adapter):
    """The Fear & Greed index: asked again shortly after it says a new value is out."""

    name = feargreed.NAME
    live_url = feargreed.LIVE_URL
    url_setting = "feargreed_url"
    fixes: ClassVar[dict[Any, str]] = {
        "forbidden": "the provider's firewall refused this host (HTTP 403); backing off",
    }

    def __init__(self, ctx: Context, url: str, interval: float) -> None:
        super().__init__(ctx, url, interval)
        self._next_update: float | None = None

    @classmethod
    def interval_of(cls, settings: Settings) -> float:
        return settings.feargreed_interval

    def calls(self) -> list[Call]:
        return [feargreed.fng_call(self.url)]

    def interval(self, endpoint: str, now: float) -> float:
        if self._next_update is None:
            return self.cadence
        # The index changes once a day; ask again shortly after it has.
        return min(self.cadence, max(60.0, self._next_update - now + 30.0))

    def answered(self, call: Call, value: Any, now: float) -> Any:
        if isinstance(value, dict):
            until = value.pop("next_update_s", None)
            self._next_update = now + until if isinstance(until, int) else None
        return value


class FinnhubAdapter(Adapter):
    """The US index ETFs (DIA, SPY, QQQM), one call each, only with ``FINNHUB_API_KEY``."""

    name = finnhub.NAME
    live_url = finnhub.LIVE_URL
    url_setting = "finnhub_url"
    fixes: ClassVar[dict[Any, str]] = {
        "unauthorized": "FINNHUB_API_KEY is not a valid Finnhub key: check it (finnhub.io/dashboard)",
        "rate_limited": "Finnhub's 60 calls a minute are used up (another user of this key?); backing off",
        "forbidden": "Finnhub refused the key for this data (HTTP 403): it may need another plan",
    }

    def __init__(self, ctx: Context, url: str, interval: float, *, headers: dict[str, str]) -> None:
        super().__init__(ctx, url, interval)
        self.headers = headers

    @classmethod
    def from_settings(cls, ctx: Context, settings: Settings, url: str) -> Adapter:
        return cls(ctx, url, cls.interval_of(settings), headers=finnhub.auth(settings.finnhub_api_key))

    @classmethod
    def interval_of(cls, settings: Settings) -> float:
        return settings.finnhub_interval

    @classmethod
    def available(cls, settings: Settings) -> bool:
        return bool(settings.finnhub_api_key)

    def calls(self) -> list[Call]:
        return [finnhub.quote_call(self.url, symbol, self.headers) for symbol in finnhub.INDEX_ETFS]


class CoinMarketCapAdapter(Adapter):
    """Market totals while CoinGecko's fail, only with ``CMC_API_KEY``: the original's fallback."""

    name = coinmarketcap.NAME
    live_url = coinmarketcap.LIVE_URL
    url_setting = "cmc_url"
    fixes: ClassVar[dict[Any, str]] = {
        1001: "CMC_API_KEY is not a valid CoinMarketCap key: check it (pro.coinmarketcap.com/account)",
        1002: "CMC_API_KEY is missing from the request: check the setting",
        1008: "CoinMarketCap's requests per minute are used up (another user of this key?)",
        1009: "CoinMarketCap's daily credits are used up",
        1010: "CoinMarketCap's monthly credits are used up: market totals wait for CoinGecko",
        "forbidden": "CoinMarketCap's plan for this key does not cover global metrics (HTTP 403)",
    }

    def __init__(self, ctx: Context, url: str, interval: float, *, headers: dict[str, str],
                 primary: bool) -> None:
        super().__init__(ctx, url, interval)
        self.headers = headers
        # Whether CoinGecko runs at all: without it CoinMarketCap is the market's only source.
        self.primary = primary

    @classmethod
    def from_settings(cls, ctx: Context, settings: Settings, url: str) -> Adapter:
        return cls(ctx, url, cls.interval_of(settings), headers=coinmarketcap.auth(settings.cmc_api_key),
                   primary="coingecko" in settings.providers)

    @classmethod
    def interval_of(cls, settings: Settings) -> float:
        return settings.cmc_interval

    @classmethod
    def available(cls, settings: Settings) -> bool:
        return bool(settings.cmc_api_key)

    def calls(self) -> list[Call]:
        # A fallback: its credits are spent only while CoinGecko's market totals fail.
        budget = self.ctx.budget
        if self.primary and budget.block(coingecko.NAME) is None and not budget.failures("coingecko.market"):
            return []
        return [coinmarketcap.global_call(self.url, self.headers)]


ADAPTERS: dict[str, type[Adapter]] = {a.name: a for a in (CoinGeckoAdapter, BinanceAdapter, FearGreedAdapter,
                                                           FinnhubAdapter, CoinMarketCapAdapter)}


def month_end(now: float) -> float:
    """The end of ``now``'s month, UTC (unix seconds)."""
    t = datetime.fromtimestamp(now, tz=UTC)
    days = calendar.monthrange(t.year, t.month)[1]
    return datetime(t.year, t.month, days, tzinfo=UTC).timestamp() + 86400.0
