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
from feed.providers.validate import InvalidResponse, error_json, expect

__all__ = ["LIVE_URL", "NAME", "explain", "fng_call", "parse_fng"]

NAME = "feargreed"
LIVE_URL = "https://api.alternative.me"


def explain(status: int, body: bytes, content_type: str) -> tuple[int | None, str]:
    """Its answers name errors in ``metadata.error``."""
    obj, text = error_json(body)
    if text is not None:
        return None, text
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return None, str(meta.get("error") or "")[:240] if isinstance(meta, dict) else ""


def fng_call(base_url: str) -> Call:
    return Call(NAME, "sentiment", f"{base_url}/fng/", {"limit": "1"}, parse_fng, explain)


def parse_fng(payload: Any) -> dict[str, Any]:
    """The latest index as ``{"value": 0..100, "label": str, "next_update_s": int | None}``.

    ``next_update_s`` is the API's ``time_until_update``: the index changes
    once a day, and there is no point asking before then.
    """
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
    until = latest.get("time_until_update")
    next_update = int(until) if isinstance(until, str) and until.strip().isdigit() else \
        until if isinstance(until, int) and not isinstance(until, bool) and until >= 0 else None
    return {"value": value, "label": label, "next_update_s": next_update}
