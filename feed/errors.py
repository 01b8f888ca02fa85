"""The exceptions the feed raises to its callers, under one base class."""

from __future__ import annotations

__all__ = ["FetchFailed", "MarketfeedError"]


class MarketfeedError(Exception):
    """Base of every error this package raises on purpose."""


class FetchFailed(MarketfeedError):
    """No usable market data came back from any upstream provider.

    ``failures`` maps each provider that was tried to why it failed.
    """

    def __init__(self, message: str, failures: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failures = dict(failures or {})
