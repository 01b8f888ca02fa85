"""The simulated exchange: CoinGecko, Binance and Fear & Greed shapes on one port.

It counts calls per path and per calling node (``X-Marketfeed-Node``) and
takes fault injection at run time; see docs/PROVIDERS.md. Run it with
``python -m feed sim --port 8090`` or
``feed.simulator.server.SimulatedExchange(port=0).start()``. The market
(:mod:`~feed.simulator.market`), the endpoints (:mod:`~feed.simulator.routes`),
faults (:mod:`~feed.simulator.faults`), call counts (:mod:`~feed.simulator.stats`)
and the child process an unconfigured Gunicorn master runs
(:mod:`~feed.simulator.process`). Nothing is imported here.
"""
