"""The project's own protocol (docs/PROTOCOL.md): JSON text frames, the envelope as stored plus two fields.

Server -> client::

    {"type": "snapshot", "epoch", "seq", "leader", "served_by", "fetched_at", "published_at", "stale", "data"}
    {"type": "stale", "epoch", "seq", "served_by", "fetched_at", "age_s"}
    {"type": "pong", "ts", "served_by"[, "id"]}
    {"type": "status", ...this worker's view[, "id"]}
    {"type": "error", "error": CODE, "message": TEXT[, "id"]}

Client -> server::

    {"op": "ping", "id": 1}       -> pong
    {"op": "snapshot"}            -> the current snapshot (as on connect), or error no_snapshot
    {"op": "status"}              -> status

The original service's pages' messages (``ping``, ``{"type": "ping"}``,
``{"type": "request_market_data"}``) are answered as ping and snapshot
(feed/ws/codecs/page_messages.py).

``id`` is optional (a string or number up to 64 characters) and is echoed,
so a client can match replies.
"""

from __future__ import annotations

import json
from typing import Any

from feed.envelope import Envelope
from feed.times import iso_utc
from feed.ws.codecs.base import View, json_frame, with_id
from feed.ws.codecs.page_messages import original_command
from feed.ws.frames import text_frame
from feed.ws.protocol import OPS, Command, CommandError

__all__ = ["CODEC", "MarketfeedCodec"]

# Field order as documented; data last because it is the bulk.
_ORDER = ("type", "epoch", "seq", "leader", "served_by", "fetched_at", "published_at", "stale", "data")



class MarketfeedCodec:
    """See the module docstring."""

    name = "marketfeed"

    def snapshot(self, env: Envelope, view: View) -> bytes:
        out = env.to_dict()
        out["leader"] = view.leader
        out["served_by"] = view.served_by
        out["stale"] = view.stale
        return text_frame(json.dumps({k: out[k] for k in _ORDER if k in out}, separators=(",", ":"),
                                     allow_nan=False))

    def stale_notice(self, env: Envelope, served_by: str, age: float) -> bytes:
        return json_frame({"type": "stale", "epoch": env.epoch, "seq": env.seq, "served_by": served_by,
                       "fetched_at": iso_utc(env.fetched_at), "age_s": round(age, 1)})

    def parse(self, text: str) -> Command:
        cmd = original_command(text)
        if cmd is not None:
            return cmd
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise CommandError("invalid_json",
                               "messages must be JSON objects like {\"op\": \"ping\"}") from None
        if not isinstance(obj, dict):
            raise CommandError("invalid_command", "a command is a JSON object with an \"op\" field")
        request_id = obj.get("id")
        if request_id is not None and not (
            (isinstance(request_id, (int, float)) and not isinstance(request_id, bool))
            or (isinstance(request_id, str) and len(request_id) <= 64)
        ):
            raise CommandError("invalid_command",
                               "\"id\" must be a number or a string of at most 64 characters")
        op = obj.get("op")
        if not isinstance(op, str):
            raise CommandError("invalid_command", "missing \"op\": one of " + ", ".join(OPS), request_id)
        if op not in OPS:
            raise CommandError("unknown_command", f"unknown op {op[:32]!r}; known: {', '.join(OPS)}",
                               request_id)
        extra = set(obj) - {"op", "id"}
        if extra:
            fields = ", ".join(sorted(extra))[:100]
            raise CommandError("invalid_command", f"unexpected fields: {fields}", request_id)
        return Command(op, request_id)

    def pong(self, request_id: Any, ts: float, served_by: str) -> bytes:
        return json_frame(with_id({"type": "pong", "ts": iso_utc(ts), "served_by": served_by}, request_id))

    def status(self, request_id: Any, status: dict[str, Any]) -> bytes:
        return json_frame(with_id({"type": "status", **status}, request_id))

    def no_snapshot(self, request_id: Any) -> bytes:
        return json_frame(with_id({"type": "error", "error": "no_snapshot",
                                   "message": "no snapshot yet; one is sent as soon as it exists"},
                                  request_id))

    def error(self, exc: CommandError) -> bytes:
        return json_frame(with_id({"type": "error", "error": exc.code, "message": exc.message},
                                  exc.request_id))


#: The one instance: a codec holds no state.
CODEC = MarketfeedCodec()
