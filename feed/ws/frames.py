"""WebSocket frames built once and written as they are (RFC 6455, server side).

A server's frames are not masked, so one encoded snapshot frame is valid on
every connection of a worker. Encoding it once per broadcast, instead of once
per client through wsproto, is what makes a fan-out cost one socket write per
client. Compression is negotiated off (see :mod:`feed.wsconn`), so no
per-connection state is involved.
"""

from __future__ import annotations

import struct

__all__ = ["PING", "close_frame", "text_frame"]

_FIN_TEXT = 0x81
_FIN_CLOSE = 0x88
_FIN_PING = 0x89

#: An empty ping; the same bytes for every connection.
PING = bytes((_FIN_PING, 0))


def _header(first: int, length: int) -> bytes:
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def text_frame(payload: str | bytes) -> bytes:
    """One complete, unfragmented text frame carrying ``payload`` (UTF-8)."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return _header(_FIN_TEXT, len(data)) + data


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control limit."""
    # Cut on a character boundary: a split UTF-8 sequence is a protocol error.
    text = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    body = struct.pack("!H", code) + text
    return _header(_FIN_CLOSE, len(body)) + body
