"""The snapshot envelope: what the leader stores, publishes and clients receive.

``(epoch, seq)`` orders envelopes totally: ``epoch`` is the leader's fencing
token, ``seq`` counts snapshots within that term from 1. Two times, each
with one meaning: ``fetched_at``, when the leader began the fetch whose
sections it carries (the data's age: clients and staleness read it), and
``published_at``, when the leader wrote it. Each section carries its own
``fetched_at`` besides. The leader's schedule is anchored on neither: it is
the cluster budget's per-endpoint next-call times (feed/node/leader.py), so
a publish between fetches moves nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from feed.times import iso_utc, parse_iso

__all__ = ["SLOW_PARTS", "Envelope", "EnvelopeError"]

#: Sections refreshed hourly or less often; they do not decide whether a snapshot is stale.
SLOW_PARTS = ("indicators", "indices")


class EnvelopeError(ValueError):
    """Bytes that are not a valid envelope (corrupt cache, foreign publisher)."""


@dataclass(frozen=True)
class Envelope:
    epoch: int
    seq: int
    leader: str
    fetched_at: float  # unix seconds
    data: dict[str, Any] = field(default_factory=dict)
    #: unix seconds; None for an envelope written before the field existed.
    published_at: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.epoch, self.seq)

    def age(self, now: float) -> float:
        return max(0.0, now - self.fetched_at)

    @property
    def sections_stale(self) -> bool:
        """True if the data has sections and every one is stale (its providers are failing).

        Sections asked for once an hour or less often (BTC's daily RSI, the
        index ETFs) are left out: fresh for an hour after one good call,
        they would hide a feed whose prices stopped.
        """
        sources = self.data.get("sources")
        flags = [sec.get("stale") for src in (sources.values() if isinstance(sources, dict) else ())
                 if isinstance(src, dict) and isinstance(src.get("sections"), dict)
                 for part, sec in src["sections"].items() if isinstance(sec, dict) and part not in SLOW_PARTS]
        return bool(flags) and all(flags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "epoch": self.epoch,
            "seq": self.seq,
            "leader": self.leader,
            "fetched_at": iso_utc(self.fetched_at),
            **({} if self.published_at is None else {"published_at": iso_utc(self.published_at)}),
            "data": self.data,
        }

    def to_json(self) -> str:
        """The form stored in Redis and published (no ``served_by``/``stale``)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        """Parse and check an envelope; raises :class:`EnvelopeError`."""
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise EnvelopeError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("type") != "snapshot":
            raise EnvelopeError("not a snapshot envelope")
        epoch, seq = obj.get("epoch"), obj.get("seq")
        if not (_is_int(epoch) and _is_int(seq) and epoch >= 0 and seq >= 0):
            raise EnvelopeError("epoch and seq must be non-negative integers")
        leader = obj.get("leader")
        if not isinstance(leader, str):
            raise EnvelopeError("leader must be a string")
        data = obj.get("data")
        if not isinstance(data, dict):
            raise EnvelopeError("data must be an object")
        try:
            fetched_at = parse_iso(obj["fetched_at"])
        except (KeyError, TypeError, ValueError):
            raise EnvelopeError("fetched_at must be an ISO 8601 time with a zone") from None
        if not math.isfinite(fetched_at):
            raise EnvelopeError("fetched_at out of range")
        published_at = None
        if obj.get("published_at") is not None:
            try:
                published_at = parse_iso(obj["published_at"])
            except (TypeError, ValueError):
                raise EnvelopeError("published_at must be an ISO 8601 time with a zone") from None
            if not math.isfinite(published_at):
                raise EnvelopeError("published_at out of range")
        return cls(epoch=epoch, seq=seq, leader=leader, fetched_at=fetched_at, data=data,
                   published_at=published_at)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
