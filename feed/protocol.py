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
from typing import Any

__all__ = ["OPS", "Command", "CommandError", "error_message", "parse_command"]

OPS = ("ping", "snapshot", "status")


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
