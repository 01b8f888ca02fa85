"""Names the providers, the simulated exchange and the settings share.

Standard library only: the settings (checked in the Gunicorn master) use it.
"""

from __future__ import annotations

__all__ = ["NODE_HEADER", "PROVIDER_NAMES"]

#: Every provider the service knows, in the order a snapshot lists them.
PROVIDER_NAMES = ("coingecko", "binance", "feargreed", "finnhub", "coinmarketcap")

#: The header naming the calling node; the simulated exchange counts calls by it.
NODE_HEADER = "X-Marketfeed-Node"
