"""Wall-clock times as the project writes them: ISO 8601 in UTC, to the millisecond.

Neutral: every package may use it (snapshots, the simulator's counts, the lab).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso_utc", "parse_iso"]


def iso_utc(ts: float) -> str:
    """Unix seconds -> ``2026-11-26T13:00:00.123Z``."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """Inverse of :func:`iso_utc` (accepts any ISO 8601 time with a zone)."""
    if not isinstance(text, str):
        raise TypeError(f"an ISO time is a string, not {type(text).__name__}")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError("time without a zone")
    return dt.timestamp()
