"""Values as Redis returns them: bytes unless the client decodes responses."""

from __future__ import annotations

from typing import Any

__all__ = ["text"]


def text(value: Any) -> Any:
    """``bytes`` decoded as UTF-8 (bad bytes replaced); anything else as it is."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
