"""Where snapshots are stored: the fenced write, the cache read, and the unfenced stand-in.

The leader's write is one Lua script that checks, inside Redis, that the
writer still holds the lock *and* that the epoch it was elected under is still
the current one; only then does it store ``latest_market_data`` with its TTL
and publish the envelope on the updates channel. A deposed or paused leader's
write is therefore refused by Redis itself, whatever the writer believes.

Without an election (``ELECTION=off``, :mod:`feed.election.solo`) every node
overwrites the cache, unfenced and unpublished: the original design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import redis

from feed.election.lock import ScriptReplyError
from feed.envelope import Envelope
from feed.keys import Keys
from feed.redisconn.values import text

__all__ = ["FENCE", "FENCED_WRITE", "FencedStore", "SnapshotStore", "UnfencedStore", "WriteResult",
           "decode_write", "read_cached"]

# The fence itself, for every script that writes as the leader: KEYS[1] is
# the lock, KEYS[2] the epoch, ARGV[1] the writer's node id, ARGV[2] the
# epoch it was elected under. Returns early with {0, reason} when either is
# no longer the writer's.
FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, 'not_leader'}
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {0, 'stale_epoch'}
end
"""

# KEYS: leader, epoch, data
# ARGV: node_id, epoch, envelope_json, cache_ttl_ms, updates_channel
# Returns {1, receivers}        stored and published
#         {0, 'not_leader'}     the lock is not (or no longer) the writer's
#         {0, 'stale_epoch'}    the lock is, but under a newer epoch
FENCED_WRITE = FENCE + """
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
return {1, redis.call('PUBLISH', ARGV[5], ARGV[3])}
"""


@dataclass(frozen=True)
class WriteResult:
    ok: bool
    reason: str = ""  # "" | not_leader | stale_epoch
    receivers: int = 0


def decode_write(reply: object) -> WriteResult:
    """FENCED_WRITE's reply; anything its contract does not list raises ScriptReplyError."""
    try:
        code, detail = reply  # type: ignore[misc]
        if int(code) == 1:
            return WriteResult(True, "", int(detail))
        reason = text(detail)
        if int(code) == 0 and reason in ("not_leader", "stale_epoch"):
            return WriteResult(False, str(reason))
    except (TypeError, ValueError):
        pass
    raise ScriptReplyError("FENCED_WRITE", reply)


class SnapshotStore(Protocol):
    #: Whether a stored snapshot is also published to every node (and so
    #: comes back to the writer through its subscription).
    echoes: bool

    def write(self, node_id: str, envelope: Envelope) -> WriteResult: ...

    def read(self) -> Envelope | None: ...


def read_cached(client: redis.Redis, keys: Keys) -> Envelope | None:
    """The cached snapshot, or None if absent. Raises EnvelopeError if corrupt."""
    raw = client.get(keys.data)
    return None if raw is None else Envelope.from_json(raw)


class _Cache:
    def __init__(self, client: redis.Redis, keys: Keys | None = None, cache_ttl: float = 10.0) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.cache_ttl_ms = max(1, int(cache_ttl * 1000))

    def read(self) -> Envelope | None:
        """The cached snapshot, or None if absent. Raises EnvelopeError if corrupt."""
        return read_cached(self.client, self.keys)


class FencedStore(_Cache):
    """The election's store: a write lands only from the leader of the current epoch."""

    echoes = True

    def __init__(self, client: redis.Redis, keys: Keys | None = None, cache_ttl: float = 10.0) -> None:
        super().__init__(client, keys, cache_ttl)
        self._write = client.register_script(FENCED_WRITE)

    def write(self, node_id: str, envelope: Envelope) -> WriteResult:
        """Store and publish ``envelope`` if ``node_id`` leads under its epoch."""
        k = self.keys
        reply = self._write(
            keys=[k.leader, k.epoch, k.data],
            args=[node_id, envelope.epoch, envelope.to_json(), self.cache_ttl_ms, k.updates],
        )
        return decode_write(reply)


class UnfencedStore(_Cache):
    """The no-election baseline: every node overwrites the cache (no publish)."""

    echoes = False

    def write(self, node_id: str, envelope: Envelope) -> WriteResult:
        self.client.set(self.keys.data, envelope.to_json(), px=self.cache_ttl_ms)
        return WriteResult(True)
