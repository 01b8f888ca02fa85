"""Upstream market providers: CoinGecko, Binance and the Fear & Greed index.

:func:`feed.providers.fetcher.build_fetcher` returns a callable that fetches
every configured provider and merges the answers into one normalised
snapshot ``data`` dict; see docs/PROVIDERS.md for the shape and the rules.
One module per provider (its endpoints and how to read their answers),
:mod:`~feed.providers.transport` for HTTP, :mod:`~feed.providers.snapshot`
for the merge, :mod:`~feed.providers.validate` for the checks every answer
must pass. Nothing is imported here.
"""
