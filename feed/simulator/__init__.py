"""The simulated exchange: CoinGecko, Binance and Fear & Greed shapes on one port.

It counts calls per path and per calling node (``X-Marketfeed-Node``) and
takes fault injection at run time; see docs/PROVIDERS.md. Run it with
``python -m feed sim --port 8090`` or ``SimulatedExchange(port=0).start()``.
"""

from __future__ import annotations

from .cli import main
from .faults import FaultError, FaultSpec
from .market import Market
from .server import SimulatedExchange

__all__ = ["FaultError", "FaultSpec", "Market", "SimulatedExchange", "main"]
