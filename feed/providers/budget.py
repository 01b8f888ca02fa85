"""One upstream budget for the whole cluster: blocks, cadence, call counts, in Redis.

What a leader learns about an upstream must outlive it: a new leader
(failover, step-down, redeploy) honours the Retry-After the old one was
given, does not call CoinGecko again a second after the old leader did, and
counts the month's calls where the old one left off. So the budget lives in
Redis, under the key prefix, written only by the leader through its fence
(:data:`SAVE`), and read by every leader as its term starts.

``<prefix>:upstream`` (hash) holds:

=====================  ======================================================
``block:<provider>``   JSON ``{until, status, outcome, detail, base, since,
                       repeats}``: no call to ``provider`` before ``until``
                       (unix ms), as long as its base URL is still ``base``
``next:<endpoint>``    unix ms of the endpoint's next call (its cadence)
``fails:<endpoint>``   consecutive failures, for the back-off
``symbols:binance``    JSON of the last exchangeInfo lookup
``unknown:coingecko``  JSON list of symbols whose ids CoinGecko did not know
``weight:binance``     JSON ``{used, at}``: the last X-MBX-USED-WEIGHT-1M
=====================  ======================================================

``<prefix>:upstream:calls:m:<YYYYmmddHHMM>`` / ``d:<YYYYmmdd>`` /
``M:<YYYYmm>`` (hashes, UTC, expiring) count calls per provider per minute,
day and month. Without an election (the lab's baseline) every node keeps
its own budget in memory, as the original design did.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

from feed.election.fence import FENCE
from feed.election.lock import ScriptReplyError
from feed.election.term import Term
from feed.keys import Keys
from feed.redisconn.values import text

__all__ = ["SAVE", "Block", "Budget", "BudgetStore", "MemoryBudgetStore", "RedisBudgetStore", "upstream_view",
           "windows"]

# KEYS: leader, epoch, state, calls-minute, calls-day, calls-month
# ARGV: node_id, epoch, minute_ttl_ms, day_ttl_ms, month_ttl_ms,
#       n_set, (field, value) x n_set, n_del, field x n_del, n_counts, (provider, n) x n_counts
# Returns {1}                     saved, counts added, windows' TTLs set
#         {0, 'not_leader' | 'stale_epoch'}   not the leader of this epoch: nothing written
SAVE = FENCE + """
local i = 6
local n = tonumber(ARGV[i])
for k = 1, n do
  redis.call('HSET', KEYS[3], ARGV[i + 2 * k - 1], ARGV[i + 2 * k])
end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for k = 1, n do
  redis.call('HDEL', KEYS[3], ARGV[i + k])
end
i = i + n + 1
n = tonumber(ARGV[i])
for k = 1, n do
  for w = 4, 6 do
    redis.call('HINCRBY', KEYS[w], ARGV[i + 2 * k - 1], ARGV[i + 2 * k])
  end
end
if n > 0 then
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
  redis.call('PEXPIRE', KEYS[5], ARGV[4])
  redis.call('PEXPIRE', KEYS[6], ARGV[5])
end
return {1}
"""


def decode_save(reply: Any) -> bool:
    """SAVE's reply: True saved, False fenced out; anything else raises ScriptReplyError."""
    try:
        if int(reply[0]) == 1 and len(reply) == 1:
            return True
        if int(reply[0]) == 0 and text(reply[1]) in ("not_leader", "stale_epoch"):
            return False
    except (TypeError, ValueError, IndexError):
        pass
    raise ScriptReplyError("SAVE", reply)


# How long each count window is kept: a little more than the window itself.
WINDOW_TTL_MS = {"minute": 180_000, "day": 3 * 86_400_000, "month": 40 * 86_400_000}


def windows(now: float) -> dict[str, str]:
    """The count windows ``now`` falls in: ``{"minute": "m:...", "day": "d:...", "month": "M:..."}``."""
    t = datetime.fromtimestamp(now, tz=UTC)
    return {"minute": t.strftime("m:%Y%m%d%H%M"), "day": t.strftime("d:%Y%m%d"),
            "month": t.strftime("M:%Y%m")}


@dataclass(frozen=True)
class Block:
    """No call to a provider before ``until`` (unix seconds), while its base URL is ``base``."""

    until: float
    status: int | None
    outcome: str
    detail: str
    base: str
    since: float
    repeats: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Block | None:
        try:
            obj = json.loads(raw)
            return cls(**{k: obj[k] for k in ("until", "status", "outcome", "detail", "base", "since")},
                       repeats=int(obj.get("repeats", 1)))
        except (ValueError, TypeError, KeyError):
            return None


class BudgetStore(Protocol):
    def load(self, now: float) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
        """``(state fields, {window: {provider: calls}})``."""
        ...

    def save(self, term: Term, set_fields: dict[str, str], delete: list[str], counts: dict[str, int],
             now: float) -> bool:
        """Write through the fence; False when this term is over (nothing was written)."""
        ...


class RedisBudgetStore:
    """The cluster's budget, in Redis; see the module docstring."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._save = client.register_script(SAVE)

    def load(self, now: float) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
        names = windows(now)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.upstream)
        for window in names.values():
            pipe.hgetall(self.keys.upstream_calls(window))
        state, *counts = pipe.execute()
        return ({text(k): text(v) for k, v in state.items()},
                {w: {text(k): int(v) for k, v in c.items()} for w, c in zip(names, counts, strict=True)})

    def save(self, term: Term, set_fields: dict[str, str], delete: list[str], counts: dict[str, int],
             now: float) -> bool:
        k = self.keys
        names = windows(now)
        args: list[Any] = [term.node_id, term.epoch, WINDOW_TTL_MS["minute"], WINDOW_TTL_MS["day"],
                           WINDOW_TTL_MS["month"], len(set_fields)]
        for field, value in set_fields.items():
            args += [field, value]
        args += [len(delete), *delete, len(counts)]
        for provider, n in counts.items():
            args += [provider, n]
        keys = [k.leader, k.epoch, k.upstream, *(k.upstream_calls(w) for w in names.values())]
        return decode_save(self._save(keys=keys, args=args))


class MemoryBudgetStore:
    """One node's own budget, unshared: the no-election baseline."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.counts: dict[str, Counter[str]] = {}

    def load(self, now: float) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
        names = windows(now)
        return dict(self.state), {w: dict(self.counts.get(name, Counter())) for w, name in names.items()}

    def save(self, term: Term, set_fields: dict[str, str], delete: list[str], counts: dict[str, int],
             now: float) -> bool:
        self.state.update(set_fields)
        for field in delete:
            self.state.pop(field, None)
        for name in windows(now).values():
            self.counts.setdefault(name, Counter()).update(counts)
        return True


class Budget:
    """The leader's working copy of the budget: read as a term starts, written through each tick.

    Thread-safe: a fetch's calls run concurrently and report here.
    """

    def __init__(self, store: BudgetStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.state: dict[str, str] = {}
        self.counts: dict[str, dict[str, int]] = {"minute": {}, "day": {}, "month": {}}
        self._windows: dict[str, str] = {}
        self._dirty: dict[str, str] = {}
        self._deleted: set[str] = set()
        self._pending: Counter[str] = Counter()
        self._term: Term | None = None
        self._lock = threading.Lock()

    # --- term -------------------------------------------------------------
    def begin(self, term: Term) -> bool:
        """Load the shared budget if ``term`` is new; True if it was (re)loaded."""
        if term == self._term:
            return False
        now = self.clock()
        state, counts = self.store.load(now)
        with self._lock:
            self.state, self.counts = state, counts
            self._windows = windows(now)
            self._dirty.clear()
            self._deleted.clear()
            self._pending.clear()
            self._term = term
        return True

    def save(self) -> bool:
        """Write what changed this tick; False when the fence refused it (the term is over)."""
        term = self._term
        if term is None:
            return True
        with self._lock:
            dirty, deleted, pending = dict(self._dirty), list(self._deleted), dict(self._pending)
        if not (dirty or deleted or pending):
            return True
        saved = self.store.save(term, dirty, deleted, pending, self.clock())
        with self._lock:
            # Only what was written is cleared: a concurrent change stays pending.
            for field, value in dirty.items():
                if self._dirty.get(field) == value:
                    del self._dirty[field]
            self._deleted -= set(deleted)
            self._pending.subtract(pending)
            self._pending = +self._pending
        return saved

    # --- fields -------------------------------------------------------------
    def get(self, field: str) -> str | None:
        with self._lock:
            return self.state.get(field)

    def put(self, field: str, value: str | None) -> None:
        with self._lock:
            if value is None:
                self.state.pop(field, None)
                self._dirty.pop(field, None)
                self._deleted.add(field)
            else:
                self.state[field] = value
                self._dirty[field] = value
                self._deleted.discard(field)

    def get_json(self, field: str) -> Any:
        raw = self.get(field)
        try:
            return None if raw is None else json.loads(raw)
        except ValueError:
            return None

    def put_json(self, field: str, value: Any) -> None:
        self.put(field, None if value is None else json.dumps(value, separators=(",", ":")))

    # --- blocks, cadence, counts ------------------------------------------------
    def block(self, provider: str) -> Block | None:
        raw = self.get(f"block:{provider}")
        return None if raw is None else Block.from_json(raw)

    def blocked(self, provider: str, base_url: str) -> Block | None:
        """The block in force for ``provider`` at ``base_url``, if any."""
        b = self.block(provider)
        if b is None or b.until <= self.clock() or b.base != base_url:
            return None
        return b

    def set_block(self, provider: str, block: Block | None) -> None:
        self.put(f"block:{provider}", None if block is None else block.to_json())

    def next_due(self, endpoint: str) -> float | None:
        raw = self.get(f"next:{endpoint}")
        try:
            return None if raw is None else int(raw) / 1000.0
        except ValueError:
            return None

    def set_next_due(self, endpoint: str, when: float) -> None:
        self.put(f"next:{endpoint}", str(int(when * 1000)))

    def failures(self, endpoint: str) -> int:
        raw = self.get(f"fails:{endpoint}")
        return int(raw) if raw and raw.isdigit() else 0

    def set_failures(self, endpoint: str, n: int) -> None:
        self.put(f"fails:{endpoint}", str(n) if n else None)

    def count(self, provider: str, n: int = 1) -> None:
        """One more call to ``provider`` in this minute, day and month."""
        now = self.clock()
        with self._lock:
            current = windows(now)
            for window, name in current.items():
                if self._windows.get(window) != name:  # a new minute (day, month) began
                    self.counts[window] = {}
                self.counts[window][provider] = self.counts[window].get(provider, 0) + n
            self._windows = current
            self._pending[provider] += n

    def answered(self, provider: str) -> None:
        """One more good answer from ``provider`` (what a credit-based plan charges for)."""
        self.count(credits_of(provider))

    def credits(self, provider: str) -> dict[str, int]:
        """Good answers from ``provider`` this minute, day and month: the credits a plan counts."""
        return self.calls(credits_of(provider))

    def calls(self, provider: str) -> dict[str, int]:
        """Calls to ``provider`` this minute, day and month (as far as this node knows)."""
        with self._lock:
            current = windows(self.clock())
            return {w: (self.counts.get(w, {}).get(provider, 0) if self._windows.get(w) == name else 0)
                    for w, name in current.items()}


def credits_of(provider: str) -> str:
    """The counter of ``provider``'s good answers, beside its calls in the same windows."""
    return f"{provider}:ok"


def upstream_view(client: redis.Redis, keys: Keys, providers: tuple[str, ...],
                  quotas: dict[str, int] | None = None, now: float | None = None) -> dict[str, Any]:
    """The budget as ``/status`` and ``python -m feed status`` show it. Raises RedisError.

    ``quotas`` are the configured monthly calls per provider (0 or absent: none).
    """
    now = time.time() if now is None else now
    state, counts = RedisBudgetStore(client, keys).load(now)
    out: dict[str, Any] = {}
    for provider in providers:
        block = Block.from_json(state[f"block:{provider}"]) if f"block:{provider}" in state else None
        entry: dict[str, Any] = {
            "calls": {w: counts.get(w, {}).get(provider, 0) for w in ("minute", "day", "month")},
            "next_call_in_s": {f.split(":", 1)[1]: round(max(0.0, int(v) / 1000 - now), 1)
                               for f, v in state.items()
                               if f.startswith(f"next:{provider}.") and v.isdigit()},
            "blocked": None,
        }
        if block is not None and block.until > now:
            entry["blocked"] = {"for_s": round(block.until - now, 1), "status": block.status,
                                "outcome": block.outcome, "detail": block.detail, "base_url": block.base}
        entry["answered"] = {w: counts.get(w, {}).get(credits_of(provider), 0)
                             for w in ("minute", "day", "month")}
        quota = (quotas or {}).get(provider)
        if quota:
            # Plans charge a credit per good answer (CoinGecko's Demo docs): refused calls are free.
            used = entry["answered"]["month"]
            entry["monthly_quota"] = {"calls": quota, "used": used, "left": max(0, quota - used)}
        weight = state.get(f"weight:{provider}")
        if weight:
            try:
                entry["used_weight_1m"] = json.loads(weight).get("used")
            except ValueError:
                pass
        out[provider] = entry
    return out
