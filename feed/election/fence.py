"""Where snapshots are stored: the fenced write, the cache read, and the unfenced stand-in.

The leader's write is one Lua script that checks, inside Redis, that the
writer still holds the lock *and* that the epoch it was elected under is still
the current one; only then does it store the envelope (``websocket:snapshot``)
with its TTL and publish it on the updates channel, and, with
``ORIGINAL_COMPAT=on``, keep the original service's ``latest_market_data`` and
``market_data_stream``. A deposed or paused leader's
write is therefore refused by Redis itself, whatever the writer believes.

Without an election (``ELECTION=off``, :mod:`feed.election.solo`) every node
overwrites the cache, unfenced and unpublished: the original design.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import redis

from feed.election.lock import ScriptReplyError
from feed.envelope import Envelope
from feed.keys import Keys
from feed.original import market_object
from feed.redisconn.values import text

__all__ = ["FENCE", "FENCED_WRITE", "FencedStore", "OriginalContract", "SnapshotStore", "UnfencedStore",
           "WriteResult", "decode_write", "read_cached"]

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

# KEYS: leader, epoch, data[, original_latest, original_stream]
# ARGV: node_id, epoch, envelope_json, cache_ttl_ms, updates_channel
#       [, flat_json, flat_ttl_ms, stream_maxlen]
# With the last three keys and arguments (ORIGINAL_COMPAT=on) it also keeps
# the original service's contract, under the same fence: SET the flat
# object with its TTL, and XADD it (field "data") to the stream, capped
# near stream_maxlen entries.
# Returns {1, receivers}        stored and published
#         {0, 'not_leader'}     the lock is not (or no longer) the writer's
#         {0, 'stale_epoch'}    the lock is, but under a newer epoch
FENCED_WRITE = FENCE + """
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
if KEYS[5] then
  redis.call('SET', KEYS[4], ARGV[6], 'PX', ARGV[7])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'data', ARGV[6])
end
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


@dataclass(frozen=True)
class OriginalContract:
    """The original service's Redis contract, kept beside ours (``ORIGINAL_COMPAT=on``).

    Its main web service reads ``latest_market_data`` (the flat object,
    :mod:`feed.original`) and else the newest entry of ``market_data_stream``.
    """

    ttl: float = 5.0
    stream_maxlen: int = 1000

    def keys_and_args(self, keys: Keys, envelope: Envelope) -> tuple[list[str], list[object]]:
        flat = json.dumps(market_object(envelope), separators=(",", ":"), allow_nan=False)
        return ([keys.original_latest, keys.original_stream],
                [flat, max(1, int(self.ttl * 1000)), self.stream_maxlen])


class FencedStore(_Cache):
    """The election's store: a write lands only from the leader of the current epoch."""

    echoes = True

    def __init__(self, client: redis.Redis, keys: Keys | None = None, cache_ttl: float = 10.0,
                 original: OriginalContract | None = None) -> None:
        super().__init__(client, keys, cache_ttl)
        self.original = original
        self._write = client.register_script(FENCED_WRITE)

    def write(self, node_id: str, envelope: Envelope) -> WriteResult:
        """Store and publish ``envelope`` if ``node_id`` leads under its epoch."""
        k = self.keys
        keys: list[str] = [k.leader, k.epoch, k.data]
        args: list[object] = [node_id, envelope.epoch, envelope.to_json(), self.cache_ttl_ms, k.updates]
        if self.original is not None:
            more_keys, more_args = self.original.keys_and_args(k, envelope)
            keys += more_keys
            args += more_args
        return decode_write(self._write(keys=keys, args=args))


class UnfencedStore(_Cache):
    """The no-election baseline: every node overwrites the cache (no publish)."""

    echoes = False

    def write(self, node_id: str, envelope: Envelope) -> WriteResult:
        self.client.set(self.keys.data, envelope.to_json(), px=self.cache_ttl_ms)
        return WriteResult(True)
