"""The one place that knows flask-sock and simple-websocket: the handshake, then the takeover.

flask-sock and simple-websocket answer the HTTP upgrade; the service then
takes the connection over and the request ends (:mod:`feed.ws.connection`
says why). What that takes, all of it here:

* simple-websocket runs without a reader thread (:class:`NoThread`), pings or
  message-size limit of its own: the connection does all three;
* compression is negotiated off (:func:`prepare_handshake` drops the
  client's permessage-deflate offer), so every client can be sent the same
  encoded frame;
* :func:`take_over` duplicates the socket (Gunicorn closes its descriptor
  when the request ends, the connection lives on in ours), keeps only
  wsproto's connection (not the handshake's h11 state, about 2 KiB never
  used again), marks the simple-websocket object closed (else flask-sock
  sends a close frame of its own when the route returns), and hands on the
  bytes the client sent right behind its handshake, which Gunicorn's request
  parser had already read into its buffer.
"""

from __future__ import annotations

import _socket
import socket
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SERVER_OPTIONS", "NoThread", "TakenOver", "prepare_handshake", "take_over"]


class NoThread:
    """Stands in for simple-websocket's reader thread: the connection reads instead."""

    def __init__(self, target: Callable[[], None] | None = None, **_: Any) -> None:
        self.name = "marketfeed-no-reader"
        self.target = target

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


#: flask-sock's ``SOCK_SERVER_OPTIONS``: simple-websocket does the upgrade only.
SERVER_OPTIONS = {"thread_class": NoThread, "ping_interval": None, "max_message_size": None}


def prepare_handshake(environ: MutableMapping[str, Any]) -> None:
    """Before the upgrade: negotiate compression off (one frame fits every client)."""
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


@dataclass(frozen=True)
class TakenOver:
    """A connection after the handshake: our socket, wsproto's state, bytes already read."""

    fd: int
    sock: socket.socket
    proto: Any  # wsproto.connection.Connection
    leftover: bytes


def take_over(ws: Any, environ: MutableMapping[str, Any]) -> TakenOver:
    """Take the connection from simple-websocket's ``ws``; see the module docstring.

    Raises OSError when the socket cannot be duplicated (out of descriptors).
    """
    fd = _socket.dup(ws.sock.fileno())
    # A plain C-level socket: gevent's wrapper (two watchers each) is not needed.
    sock = _socket.socket(ws.sock.family, socket.SOCK_STREAM, 0, fd)
    sock.setblocking(False)
    ws.connected = False
    return TakenOver(fd, sock, ws.ws.connection, _leftover(environ))


def _leftover(environ: MutableMapping[str, Any]) -> bytes:
    # Gunicorn's parser reads the socket in chunks; what followed the
    # request's headers in the same packet stays in its buffer.
    body = environ.get("wsgi.input")
    unreader = getattr(getattr(body, "reader", None), "unreader", None)
    take = getattr(unreader, "take_buffered", None)
    if take is None:
        return b""
    try:
        data = take()
    except (OSError, ValueError):
        return b""
    return data if isinstance(data, bytes) else b""
