"""Indicators computed from an upstream's candles: BTC's daily RSI(14), as the original showed it.

The original asked TAAPI for it (a paid secret, cached 3 h). The same number
comes from Binance's daily klines, which need no key: Wilder's RSI over the
closes, seeded with the simple mean of the first ``period`` changes and then
smoothed with ``(prev * (period - 1) + x) / period``, as Wilder defined it
and TA-Lib computes it (tests/test_indicators.py checks against TA-Lib).
With 200 closes the seed's weight left in the last value is below 1e-6.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

__all__ = ["rsi"]


def rsi(closes: Sequence[float], period: int = 14) -> float:
    """The RSI of the last close; ValueError with fewer than ``period + 1`` closes."""
    if period < 1:
        raise ValueError("period must be at least 1")
    if len(closes) < period + 1:
        raise ValueError(f"RSI({period}) needs at least {period + 1} closes, got {len(closes)}")
    changes = [b - a for a, b in pairwise(closes)]
    gain = sum(max(c, 0.0) for c in changes[:period]) / period
    loss = sum(max(-c, 0.0) for c in changes[:period]) / period
    for c in changes[period:]:
        gain = (gain * (period - 1) + max(c, 0.0)) / period
        loss = (loss * (period - 1) + max(-c, 0.0)) / period
    if loss == 0.0:
        return 100.0 if gain > 0.0 else 50.0
    return 100.0 - 100.0 / (1.0 + gain / loss)
