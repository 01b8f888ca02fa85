"""Structured logs: one JSON object per line, one line per event.

Every event names itself (``event``) and, where a node is involved, carries
``node`` and ``role``. Values that look like Redis URLs are redacted before
they are written, and the value of every secret setting (tokens, API keys,
the Redis password) is masked wherever it appears in a line, in any of the
forms it can take there (as is, JSON-escaped, URL-encoded), so a secret can
never reach a log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from feed.config.settings import secret_values
from feed.redisconn.url import redact_url

__all__ = ["JsonFormatter", "configure_logging", "log_event", "redact_text"]

# Any URL of these schemes; redact_url masks what is secret in it (user-info
# passwords, ``?...password=`` options) and leaves the rest as it was.
_URL = re.compile(r"\b(?:rediss?(?:\+sentinel)?|unix|https?)://[^\s'\"\\]+")


def redact_text(text: str) -> str:
    """Replace every URL with credentials inside ``text`` by its redacted form."""
    if "@" not in text and "password" not in text.lower():
        return text  # the common case: nothing to mask, no regex pass
    return _URL.sub(lambda m: redact_url(m.group(0)) or "", text)


def secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """Every form a secret can take inside a JSON log line, longest first."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}
    # Longest first, so a secret that contains another is masked whole.
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON; extra fields come from ``record.fields``.

    ``secrets`` (default: read from the environment, see
    :func:`feed.config.secret_values`) are masked as ``***`` in every line.
    """

    def __init__(self, *args: Any, secrets: Iterable[str] | None = None,
                 env: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        found = secret_values(os.environ if env is None else env) if secrets is None else secrets
        self.secrets = secret_forms(found)

    def mask(self, line: str) -> str:
        for form in self.secrets:
            if form in line:
                line = line.replace(form, "***")
        return line

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
        return self.mask(redact_text(json.dumps(out, default=str, separators=(",", ":"))))


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

