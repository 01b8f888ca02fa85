"""The simulated market: random-walk prices and the providers' JSON shapes.

Every symbol walks on its own random stream, seeded from the exchange's seed
and the symbol, and advances once per ``tick`` of time since start. So two
exchanges with the same seed quote the same prices at the same tick, and
asking more often does not make the price move faster.
"""

from __future__ import annotations

import math
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from feed.providers.coingecko import COINGECKO_IDS

__all__ = ["DEFAULT_COINS", "Market", "Quote", "fear_greed_label", "symbol_for_id"]

# symbol: (starting price in USD, circulating supply); roughly late 2025.
DEFAULT_COINS: dict[str, tuple[float, float]] = {
    "BTC": (91_000.0, 19_800_000.0),
    "ETH": (3_000.0, 120_500_000.0),
    "SOL": (140.0, 520_000_000.0),
    "BNB": (600.0, 145_000_000.0),
    "XRP": (2.2, 57_000_000_000.0),
}
# The listed coins make up about this share of the whole market.
LISTED_SHARE = 0.8
VOLATILITY = 0.0015  # log-price standard deviation per tick
MAX_STEPS = 10_000  # per catch-up; a longer idle gap is jumped over

_ID_TO_SYMBOL = {cid: sym for sym, cid in COINGECKO_IDS.items()}


def symbol_for_id(coin_id: str) -> str:
    """The ticker for a CoinGecko id; unknown ids are their upper-case form."""
    return _ID_TO_SYMBOL.get(coin_id, coin_id.upper())


def fear_greed_label(value: int) -> str:
    if value <= 24:
        return "Extreme Fear"
    if value <= 44:
        return "Fear"
    if value <= 55:
        return "Neutral"
    if value <= 75:
        return "Greed"
    return "Extreme Greed"


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: float
    open_24h: float  # the price 24 h ago
    supply: float

    @property
    def change_pct(self) -> float:
        return (self.price / self.open_24h - 1.0) * 100.0

    @property
    def market_cap(self) -> float:
        return self.price * self.supply

    @property
    def quote_volume(self) -> float:
        return self.market_cap * 0.03


class _Walk:
    def __init__(self, symbol: str, seed: int) -> None:
        self.rng = random.Random(f"{seed}:{symbol}")
        if symbol in DEFAULT_COINS:
            price, supply = DEFAULT_COINS[symbol]
        else:
            # Unknown symbols still get a stable, plausible price: 0.01 .. 10 000.
            h = zlib.crc32(symbol.encode())
            price = round(10 ** ((h % 600) / 100.0 - 2.0), 6)
            supply = float(10 ** (6 + h % 4))
        self.price = price
        self.supply = supply
        self.open = price / (1.0 + self.rng.uniform(-4.0, 4.0) / 100.0)
        self.steps = 0


class Market:
    """Thread-safe random-walk quotes; ``clock`` and ``tick`` are for tests."""

    def __init__(self, seed: int | None = None, *, tick: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if tick <= 0:
            raise ValueError("tick must be positive")
        self.seed = seed if seed is not None else random.SystemRandom().getrandbits(48)
        self.tick = tick
        self.clock = clock
        self._start = clock()
        self._walks: dict[str, _Walk] = {}
        self._lock = threading.Lock()

    def quote(self, symbol: str) -> Quote:
        symbol = symbol.upper()
        with self._lock:
            walk = self._walks.get(symbol)
            if walk is None:
                walk = self._walks[symbol] = _Walk(symbol, self.seed)
            target = int((self.clock() - self._start) / self.tick)
            if target - walk.steps > MAX_STEPS:
                walk.steps = target - MAX_STEPS
            while walk.steps < target:
                walk.price *= math.exp(walk.rng.gauss(0.0, VOLATILITY))
                walk.steps += 1
            return Quote(symbol, walk.price, walk.open, walk.supply)

    def known_symbols(self) -> list[str]:
        with self._lock:
            seen = list(self._walks)
        return list(dict.fromkeys([*DEFAULT_COINS, *seen]))

    # --- provider shapes ------------------------------------------------
    def coingecko_simple_price(self, ids: list[str], currencies: list[str],
                               with_change: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cid in ids:
            q = self.quote(symbol_for_id(cid))
            entry: dict[str, Any] = {}
            if "usd" in currencies:
                entry["usd"] = _round_price(q.price)
                if with_change:
                    entry["usd_24h_change"] = round(q.change_pct, 6)
            out[cid] = entry
        return out

    def coingecko_global(self) -> dict[str, Any]:
        quotes = [self.quote(s) for s in DEFAULT_COINS]
        listed = sum(q.market_cap for q in quotes)
        listed_open = sum(q.open_24h * q.supply for q in quotes)
        total = listed / LISTED_SHARE
        volume = sum(q.quote_volume for q in quotes) / LISTED_SHARE
        btc, eth = quotes[0], quotes[1]
        return {"data": {
            "active_cryptocurrencies": 17_245,
            "upcoming_icos": 0,
            "ongoing_icos": 49,
            "ended_icos": 3_376,
            "markets": 1_318,
            "total_market_cap": {"usd": round(total, 2), "btc": round(total / btc.price, 4),
                                 "eth": round(total / eth.price, 4)},
            "total_volume": {"usd": round(volume, 2), "btc": round(volume / btc.price, 4),
                             "eth": round(volume / eth.price, 4)},
            "market_cap_percentage": {q.symbol.lower(): round(q.market_cap / total * 100, 4)
                                      for q in quotes},
            "market_cap_change_percentage_24h_usd": round((listed / listed_open - 1) * 100, 6),
            "updated_at": int(time.time()),
        }}

    def binance_ticker(self, pair: str) -> dict[str, Any]:
        q = self.quote(pair[:-4] if pair.endswith("USDT") else pair)
        now_ms = int(time.time() * 1000)
        last, open_ = q.price, q.open_24h
        volume = q.quote_volume / last
        return {
            "symbol": pair,
            "priceChange": _dec(last - open_),
            "priceChangePercent": f"{q.change_pct:.3f}",
            "weightedAvgPrice": _dec((last + open_) / 2),
            "prevClosePrice": _dec(open_),
            "lastPrice": _dec(last),
            "lastQty": _dec(0.01),
            "bidPrice": _dec(last * (1 - 1e-5)),
            "bidQty": _dec(1.5),
            "askPrice": _dec(last * (1 + 1e-5)),
            "askQty": _dec(2.25),
            "openPrice": _dec(open_),
            "highPrice": _dec(max(last, open_) * 1.01),
            "lowPrice": _dec(min(last, open_) * 0.99),
            "volume": _dec(volume),
            "quoteVolume": _dec(q.quote_volume),
            "openTime": now_ms - 86_400_000,
            "closeTime": now_ms,
            "firstId": 1_000_000,
            "lastId": 1_000_000 + int(volume) % 1_000_000,
            "count": int(volume) % 1_000_000 + 1,
        }

    def fear_greed(self, limit: int) -> dict[str, Any]:
        # Sentiment follows Bitcoin's day: a 5 % rise reads as greed.
        change = self.quote("BTC").change_pct
        value = max(0, min(100, round(50 + 6 * change)))
        now = int(time.time())
        day = now - now % 86_400
        data = []
        for i in range(limit):
            v = max(0, min(100, value - 3 * i))
            data.append({"value": str(v), "value_classification": fear_greed_label(v),
                         "timestamp": str(day - i * 86_400)})
        data[0]["time_until_update"] = str(day + 86_400 - now)
        return {"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}}


def _dec(x: float) -> str:
    return f"{x:.8f}"


def _round_price(x: float) -> float:
    # CoinGecko rounds to a handful of significant digits.
    return float(f"{x:.6g}") if x < 1 else round(x, 2 if x >= 1000 else 4)
