"""The original service's protocol, for its clients as they are (docs/COMPATIBILITY.md).

Server -> client::

    {"type": "dashboard_update", "data": {flat fields, feed/original.py}, "timestamp": RFC 3339,
     "source": "external_apis" | "simulated", "stale": bool}
    {"type": "pong", "timestamp"}              (to a ping)
    {"type": "status", ...} / {"type": "error", "error", "message"}

The original sent ``dashboard_update`` on every tick from every instance;
here it goes out on every snapshot, and again when the snapshot a client
holds turns stale (with ``"stale": true``). Its pages update on any message
with ``data`` and ignore the rest, so replies carry no ``data``.

Client -> server: what the original's pages send, ``ping`` (text),
``{"type": "ping"}``, ``{"type": "request_market_data"}`` and
``{"type": "request_dashboard_data", "timestamp": ms}``, plus the project's
own ``{"op": ...}`` commands. The original ignored every message; here each
is answered, and none is counted as invalid.
"""

from __future__ import annotations

from typing import Any

from feed.envelope import Envelope
from feed.original import market_object
from feed.times import iso_utc
from feed.ws.codecs.base import View, json_frame, with_id
from feed.ws.codecs.marketfeed import CODEC as MARKETFEED
from feed.ws.codecs.page_messages import original_command
from feed.ws.protocol import Command, CommandError

__all__ = ["CODEC", "OriginalCodec"]


class OriginalCodec:
    """See the module docstring."""

    name = "original"

    def snapshot(self, env: Envelope, view: View) -> bytes:
        return self._update(env, view.stale)

    def stale_notice(self, env: Envelope, served_by: str, age: float) -> bytes:
        # The original's clients know no stale message: they get the data
        # they hold again, saying it is stale.
        return self._update(env, True)

    @staticmethod
    def _update(env: Envelope, stale: bool) -> bytes:
        data = market_object(env)
        source = "simulated" if data.get("simulated") else "external_apis"
        return json_frame({"type": "dashboard_update", "data": data, "timestamp": data["timestamp"],
                           "source": source, "stale": stale})

    def parse(self, text: str) -> Command:
        cmd = original_command(text)
        if cmd is not None:
            return cmd
        try:
            return MARKETFEED.parse(text)
        except CommandError as exc:
            raise CommandError(exc.code, exc.message + '; or one of: ping, {"type": "ping"}, '
                               '{"type": "request_market_data"}', exc.request_id) from None

    def pong(self, request_id: Any, ts: float, served_by: str) -> bytes:
        return json_frame(with_id({"type": "pong", "timestamp": iso_utc(ts), "served_by": served_by},
                                  request_id))

    def status(self, request_id: Any, status: dict[str, Any]) -> bytes:
        return MARKETFEED.status(request_id, status)

    def no_snapshot(self, request_id: Any) -> bytes:
        return MARKETFEED.no_snapshot(request_id)

    def error(self, exc: CommandError) -> bytes:
        return MARKETFEED.error(exc)


#: The one instance: a codec holds no state.
CODEC = OriginalCodec()
