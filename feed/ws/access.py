"""Who may open ``/ws`` and the operator endpoints, checked before anything runs.

Checked before the WebSocket handshake, so a refused client gets a plain HTTP
answer (400, 401, 403, 426) and never an open socket.

* The handshake itself must be a valid RFC 6455 one: ``Sec-WebSocket-Version:
  13`` (else 426 naming the version we speak) and a ``Sec-WebSocket-Key`` of
  16 bytes in base64 (else 400).
* A browser page may connect from this service's own origin (same host) or
  from an origin listed in ``ALLOWED_ORIGINS`` (``*`` allows any). A page on
  another site cannot: browsers always send ``Origin``, and the server is the
  only one who can check it. ``X-Forwarded-Host`` counts only when the
  request comes from a proxy in ``FORWARDED_ALLOW_IPS`` (as Gunicorn and
  Werkzeug's ProxyFix treat forwarded headers): anyone else could send it.
* Clients that send no ``Origin`` (bots, CLI tools) are allowed unless
  ``WS_ALLOW_NO_ORIGIN=false``.
* With ``WS_TOKEN`` set, every client must present it, as ``?token=...`` or
  ``Authorization: Bearer ...``.
* With ``OPERATOR_TOKEN`` set, ``/status``, ``/metrics`` and the details of
  ``/health`` need ``Authorization: Bearer <it>``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from feed.config.settings import Settings

__all__ = ["RefusedOrigins", "Verdict", "check_access", "check_handshake", "client_address",
           "operator_allowed", "trusted_proxy"]

WS_VERSION = "13"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    status: int = 200
    reason: str = ""  # machine-readable: handshake, version, origin, no_origin, token
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)


OK = Verdict(True)


def trusted_proxy(environ: Mapping[str, str], settings: Settings) -> bool:
    """True if the peer is a proxy whose ``X-Forwarded-*`` headers we believe."""
    allowed = settings.forwarded_allow_ips
    if "*" in allowed:
        return True
    try:
        peer = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
    except ValueError:
        return False  # a unix socket or nothing: no proxy we know of
    for item in allowed:
        net = ipaddress.ip_network(item, strict=False)
        if peer.version == net.version and peer in net:
            return True
    return False


def client_address(environ: Mapping[str, str], settings: Settings) -> str:
    """The client's address: the one our trusted proxy saw, else the peer's."""
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded and trusted_proxy(environ, settings):
        # The last entry is the one our proxy added; earlier ones are the
        # client's own claims.
        return forwarded.rsplit(",", 1)[-1].strip()[:64] or "?"
    return environ.get("REMOTE_ADDR") or "?"


def check_handshake(environ: Mapping[str, str]) -> Verdict:
    """A valid RFC 6455 opening handshake (after ``Upgrade: websocket``)."""
    connection = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",")}
    if "upgrade" not in connection:
        return Verdict(False, 400, "handshake", "a WebSocket handshake needs Connection: Upgrade")
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if version != WS_VERSION:
        return Verdict(False, 426, "version",
                       f"unsupported Sec-WebSocket-Version {version[:16]!r}; this server speaks {WS_VERSION}",
                       {"Sec-WebSocket-Version": WS_VERSION})
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        return Verdict(False, 400, "handshake", "Sec-WebSocket-Key must be 16 bytes in base64")
    return OK


def check_access(environ: Mapping[str, str], settings: Settings) -> Verdict:
    origin = environ.get("HTTP_ORIGIN")
    if origin is None or origin == "":
        if not settings.allow_no_origin:
            return Verdict(False, 403, "no_origin", "an Origin header is required")
    else:
        origin = origin.rstrip("/")
        host = environ.get("HTTP_HOST")
        forwarded = environ.get("HTTP_X_FORWARDED_HOST")
        if forwarded and trusted_proxy(environ, settings):
            host = forwarded.split(",", 1)[0].strip()
        allowed = (
            "*" in settings.allowed_origins
            or origin in settings.allowed_origins
            or _same_host(origin, host)
        )
        if not allowed:
            return Verdict(False, 403, "origin", f"origin {origin[:100]!r} is not allowed")
    if settings.ws_token and not _matches(_presented_token(environ, query=True), settings.ws_token):
        return Verdict(False, 401, "token", "a valid token is required (?token=... or "
                                            "Authorization: Bearer ...)")
    return OK


class RefusedOrigins:
    """The origins this worker has refused, so each is logged once, with the setting that admits it.

    A page of the original service is served from another site; until
    ``ALLOWED_ORIGINS`` names that site every one of its upgrades is a 403,
    which an operator must hear about once, not on every reconnect. Origins
    are chosen by clients: only the first ``limit`` distinct ones are kept.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def first(self, origin: str) -> bool:
        """True the first time ``origin`` is refused (and while fewer than ``limit`` were)."""
        if origin in self._seen or len(self._seen) >= self.limit:
            return False
        self._seen.add(origin)
        return True


def operator_allowed(environ: Mapping[str, str], settings: Settings) -> bool:
    """True if no ``OPERATOR_TOKEN`` is set, or the request presents it as a bearer token."""
    if not settings.operator_token:
        return True
    # Header only: a token in a query string ends up in proxies' logs.
    return _matches(_presented_token(environ, query=False), settings.operator_token)


def _same_host(origin: str, host: str | None) -> bool:
    if not host:
        return False
    netloc = urlsplit(origin).netloc.lower()
    return netloc == host.lower()


def _matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def _presented_token(environ: Mapping[str, str], *, query: bool) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if not query:
        return None
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None
