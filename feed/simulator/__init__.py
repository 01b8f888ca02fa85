"""The simulated exchange: CoinGecko, Binance and Fear & Greed shapes on one port.

It answers like the real APIs, their limits and error bodies included, so
the service's handling of them can be tested; it counts calls per path,
calling node (``X-Marketfeed-Node``), status and client IP, and takes fault
injection at run time; see docs/PROVIDERS.md. Run it with
``python -m feed sim --port 8090`` or
``feed.simulator.server.SimulatedExchange(port=0).start()``. The market
(:mod:`~feed.simulator.market`), the endpoints and error bodies
(:mod:`~feed.simulator.routes`), keys, rate limits and the CoinGecko cache
(:mod:`~feed.simulator.limits`), faults (:mod:`~feed.simulator.faults`), call
counts (:mod:`~feed.simulator.stats`) and the child process an unconfigured
Gunicorn master runs (:mod:`~feed.simulator.process`). Standard library
only. Nothing is imported here.
"""
