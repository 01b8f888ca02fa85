"""Gunicorn's access log as structured events, with every secret masked.

Gunicorn writes one access line per HTTP request whenever logging is
configured through ``logconfig_dict`` (as ``gunicorn.conf.py`` does), and its
default line carries the raw request URI and the Referer, so ``?token=...``
would reach the log on every dashboard load and refused upgrade. This logger
writes one ``http_request`` event per request instead: the query's values
that look like credentials are masked, the Referer is cut to its path, and
no header beyond the user agent is logged.

Loaded by the Gunicorn master (``logger_class``): standard library and
gunicorn only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from gunicorn.glogging import Logger

__all__ = ["RequestLogger", "redact_query"]

# Query parameters whose values are never logged.
SECRET_WORDS = ("token", "key", "password", "passwd", "secret", "auth", "signature", "sig")
MAX_FIELD = 200


def redact_query(query: str) -> str:
    """``query`` with the value of every credential-like parameter replaced by ``***``."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    safe = [(k, "***" if any(w in k.lower() for w in SECRET_WORDS) else v[:MAX_FIELD]) for k, v in pairs]
    return urlencode(safe, safe="*,")[: 2 * MAX_FIELD]


def _referer(value: str | None) -> str | None:
    # The page that linked here may carry its own token in its query or fragment.
    if not value:
        return None
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:MAX_FIELD] if parts.netloc else None


class RequestLogger(Logger):
    """Gunicorn's logger, with :meth:`access` writing structured, masked events."""

    def access(self, resp: Any, req: Any, environ: dict, request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        try:
            code: int | str = int(status)
        except (TypeError, ValueError):
            code = str(status)[:8]
        fields = {
            "event": "http_request",
            "method": str(environ.get("REQUEST_METHOD", ""))[:16],
            "path": str(environ.get("PATH_INFO", ""))[:MAX_FIELD],
            "query": redact_query(str(environ.get("QUERY_STRING", ""))),
            "status": code,
            "bytes": getattr(resp, "sent", None),
            "ms": round(request_time.total_seconds() * 1000, 1),
            "remote": environ.get("REMOTE_ADDR"),
            "user_agent": str(environ.get("HTTP_USER_AGENT", ""))[:MAX_FIELD],
            "referer": _referer(environ.get("HTTP_REFERER")),
        }
        try:
            self.access_log.info("http_request", extra={"fields": fields})
        except Exception:  # noqa: BLE001 - a log line must never fail a request
            self.error("access log failed for %s", fields["path"])
