"""The lock's Lua scripts, and the two things they write besides the lock: the
messages on ``<prefix>:leader-events`` and the entries of the leadership log
``<prefix>:events``. Both are written and read only here.

The lock is the original service's: ``websocket:leader`` holds the leader's
node id with a TTL. What is added:

* every acquisition also advances ``websocket:epoch``, the fencing token that
  the snapshot write checks (:mod:`feed.election.fence`);
* a release publishes ``released <node> <epoch>`` on the leader-events
  channel, so followers take over at once instead of waiting for the TTL; an
  acquisition publishes ``acquired <node> <epoch>``;
* every acquisition, release and loss is appended to the capped leadership log
  stream, with the fields ``event``, ``node``, ``epoch`` and, for a loss or a
  step-down, ``reason``.

Epoch rule (why the fencing token survives a Redis restart that lost it):
the new epoch is max(stored + 1, floor + 1, redis_now_ms). ``stored`` is the
epoch key; ``floor`` is the highest epoch the candidate has itself seen (from
its own terms and every snapshot it received); ``redis_now_ms`` is the Redis
server's clock in milliseconds. If Redis comes back empty, ``stored`` is 0,
but the surviving candidates' floor is above every epoch they saw, and the
clock has moved past every epoch issued earlier (epochs are issued at most
one per millisecond on average, so they never run ahead of the clock for
long). Either one alone keeps the epoch increasing; together they cover a
cold restart of everything (only the clock remains) and a clock that steps
back (the stored value and the floor remain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from feed.errors import MarketfeedError
from feed.keys import Keys
from feed.redisconn.values import text

__all__ = [
    "ACQUIRE",
    "RECORD",
    "RECORD_LOSS",
    "RELEASE",
    "RELEASE_DEAD",
    "RENEW",
    "TAKE",
    "Acquired",
    "Held",
    "LeaderEvent",
    "ScriptReplyError",
    "decode_acquire",
    "decode_flag",
    "decode_take",
    "read_leadership_log",
]

# The one place the leadership log's fields and the leader-events message are
# written; prepended to every script that writes them.
RECORD = """
local function record(stream, maxlen, event, node, epoch, reason)
  if reason and reason ~= '' then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
               'event', event, 'node', node, 'epoch', epoch, 'reason', reason)
  else
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', event, 'node', node, 'epoch', epoch)
  end
end
local function announce(channel, kind, node, epoch)
  redis.call('PUBLISH', channel, kind .. ' ' .. node .. ' ' .. epoch)
end
"""

# Taking the lock, shared by ACQUIRE and the deputy's takeover
# (feed/election/presence.py): a new epoch by the epoch rule above, the lock
# set with its TTL, the acquisition recorded and announced. Returns the epoch.
TAKE = """
local function take(leader_key, epoch_key, events, node, ttl_ms, floor, maxlen, channel)
  local stored = tonumber(redis.call('GET', epoch_key) or '0') or 0
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local e = string.format('%.0f', math.max(stored + 1, (tonumber(floor) or 0) + 1, now_ms))
  redis.call('SET', epoch_key, e)
  redis.call('SET', leader_key, node, 'PX', ttl_ms)
  record(events, maxlen, 'acquired', node, e)
  announce(channel, 'acquired', node, e)
  return e
end
"""

# Why the lock being ours already still starts a new epoch: a candidate
# calls ACQUIRE only when it is not leading. If the lock still names it, its
# previous term ended on its own clock (the lease ran out while it was paused,
# or Redis was) or the reply to an earlier ACQUIRE was lost. Either way it
# starts a new term with seq 1; under the old epoch clients would drop every
# snapshot up to the old term's last seq as "not newer". So every successful
# ACQUIRE issues an epoch nobody has written under.
#
# KEYS: leader, epoch, events-stream
# ARGV: node_id, ttl_ms, epoch_floor, events_maxlen, leader_events_channel
# Returns {1, epoch, ttl_ms}      acquired (the lock was free or already ours):
#                                 a new epoch, the event recorded and announced
#         {0, holder, pttl, epoch} held by someone else
ACQUIRE = RECORD + TAKE + """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  local stored = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  return {0, holder, redis.call('PTTL', KEYS[1]), string.format('%.0f', stored)}
end
local e = take(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {1, e, tonumber(ARGV[2])}
"""

# KEYS: leader, epoch
# ARGV: node_id, ttl_ms, epoch
# Returns 1 renewed (TTL reset); 0 the lock or the epoch is no longer ours.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: leader, events-stream
# ARGV: node_id, epoch, events_maxlen, leader_events_channel, reason
# Returns 1 released (key deleted, event recorded, followers woken);
#         0 not ours: nothing changed.
RELEASE = RECORD + """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  record(KEYS[2], ARGV[3], ARGV[5], ARGV[1], ARGV[2])
  announce(ARGV[4], 'released', ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# The reaper's: a Gunicorn master releases the lock of a worker it saw die.
# KEYS: leader, epoch, events-stream
# ARGV: node_prefix, events_maxlen, leader_events_channel
# Returns the released holder's node id, or false when the lock is free or
#         held by a node outside that (dead) process.
RELEASE_DEAD = RECORD + """
local holder = redis.call('GET', KEYS[1])
if not holder or string.sub(holder, 1, string.len(ARGV[1])) ~= ARGV[1] then
  return false
end
local epoch = redis.call('GET', KEYS[2]) or '0'
redis.call('DEL', KEYS[1])
record(KEYS[3], ARGV[2], 'lost', holder, epoch, 'process_died')
announce(ARGV[3], 'released', holder, epoch)
return holder
"""

# A term that ended on the node's own clock (lease run out, renewal or write
# refused): the leadership log only, the lock is not touched.
# KEYS: events-stream
# ARGV: node_id, epoch, events_maxlen, reason
# Returns 1.
RECORD_LOSS = RECORD + """
record(KEYS[1], ARGV[3], 'lost', ARGV[1], ARGV[2], ARGV[4])
return 1
"""


# --- replies, decoded beside the scripts that send them ---------------------------
class ScriptReplyError(MarketfeedError, RuntimeError):
    """A script answered with a code its contract does not list (another version, a foreign script).

    Raised rather than guessed at: a reply taken for success would make a
    node act as leader without the lock.
    """

    def __init__(self, script: str, reply: object) -> None:
        super().__init__(f"{script}: unexpected reply {reply!r}")
        self.script = script
        self.reply = reply


@dataclass(frozen=True)
class Acquired:
    """The lock is ours under a new ``epoch``; ``how``: ``free`` or ``presence_lost``."""

    epoch: int
    ttl_ms: int
    how: str = "free"


@dataclass(frozen=True)
class Held:
    """Another node holds the lock; ``next_ms``: as the deputy, step again then (None: not the deputy)."""

    holder: str | None
    pttl_ms: int
    epoch: int
    next_ms: int | None = None


def decode_take(script: str, reply: Any) -> Acquired | Held:
    """ACQUIRE's and WATCH's replies.

    ``{1, epoch, ttl_ms[, how]}`` or ``{0, holder, pttl, epoch[, next_ms]}``;
    anything else raises :class:`ScriptReplyError`.
    """
    try:
        code = int(reply[0])
        if code == 1 and len(reply) in (3, 4):
            how = text(reply[3]) if len(reply) == 4 else "free"
            if how not in ("free", "presence_lost"):
                raise ScriptReplyError(script, reply)
            return Acquired(int(reply[1]), int(reply[2]), str(how))
        if code == 0 and len(reply) in (4, 5):
            watch = int(reply[4]) if len(reply) == 5 else -1
            return Held(text(reply[1]), int(reply[2]), int(reply[3]), None if watch < 0 else watch)
    except (TypeError, ValueError, IndexError):
        pass
    raise ScriptReplyError(script, reply)


def decode_acquire(reply: Any) -> Acquired | Held:
    return decode_take("ACQUIRE", reply)


def decode_flag(script: str, reply: Any, codes: tuple[int, ...] = (0, 1)) -> int:
    """A script's integer reply (RENEW, RELEASE, RENEW_PRESENT...), checked against its contract."""
    try:
        code = int(reply)
    except (TypeError, ValueError):
        raise ScriptReplyError(script, reply) from None
    if code not in codes:
        raise ScriptReplyError(script, reply)
    return code


KINDS = ("acquired", "released", "deputy_wanted")


@dataclass(frozen=True)
class LeaderEvent:
    """A message on the leader-events channel: ``acquired``, ``released`` or ``deputy_wanted``.

    ``deputy_wanted <leader> <epoch>`` is the leader's (feed/election/presence.py):
    nobody watches its presence, so a follower should offer to.
    """

    kind: str
    node: str
    epoch: int | None

    @classmethod
    def parse(cls, data: Any) -> LeaderEvent | None:
        """The event in a pub/sub payload, or None if it is not one of ours."""
        kind, _, rest = (text(data) or "").partition(" ")
        node, _, epoch = rest.partition(" ")
        if kind not in KINDS or not node:
            return None
        return cls(kind, node, int(epoch) if epoch.isdigit() else None)


def read_leadership_log(client: redis.Redis, keys: Keys, count: int = 20) -> list[dict[str, Any]]:
    """The newest ``count`` entries of the leadership log, oldest first, with ``ts`` in unix seconds."""
    out = []
    for entry_id, fields in reversed(client.xrevrange(keys.leadership_log, count=count)):
        row: dict[str, Any] = {text(k): text(v) for k, v in fields.items()}
        row["ts"] = int(text(entry_id).split("-")[0]) / 1000.0
        if "epoch" in row:
            try:
                row["epoch"] = int(row["epoch"])
            except ValueError:
                pass
        out.append(row)
    return out
