"""Who may open ``/ws``: an Origin allowlist and an optional shared token.

Checked before the WebSocket handshake, so a refused client gets a plain HTTP
403 (or 401) and never an open socket.

* A browser page may connect from this service's own origin (same host) or
  from an origin listed in ``ALLOWED_ORIGINS`` (``*`` allows any). A page on
  another site cannot: browsers always send ``Origin``, and the server is the
  only one who can check it.
* Clients that send no ``Origin`` (bots, CLI tools) are allowed unless
  ``WS_ALLOW_NO_ORIGIN=false``.
* With ``WS_TOKEN`` set, every client must present it, as ``?token=...`` or
  ``Authorization: Bearer ...``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from .config import Settings

__all__ = ["Verdict", "check_access"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    status: int = 200
    reason: str = ""  # machine-readable: origin, no_origin, token
    message: str = ""


def _same_host(origin: str, host: str | None) -> bool:
    if not host:
        return False
    netloc = urlsplit(origin).netloc.lower()
    return netloc == host.lower()


def check_access(environ: Mapping[str, str], settings: Settings) -> Verdict:
    origin = environ.get("HTTP_ORIGIN")
    if origin is None or origin == "":
        if not settings.allow_no_origin:
            return Verdict(False, 403, "no_origin", "an Origin header is required")
    else:
        origin = origin.rstrip("/")
        host = environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST")
        allowed = (
            "*" in settings.allowed_origins
            or origin in settings.allowed_origins
            or _same_host(origin, host)
        )
        if not allowed:
            return Verdict(False, 403, "origin", f"origin {origin[:100]!r} is not allowed")
    if settings.ws_token:
        presented = _presented_token(environ)
        if presented is None or not hmac.compare_digest(presented.encode(), settings.ws_token.encode()):
            return Verdict(False, 401, "token", "a valid token is required (?token=... or "
                                                "Authorization: Bearer ...)")
    return Verdict(True)


def _presented_token(environ: Mapping[str, str]) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None
