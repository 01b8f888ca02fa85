"""Client -> server commands: small JSON objects, checked before anything runs.

    {"op": "ping", "id": 1}       -> {"type": "pong", "id": 1, "ts": "..."}
    {"op": "snapshot"}            -> the current snapshot (as on connect)
    {"op": "status"}              -> {"type": "status", node, role, leader, epoch, ...}

``id`` is optional (a string or number up to 64 characters) and is echoed, so
a client can match replies. Anything else is answered with
``{"type": "error", "error": CODE, "message": TEXT}`` and the connection
stays open; a client that keeps sending bad messages is closed with 1008.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = ["OPS", "RESERVED_CODES", "CloseCode", "Command", "CommandError", "close_label", "error_message",
           "parse_command"]

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


def parse_command(text: str) -> Command:
    """Parse one client message; raises :class:`CommandError`."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise CommandError("invalid_json", "messages must be JSON objects like {\"op\": \"ping\"}") from None
    if not isinstance(obj, dict):
        raise CommandError("invalid_command", "a command is a JSON object with an \"op\" field")
    request_id = obj.get("id")
    if request_id is not None and not (
        (isinstance(request_id, (int, float)) and not isinstance(request_id, bool))
        or (isinstance(request_id, str) and len(request_id) <= 64)
    ):
        raise CommandError("invalid_command", "\"id\" must be a number or a string of at most 64 characters")
    op = obj.get("op")
    if not isinstance(op, str):
        raise CommandError("invalid_command", "missing \"op\": one of " + ", ".join(OPS), request_id)
    if op not in OPS:
        raise CommandError("unknown_command", f"unknown op {op[:32]!r}; known: {', '.join(OPS)}", request_id)
    extra = set(obj) - {"op", "id"}
    if extra:
        fields = ", ".join(sorted(extra))[:100]
        raise CommandError("invalid_command", f"unexpected fields: {fields}", request_id)
    return Command(op, request_id)


def error_message(exc: CommandError) -> str:
    out: dict[str, Any] = {"type": "error", "error": exc.code, "message": exc.message}
    if exc.request_id is not None:
        out["id"] = exc.request_id
    return json.dumps(out, separators=(",", ":"))
