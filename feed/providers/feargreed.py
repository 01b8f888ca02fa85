"""The Crypto Fear & Greed Index from alternative.me.

Documented shape (https://alternative.me/crypto/fear-and-greed-index/#api)::

    GET /fng/?limit=1
    {"name": "Fear and Greed Index",
     "data": [{"value": "54", "value_classification": "Neutral",
               "timestamp": "1732579200", "time_until_update": "3600"}],
     "metadata": {"error": null}}
"""

from __future__ import annotations

from typing import Any

from feed.providers.transport import Call
from feed.providers.validate import InvalidResponse, expect

__all__ = ["LIVE_URL", "NAME", "calls", "parse_fng"]

NAME = "feargreed"
LIVE_URL = "https://api.alternative.me"


def calls(base_url: str, symbols: tuple[str, ...]) -> list[Call]:
    return [Call(NAME, "sentiment", f"{base_url}/fng/", {"limit": "1"}, parse_fng)]


def parse_fng(payload: Any) -> dict[str, Any]:
    """The latest index as ``{"value": 0..100, "label": str}``."""
    expect(payload, dict, "fng")
    meta = payload.get("metadata")
    if isinstance(meta, dict) and meta.get("error"):
        raise InvalidResponse(f"fng: the API reports an error: {str(meta['error'])[:80]}")
    entries = expect(payload.get("data"), list, "fng.data")
    if not entries:
        raise InvalidResponse("fng.data is empty")
    latest = expect(entries[0], dict, "fng.data[0]")
    raw = latest.get("value")
    # The API sends the value as a string of digits; accept a plain int too.
    if isinstance(raw, str) and raw.strip().isdigit():
        value = int(raw.strip())
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise InvalidResponse(f"fng.data[0].value: {str(raw)[:40]!r} is not an integer")
    if not 0 <= value <= 100:
        raise InvalidResponse(f"fng.data[0].value: {value} is outside 0..100")
    label = expect(latest.get("value_classification"), str, "fng.data[0].value_classification")
    label = label.strip()
    if not label or len(label) > 40:
        raise InvalidResponse("fng.data[0].value_classification is empty or too long")
    return {"value": value, "label": label}
