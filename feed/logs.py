"""Structured logs: one JSON object per line, one line per event.

Every event names itself (``event``) and, where a node is involved, carries
``node`` and ``role``. Values that look like Redis URLs are redacted before
they are written, so a password can never reach a log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from .config import redact_url

__all__ = ["JsonFormatter", "configure_logging", "log_event", "redact_text"]

# Any URL of these schemes; redact_url masks what is secret in it (user-info
# passwords, ``?...password=`` options) and leaves the rest as it was.
_URL = re.compile(r"\b(?:rediss?(?:\+sentinel)?|unix|https?)://[^\s'\"\\]+")


def redact_text(text: str) -> str:
    """Replace every URL with credentials inside ``text`` by its redacted form."""
    if "@" not in text and "password" not in text.lower():
        return text  # the common case: nothing to mask, no regex pass
    return _URL.sub(lambda m: redact_url(m.group(0)) or "", text)


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON; extra fields come from ``record.fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        else:
            out["event"] = "message"
        message = record.getMessage()
        if message and message != out.get("event"):
            out["msg"] = message
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(out, default=str, separators=(",", ":")))


def configure_logging(level: str | int = "INFO", stream: Any = None) -> None:
    """Route the root logger to ``stream`` (stderr) as JSON lines; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_marketfeed", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._marketfeed = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; ``fields`` become top-level JSON keys."""
    if logger.isEnabledFor(level):
        fields = {"event": event, **fields}
        logger.log(level, event, extra={"fields": fields})

