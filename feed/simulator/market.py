"""The simulated market: random-walk prices and the providers' JSON shapes.

Every listed coin (:data:`COINS`) walks on its own random stream, seeded
from the exchange's seed and the symbol, and advances once per ``tick`` of
time since start. So two exchanges with the same seed quote the same prices
at the same tick, and asking more often does not make the price move faster.
Nothing else has a price: an unlisted symbol is :class:`UnknownSymbol`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BINANCE_QUOTE", "COINS", "ETFS", "Coin", "Market", "Quote", "UnknownSymbol", "fear_greed_label"]


@dataclass(frozen=True)
class Coin:
    coingecko_id: str
    price: float  # starting price in USD, roughly late 2025
    supply: float  # circulating supply
    on_binance: bool = True  # Binance spot lists <SYMBOL>USDT
    binance_status: str = "TRADING"  # its exchangeInfo status; BREAK: listed, not traded
    volatility: float = 0.0015  # log-price standard deviation per tick (TYPICAL_VOLATILITY)


# What the simulated exchanges list. Binance knows only the pairs marked
# on_binance, CoinGecko only these ids: neither invents a price for anything
# else, as the real ones do not. The ids are CoinGecko's own and are kept
# here, not taken from the client's table in feed/providers, so a client
# that maps a ticker to the wrong id gets the real answer: nothing.
# XMR (delisted by Binance in 2024) and USDT (the quote asset itself) are on
# CoinGecko only, so "Binance lacks it, CoinGecko has it" can be tested.
COINS: dict[str, Coin] = {
    "BTC": Coin("bitcoin", 91_000.0, 19_800_000.0),
    "ETH": Coin("ethereum", 3_000.0, 120_500_000.0),
    "SOL": Coin("solana", 140.0, 520_000_000.0),
    "BNB": Coin("binancecoin", 600.0, 145_000_000.0),
    "XRP": Coin("ripple", 2.2, 57_000_000_000.0),
    "ADA": Coin("cardano", 0.45, 36_000_000_000.0),
    "DOGE": Coin("dogecoin", 0.15, 150_000_000_000.0),
    "TRX": Coin("tron", 0.28, 95_000_000_000.0),
    "DOT": Coin("polkadot", 2.5, 1_600_000_000.0),
    "LTC": Coin("litecoin", 85.0, 76_000_000.0),
    "AVAX": Coin("avalanche-2", 14.0, 420_000_000.0),
    "LINK": Coin("chainlink", 13.0, 680_000_000.0),
    "SHIB": Coin("shiba-inu", 0.0000085, 589_000_000_000_000.0),
    # Binance stopped trading MATICUSDT at the POL migration (2024-09): still listed in
    # exchangeInfo, with status BREAK; its ticker answers -1121 here.
    "MATIC": Coin("matic-network", 0.2, 10_000_000_000.0, binance_status="BREAK"),
    "UNI": Coin("uniswap", 6.0, 630_000_000.0),
    "ATOM": Coin("cosmos", 2.5, 480_000_000.0),
    "XLM": Coin("stellar", 0.25, 32_000_000_000.0),
    "XMR": Coin("monero", 350.0, 18_400_000.0, on_binance=False),
    "USDT": Coin("tether", 1.0, 185_000_000_000.0, on_binance=False, volatility=0.00002),
}
BINANCE_QUOTE = "USDT"
#: The US index ETFs Finnhub quotes here (the original's three), priced roughly late 2025;
#: steadier than coins. Finnhub answers zeros for any other symbol.
ETFS: dict[str, Coin] = {
    "DIA": Coin("", 440.0, 0.0, on_binance=False, volatility=0.0004),
    "SPY": Coin("", 600.0, 0.0, on_binance=False, volatility=0.0004),
    "QQQM": Coin("", 215.0, 0.0, on_binance=False, volatility=0.0005),
}
# The listed coins make up about this share of the whole market.
LISTED_SHARE = 0.9
TYPICAL_VOLATILITY = 0.0015
MAX_STEPS = 10_000  # per catch-up; a longer idle gap is jumped over

_BY_ID = {coin.coingecko_id: symbol for symbol, coin in COINS.items()}


class UnknownSymbol(KeyError):
    """A symbol the simulated market does not list; nothing is invented for it."""


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
    def __init__(self, symbol: str, coin: Coin, seed: int) -> None:
        self.rng = random.Random(f"{seed}:{symbol}")
        self.coin = coin
        self.price = coin.price
        # A 24 h change of up to 4 % for a coin of typical volatility, less for a steadier one.
        swing_pct = 4.0 * coin.volatility / TYPICAL_VOLATILITY
        self.open = coin.price / (1.0 + self.rng.uniform(-swing_pct, swing_pct) / 100.0)
        self.steps = 0


class Market:
    """Thread-safe random-walk quotes for :data:`COINS`; ``clock`` and ``tick`` are for tests."""

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
        """The quote of a listed symbol; :class:`UnknownSymbol` for any other."""
        symbol = symbol.upper()
        coin = COINS.get(symbol) or ETFS.get(symbol)
        if coin is None:
            raise UnknownSymbol(symbol)
        with self._lock:
            walk = self._walks.get(symbol)
            if walk is None:
                walk = self._walks[symbol] = _Walk(symbol, coin, self.seed)
            target = int((self.clock() - self._start) / self.tick)
            if target - walk.steps > MAX_STEPS:
                walk.steps = target - MAX_STEPS
            while walk.steps < target:
                walk.price *= math.exp(walk.rng.gauss(0.0, coin.volatility))
                walk.steps += 1
            return Quote(symbol, walk.price, walk.open, coin.supply)

    @staticmethod
    def binance_status(pair: str) -> str:
        """``pair``'s exchangeInfo status (``TRADING``, or ``BREAK`` for one no longer traded)."""
        coin = COINS.get(pair.removesuffix(BINANCE_QUOTE))
        return coin.binance_status if coin is not None else "TRADING"

    @staticmethod
    def binance_pairs() -> dict[str, str]:
        """``{PAIR: base asset}`` for every pair Binance lists, in listing order."""
        return {f"{s}{BINANCE_QUOTE}": s for s, coin in COINS.items() if coin.on_binance}

    # --- provider shapes ------------------------------------------------
    def coingecko_simple_price(self, ids: list[str], currencies: list[str],
                               with_change: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cid in ids:
            symbol = _BY_ID.get(cid)
            if symbol is None:
                continue  # CoinGecko leaves out ids it does not know
            q = self.quote(symbol)
            entry: dict[str, Any] = {}
            if "usd" in currencies:
                entry["usd"] = _round_price(q.price)
                if with_change:
                    entry["usd_24h_change"] = round(q.change_pct, 6)
            out[cid] = entry
        return out

    def coingecko_global(self) -> dict[str, Any]:
        quotes = [self.quote(s) for s in COINS]
        listed = sum(q.market_cap for q in quotes)
        listed_open = sum(q.open_24h * q.supply for q in quotes)
        total = listed / LISTED_SHARE
        volume = sum(q.quote_volume for q in quotes) / LISTED_SHARE
        btc, eth = quotes[0], quotes[1]
        # Like CoinGecko: the share of the ten largest coins only.
        top = sorted(quotes, key=lambda q: q.market_cap, reverse=True)[:10]
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
                                      for q in top},
            "market_cap_change_percentage_24h_usd": round((listed / listed_open - 1) * 100, 6),
            "updated_at": int(time.time()),
        }}

    def binance_ticker(self, pair: str) -> dict[str, Any]:
        """The 24 h ticker of a listed pair; :class:`UnknownSymbol` for any other."""
        if self.binance_status(pair) != "TRADING":
            raise UnknownSymbol(pair)  # not traded any more: the ticker knows it no longer
        base = self.binance_pairs().get(pair)
        if base is None:
            raise UnknownSymbol(pair)
        q = self.quote(base)
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

    def binance_daily_klines(self, pair: str, limit: int) -> list[list[Any]]:
        """``limit`` daily candles of a listed pair, oldest first, the last one today's (still open).

        The past days are a walk of their own, the same for the same seed and
        day, that ends at today's open; today's candle closes at the price now.
        """
        base = self.binance_pairs().get(pair)
        if base is None:
            raise UnknownSymbol(pair)
        q = self.quote(base)
        now_ms = int(time.time() * 1000)
        day_ms = 86_400_000
        today = now_ms - now_ms % day_ms
        rng = random.Random(f"{self.seed}:{pair}:{today}")
        closes = [q.open_24h]
        for _ in range(limit - 1):
            closes.append(closes[-1] / math.exp(rng.gauss(0.0, 0.03)))
        closes.reverse()  # day i opens at closes[i] and closes at the next day's open; today opened last
        rows = []
        for i in range(limit):
            start = today - (limit - 1 - i) * day_ms
            close = closes[i + 1] if i + 1 < limit else q.price
            open_ = closes[i]
            rows.append([start, _dec(open_), _dec(max(open_, close) * 1.01), _dec(min(open_, close) * 0.99),
                         _dec(close), _dec(1000.0), start + day_ms - 1, _dec(1000.0 * close), 5000,
                         _dec(500.0), _dec(500.0 * close), "0"])
        return rows

    def cmc_global_metrics(self) -> dict[str, Any]:
        """CoinMarketCap's global metrics: the same market as CoinGecko's ``/global``, in its shape."""
        cg = self.coingecko_global()["data"]
        shares = cg["market_cap_percentage"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return {"status": {"timestamp": stamp, "error_code": 0, "error_message": None, "elapsed": 7,
                           "credit_count": 1, "notice": None},
                "data": {"btc_dominance": shares.get("btc", 0.0), "eth_dominance": shares.get("eth", 0.0),
                         "active_cryptocurrencies": len(COINS),
                         "quote": {"USD": {"total_market_cap": cg["total_market_cap"]["usd"],
                                           "total_volume_24h": cg["total_volume"]["usd"],
                                           "total_market_cap_yesterday_percentage_change":
                                               cg["market_cap_change_percentage_24h_usd"],
                                           "last_updated": stamp}}}}

    def finnhub_quote(self, symbol: str) -> dict[str, Any]:
        """Finnhub's ``/quote`` of an index ETF; zeros for a symbol it does not know, as Finnhub answers."""
        if symbol not in ETFS:
            return {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
        q = self.quote(symbol)
        last, prev = round(q.price, 2), round(q.open_24h, 2)
        return {"c": last, "d": round(last - prev, 4), "dp": round((last / prev - 1) * 100, 4),
                "h": round(max(last, prev) * 1.004, 2), "l": round(min(last, prev) * 0.996, 2),
                "o": prev, "pc": prev, "t": int(time.time())}

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
