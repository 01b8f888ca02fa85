"""Which codec a connection speaks: the deployment's default, or the one its handshake asks for.

A client asks with the query parameter ``protocol`` (``/ws?protocol=original``
or ``?protocol=marketfeed``); without it, it gets the deployment's default
(``ORIGINAL_COMPAT=on``: the original's, else the project's own).
"""

from __future__ import annotations

from feed.ws.codecs.base import Codec
from feed.ws.codecs.marketfeed import CODEC as MARKETFEED
from feed.ws.codecs.original import CODEC as ORIGINAL

__all__ = ["CODECS", "choose", "default_codec"]

CODECS: dict[str, Codec] = {c.name: c for c in (MARKETFEED, ORIGINAL)}


def default_codec(original_compat: bool) -> Codec:
    return ORIGINAL if original_compat else MARKETFEED


def choose(asked: str | None, default: Codec) -> Codec:
    """The codec for a handshake's ``protocol`` parameter; ValueError names the known ones."""
    if asked is None or asked == "":
        return default
    codec = CODECS.get(asked.strip().lower())
    if codec is None:
        raise ValueError(f"unknown protocol {asked[:40]!r}; known: {', '.join(CODECS)}")
    return codec
