"""The exceptions the feed raises to its callers, under one base class."""

from __future__ import annotations

__all__ = ["ConfigError", "FetchFailed", "MarketfeedError"]


class MarketfeedError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(MarketfeedError, ValueError):
    """A setting is missing, unparsable or breaks a rule; the message says which."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class FetchFailed(MarketfeedError):
    """No call of this fetch brought anything new: every one that was made failed.

    ``failures`` maps each provider that was tried to why it failed. ``data``
    is the snapshot made of the sections kept from before (flagged stale as
    they age), or None when nothing is left to show.
    """

    def __init__(self, message: str, failures: dict[str, str] | None = None,
                 data: dict | None = None) -> None:
        super().__init__(message)
        self.failures = dict(failures or {})
        self.data = data
