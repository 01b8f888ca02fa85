"""Presence: a lease bound to the leader's process, not only to a TTL.

A whole instance that dies (SIGKILL of a container, the host's OOM killer)
leaves nobody to release its lock, and the lock's TTL (10 s) would decide.
But Redis knows at once: the kernel closes the dead process's connections.
Every node keeps, on the pub/sub connection it already holds, a subscription
to a channel of its own, ``<prefix>:alive:<node_id>``. ``PUBSUB NUMSUB`` of
that channel is 1 while the process lives and 0 from the moment its
connection closes, and a script may ask it, so "the leader has been absent
for at least the grace period: take the lock over" is one atomic script.

**The deputy.** Watching from every follower at a high rate would cost each
node several round trips a second. One follower, the *deputy*
(``<prefix>:deputy``, with a TTL), runs :data:`WATCH` every
``PRESENCE_POLL_SECONDS`` (0.2 s); the others sleep until the lock's expiry
as before. A deputy on another host than the leader is preferred (one on the
leader's host dies with it): such a follower takes the role over when it
next steps. A new leader announces ``deputy_wanted`` as its term begins,
and checks its deputy's presence in every renewal (:data:`RENEW_PRESENT`),
announcing it again when there is none, so that a follower offers itself.

**The grace period.** A short gap is no death: a pub/sub reconnect, ``CLIENT
KILL TYPE pubsub``, a Sentinel failover that moves every connection. The
deputy takes over only after the leader has been absent in every one of its
polls for ``PRESENCE_GRACE_SECONDS`` (0.3 s) on end; a gap in its own polls,
or a change of master server (a failover: every connection is moving), starts
the count again. A leader that has lost its own subscription stops fetching
and writing at once, and acts again only after a renewal sent once it is
back has succeeded (:class:`Presence`): when a takeover can happen, the old
leader has already stopped, and the fence refuses whatever was under way.

**Where it cannot work** the lock's TTL still decides, as before: a host that
vanishes without closing its connections (power loss, a partition: Redis
keeps them open), a holder that does not keep presence (another
implementation, or a node whose Redis refuses ``PUBSUB``; each node writes
``presence 1`` in ``<prefix>:node:<id>`` only when it does), and a Redis
whose ACL refuses ``PUBSUB NUMSUB``: then the node logs
``presence_unavailable`` once and runs on the TTL alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from feed.election.lock import RECORD, TAKE
from feed.keys import Keys
from feed.logs import log_event
from feed.redisconn.values import text

__all__ = ["RENEW_PRESENT", "SETTLE_AFTER_FAILOVER_S", "WATCH", "Presence", "live_nodes", "refused"]

log = logging.getLogger(__name__)

#: After the deputy finds itself on a new master (a failover), absence does
#: not count for this long: every node's connections are moving there, each
#: on its own process's schedule (feed/redisconn/client.py checks the master
#: every second, a waiting pub/sub read ends within one more).
SETTLE_AFTER_FAILOVER_S = 4.0

# Node ids are ws-<where>-<pid>-<hex>; <where> is the replica or host.
_WHERE = """
local function where(node)
  return string.match(node, '^ws%-(.+)%-%d+%-%x+$') or node
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function present(alive_prefix, node)
  return tonumber(redis.call('PUBSUB', 'NUMSUB', alive_prefix .. node)[2]) > 0
end
"""

# A follower's step while presence is in use: ACQUIRE when the lock is free
# (or still ours), else offer to be the deputy and, as deputy, watch the
# holder's presence and take the lock over when it has been gone long enough.
#
# KEYS: leader, epoch, events-stream, deputy, presence, presence-server, my node info
# ARGV: node_id, ttl_ms, epoch_floor, events_maxlen, leader_events_channel,
#       alive_prefix, node_info_prefix, grace_ms, poll_ms, clients, settle_ms
# Returns {1, epoch, ttl_ms, how}   the lock is ours under a new epoch: how is
#                                   'free' (ACQUIRE's case) or 'presence_lost'
#                                   (taken over: the old holder's term is
#                                   recorded as lost with that reason)
#         {0, holder, pttl, epoch, next_ms}  held by another; next_ms is when
#                                   to step again as deputy, -1 when not the
#                                   deputy (sleep until the lock's expiry)
WATCH = RECORD + TAKE + _WHERE + """
local me, ttl = ARGV[1], tonumber(ARGV[2])
local grace, poll = tonumber(ARGV[8]), tonumber(ARGV[9])
local function describe(role)
  redis.call('HSET', KEYS[7], 'role', role, 'clients', ARGV[10], 'presence', '1')
  redis.call('PEXPIRE', KEYS[7], 3 * ttl)
end
local holder = redis.call('GET', KEYS[1])
if not holder or holder == me then
  local e = take(KEYS[1], KEYS[2], KEYS[3], me, ttl, ARGV[3], ARGV[4], ARGV[5])
  redis.call('DEL', KEYS[5])
  if redis.call('GET', KEYS[4]) == me then redis.call('DEL', KEYS[4]) end
  describe('leader')
  announce(ARGV[5], 'deputy_wanted', me, e)
  return {1, e, ttl, 'free'}
end
local stored = redis.call('GET', KEYS[2]) or '0'
local pttl = redis.call('PTTL', KEYS[1])
local deputy = redis.call('GET', KEYS[4])
local hw = where(holder)
if deputy and deputy ~= me and not (where(deputy) == hw and where(me) ~= hw) then
  describe('follower')
  return {0, holder, pttl, stored, -1}
end
redis.call('SET', KEYS[4], me, 'PX', 3 * poll + grace)
describe('deputy')
local now = now_ms()
-- The server we watch on, by its replication id (a promoted replica gets a
-- new one). Found changed, a failover has happened: every connection is
-- moving to this server, so absence does not count for a while.
local info = redis.pcall('INFO', 'replication')
local server = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or ''
local known = redis.call('GET', KEYS[6])
local was, settle = nil, 0
if known then
  was, settle = string.match(known, '^(%S*) (%d+)$')
  settle = tonumber(settle) or 0
end
if server ~= was then
  settle = known and (now + tonumber(ARGV[11])) or 0
  redis.call('SET', KEYS[6], server .. ' ' .. settle)
end
if redis.call('HGET', ARGV[7] .. holder, 'presence') ~= '1' or present(ARGV[6], holder) or now < settle then
  -- A holder that keeps no presence is left to the lock's TTL; a present one is fine.
  redis.call('DEL', KEYS[5])
  return {0, holder, pttl, stored, math.max(1, math.min(poll, settle - now > 0 and settle - now or poll))}
end
-- Absent: for how long, counted over unbroken polls of this deputy.
local since = now
local seen = redis.call('GET', KEYS[5])
if seen then
  local h, s, last = string.match(seen, '^(%S+) (%d+) (%d+)$')
  -- unbroken: the last poll was at most about one interval ago
  if h == holder and now - tonumber(last) <= 2 * poll then since = tonumber(s) end
end
if now - since >= grace then
  record(KEYS[3], ARGV[4], 'lost', holder, stored, 'presence_lost')
  local e = take(KEYS[1], KEYS[2], KEYS[3], me, ttl, ARGV[3], ARGV[4], ARGV[5])
  redis.call('DEL', KEYS[5], KEYS[4])
  describe('leader')
  announce(ARGV[5], 'deputy_wanted', me, e)
  return {1, e, ttl, 'presence_lost'}
end
redis.call('SET', KEYS[5], holder .. ' ' .. since .. ' ' .. now, 'PX', ttl)
return {0, holder, pttl, stored, math.max(1, math.min(poll, since + grace - now))}
"""

# The leader's renewal while presence is in use: RENEW's check and TTL, and
# what keeps presence working: the leader's node info (presence 1), its own
# presence as this server sees it, and its deputy's.
#
# KEYS: leader, epoch, deputy, my node info
# ARGV: node_id, ttl_ms, epoch, alive_prefix, clients, leader_events_channel
# Returns 1 renewed; 2 renewed, but this server does not see our own
#         subscription (it is on another server, after a failover: reconnect
#         it); 0 the lock or the epoch is no longer ours.
RENEW_PRESENT = _WHERE + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('HSET', KEYS[4], 'role', 'leader', 'clients', ARGV[5], 'presence', '1')
redis.call('PEXPIRE', KEYS[4], 3 * ttl)
local deputy = redis.call('GET', KEYS[3])
if deputy and not present(ARGV[4], deputy) then
  redis.call('DEL', KEYS[3])
  deputy = false
end
if not deputy then
  redis.call('PUBLISH', ARGV[6], 'deputy_wanted ' .. ARGV[1] .. ' ' .. ARGV[3])
end
if not present(ARGV[4], ARGV[1]) then
  return 2
end
return 1
"""


def refused(exc: Exception) -> bool:
    """True for an error that says this Redis will not run presence's own commands.

    An ACL without ``pubsub|numsub`` or ``hget`` (refused inside the script,
    or ``NOPERM`` naming them), or ``PUBSUB`` renamed away: not a
    misconfiguration of the service (the TTL still works), so the node
    carries on without presence, until it restarts, rather than failing. A
    refused ``EVALSHA`` is not this: every script needs it (the health check
    reports it).
    """
    if not isinstance(exc, redis.ResponseError):
        return False
    message = str(exc).lower()
    if "noperm" in message or isinstance(exc, redis.exceptions.NoPermissionError):
        return "pubsub" in message or "'hget'" in message
    return "can't run this command" in message or (  # an ACL, inside a script (Redis 7)
        "pubsub" in message and ("unknown" in message or "not allowed" in message))


class Presence:
    """This node's side of presence: is its subscription up, may its leader act.

    The follower role reports its subscription (:meth:`up` / :meth:`down`);
    the election reports renewals (:meth:`confirmed_by`); the leader role
    acts only while :attr:`can_act`. Once Redis refuses presence's commands
    (:meth:`unavailable`) the node runs on the TTL alone and nothing here
    holds it back.
    """

    def __init__(self, node_id: str, keys: Keys, *, grace: float = 0.3, poll: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not grace > 0 or not poll > 0:
            raise ValueError("presence grace and poll must be positive")
        self.node_id = node_id
        self.channel = keys.alive(node_id)
        self.grace = grace
        self.poll = poll
        self.clock = clock
        self.available = True  # False once Redis refused presence's commands
        self.subscribed = False
        self._up_since = 0.0  # clock() when the subscription last came up
        self._confirmed = False  # a renewal sent since then succeeded
        self._lock = threading.Lock()
        #: Called when the subscription should be dropped and made again
        #: (set by the follower role): the server holding the lock does not see it.
        self.resubscribe: Callable[[], None] | None = None
        #: Called when the subscription goes down (set by the node: the leader
        #: role wakes, to stop and say so at once rather than at its next tick).
        self.on_down: Callable[[], None] | None = None

    @property
    def in_use(self) -> bool:
        return self.available

    @property
    def can_act(self) -> bool:
        """May this node, as leader, fetch and write now?"""
        return not self.available or (self.subscribed and self._confirmed)

    def up(self) -> None:
        with self._lock:
            self.subscribed = True
            self._up_since = self.clock()
            self._confirmed = False

    def down(self) -> None:
        with self._lock:
            was, self.subscribed = self.subscribed, False
            self._confirmed = False
        if was and self.on_down is not None:
            self.on_down()

    def confirmed_by(self, sent_at: float) -> None:
        """A renewal (or an acquisition) sent at ``sent_at`` succeeded."""
        with self._lock:
            if self.subscribed and sent_at >= self._up_since:
                self._confirmed = True

    def not_seen(self) -> None:
        """The server holding the lock does not see our subscription: make it again."""
        self.down()
        if self.resubscribe is not None:
            self.resubscribe()

    def unavailable(self, exc: Exception) -> None:
        if self.available:
            self.available = False
            log_event(log, "presence_unavailable", logging.WARNING, node=self.node_id,
                      error=f"{type(exc).__name__}: {exc}"[:300],
                      fix="failover of a dead instance falls back to the lock's TTL; allow "
                          "+pubsub|numsub (and +pubsub|channels for the node list) to use presence")

    def status(self) -> dict[str, Any]:
        return {"in_use": self.available, "subscribed": self.subscribed, "can_act": self.can_act,
                "grace_s": self.grace, "poll_s": self.poll}


def _glob_escape(text_: str) -> str:
    """``text_`` as a literal in a Redis glob pattern (a key prefix may hold ``*``, ``?``, ``[``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text_)


def live_nodes(client: redis.Redis, keys: Keys, leader: str | None = None,
               deputy: str | None = None) -> list[dict[str, Any]]:
    """The nodes whose presence channel is subscribed now, with what they say about themselves.

    ``[{"node", "role", "clients"}]``, the leader first; raises RedisError
    (``NoPermissionError`` where ``PUBSUB CHANNELS`` is refused).
    """
    prefix = keys.alive_prefix
    channels = client.pubsub_channels(_glob_escape(prefix) + "*")
    nodes = sorted(text(c)[len(prefix):] for c in channels)
    pipe = client.pipeline(transaction=False)
    for node in nodes:
        pipe.hgetall(keys.node(node))
    out = []
    for node, info in zip(nodes, pipe.execute() if nodes else [], strict=True):
        fields = {text(k): text(v) for k, v in info.items()}
        role = "leader" if node == leader else "deputy" if node == deputy else "follower"
        try:
            clients: int | None = int(fields["clients"])
        except (KeyError, ValueError):
            clients = None
        out.append({"node": node, "role": role, "clients": clients})
    out.sort(key=lambda n: ({"leader": 0, "deputy": 1}.get(n["role"], 2), n["node"]))
    return out
