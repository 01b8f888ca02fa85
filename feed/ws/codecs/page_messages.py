"""What the original service's pages send, as commands: accepted by every codec.

The original's pages send the text ``ping`` or ``{"type": "ping"}`` every
30 s and ``{"type": "request_market_data"}`` (or ``request_dashboard_data``)
on connect and every 2 minutes. The original ignored them; counted as
invalid here they would close such a page with 1008 every few minutes, so
both protocols answer them: a pong, or the current snapshot.
"""

from __future__ import annotations

import json

from feed.ws.protocol import Command

__all__ = ["original_command"]

#: The original pages' messages, by ``type``, and the command each means.
_TYPES = {"ping": "ping", "request_market_data": "snapshot", "request_dashboard_data": "snapshot"}


def original_command(text: str) -> Command | None:
    """The command one of the original pages' messages means, or None if ``text`` is none of them."""
    if text.strip().lower() == "ping":
        return Command("ping")
    if '"type"' not in text:
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        return None
    if isinstance(obj, dict) and "op" not in obj and isinstance(obj.get("type"), str):
        op = _TYPES.get(obj["type"])
        if op is not None:
            return Command(op)
    return None
