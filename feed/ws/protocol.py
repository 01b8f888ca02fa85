"""What every client protocol shares: the commands, their errors, the close codes.

A command is one of :data:`OPS`; each codec (feed/ws/codecs/) parses its own
wire form into a :class:`Command` or raises :class:`CommandError`, and
feed/ws/commands.py answers it. Anything that is not a command is answered
with an error and the connection stays open; a client that keeps sending
bad messages is closed with 1008.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = ["OPS", "RESERVED_CODES", "CloseCode", "Command", "CommandError", "close_label"]

OPS = ("ping", "snapshot", "status")


class CloseCode(IntEnum):
    """The close codes this server sends (docs/PROTOCOL.md says when)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # this server is stopping: reconnect elsewhere
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003  # binary frames
    ABNORMAL = 1006  # never sent: the connection just ended
    INVALID_DATA = 1007  # text that is not UTF-8
    POLICY = 1008  # too slow, too many messages, ping timeout
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


#: Codes that must never be sent in a close frame (RFC 6455 7.4.1).
RESERVED_CODES = frozenset({1004, 1005, 1006, 1015})
#: Codes a metric may carry as they are. Any other (a client may send any
#: code from 3000 to 4999) is counted by its range, so clients cannot grow
#: the label set.
STANDARD_CODES = frozenset({1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012,
                            1013, 1014})


def close_label(code: int | None) -> str:
    """The metric label for a close code: the code if standard, else its class."""
    code = CloseCode.ABNORMAL if code is None else int(code)
    if code in STANDARD_CODES:
        return str(code)
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


class CommandError(ValueError):
    """A message that is not a valid command; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Command:
    op: str
    request_id: Any = None
