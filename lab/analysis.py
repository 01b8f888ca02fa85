"""What the lab's recordings mean, and the original service's timing to compare with.

Measured side (our service, from a :class:`lab.cluster.Cluster`):

* :func:`leadership_terms`  who led when, from the ``websocket:events`` leadership log;
* :func:`measure_failover`  one fault: time without a leader (Redis clock at
  both ends), the longest gap between new snapshots on surviving clients,
  duplicate and skipped fetches around the handoff;
* :func:`fetch_irregularities`  duplicates (gap < 0.5 x interval) and skips
  (gap > 1.5 x interval) in a sequence of ``fetched_at`` times.

Original side: :func:`simulate_original` runs the Rust service's algorithm
as its summary describes it, as a small discrete-event simulation driven by
the same fault kind and fault time: every node's monitor loop renews (as
leader) or tries ``SET NX EX`` (as follower) every heartbeat; its fetch loop
fetches (leader) or reads the cache and re-broadcasts it (follower) every
interval. Nothing wakes a follower early, a graceful stop releases the lock
only after the server has drained (the platform kills it before that, so the
lock runs out as after a crash), and nothing fences a paused leader that
wakes up: its missed ticks fire at once (tokio's default ``Burst``) and it
fetches and writes until its monitor loop notices the loss. The two loops'
phases are not documented; each node's are drawn at random.
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FailoverResult",
    "Irregularities",
    "OriginalTiming",
    "OriginalTrial",
    "Term",
    "fetch_irregularities",
    "leadership_terms",
    "longest_gap",
    "measure_failover",
    "simulate_original",
    "summarize",
]


# --- measured side ----------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One leadership term: led from ``start`` to ``end``; the lock was held until ``lock_until``.

    ``end`` < ``lock_until`` when the leader crashed or froze while holding
    the lock: nobody worked in between.
    """

    node: str
    epoch: int
    start: float
    end: float
    lock_until: float
    ended_by: str  # released | stepped_down | lost | expired | running, or the fault's kind


def leadership_terms(events: Sequence[dict[str, Any]], faults: Iterable[Any] = (),
                     end: float | None = None) -> list[Term]:
    """Terms from the leadership log; ``faults`` (objects with kind, node, t) cut terms short."""
    cuts = {}
    for f in faults:
        cuts.setdefault(f.node, []).append((f.t, f.kind))
    acquired = [e for e in events if e.get("event") == "acquired"]
    last_ts = max((e["ts"] for e in events), default=0.0)
    stop = end if end is not None else last_ts
    terms = []
    for i, a in enumerate(acquired):
        node, epoch, start = a["node"], a.get("epoch", 0), a["ts"]
        nxt = acquired[i + 1]["ts"] if i + 1 < len(acquired) else stop
        # Superseded without an event of its own: the lock ran out.
        lock_until, why = nxt, "running" if i + 1 == len(acquired) else "expired"
        for e in events:
            if (e.get("node") == node and e.get("event") in ("released", "stepped_down", "lost")
                    and start <= e["ts"] and str(e.get("epoch")) == str(epoch)):
                if e["ts"] <= nxt:
                    lock_until, why = e["ts"], e["event"]
                break
        stopped, how = lock_until, why
        for t, kind in sorted(cuts.get(node, [])):
            if start <= t < lock_until:
                stopped, how = t, kind
                break
        terms.append(Term(node, int(epoch), start, stopped, lock_until, how))
    return terms


def longest_gap(times: Iterable[float], start: float, end: float) -> float:
    """The longest interval between consecutive ``times`` inside ``[start, end]``."""
    inside = sorted(t for t in times if start <= t <= end)
    if len(inside) < 2:
        return end - start
    return max(b - a for a, b in itertools.pairwise(inside))


@dataclass(frozen=True)
class Irregularities:
    duplicates: int  # consecutive fetches closer than 0.5 x interval
    skips: int  # gaps longer than 1.5 x interval
    missed: int  # fetches those gaps lost: round(gap / interval) - 1 each


def fetch_irregularities(fetched_at: Iterable[float], interval: float) -> Irregularities:
    """Duplicates and skips in a fetch schedule that should tick every ``interval``."""
    times = sorted(set(fetched_at))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    skips = [g for g in gaps if g > 1.5 * interval]
    return Irregularities(duplicates=sum(1 for g in gaps if g < 0.5 * interval), skips=len(skips),
                          missed=sum(max(1, round(g / interval) - 1) for g in skips))


@dataclass(frozen=True)
class FailoverResult:
    kind: str
    old_leader: str
    new_leader: str
    fault_t: float
    no_leader_s: float  # fault -> the next 'acquired' event (Redis clock)
    longest_gap_s: float  # between new snapshots, worst surviving client
    duplicates: int
    skips: int
    missed: int
    late_writes: int  # snapshots the old leader fetched after the fault (must be 0 with fencing)
    clients: int  # surviving clients the gap was measured on


def measure_failover(fault: Any, events: Sequence[dict[str, Any]], clients: Sequence[Any],
                     interval: float, end: float) -> FailoverResult:
    """One fault's numbers; ``clients`` are :class:`lab.clients.RecordingClient` objects.

    The window runs from two intervals before the fault to ``end``. Only
    clients on instances other than the faulty worker's count as surviving.
    """
    acquired = next((e for e in events if e.get("event") == "acquired"
                     and e["ts"] >= fault.t - 0.0005 and e.get("node") != fault.node), None)
    if acquired is None:
        raise ValueError(f"no leader was elected after the {fault.kind} at {fault.t:.3f}")
    start = fault.t - 2 * interval
    surviving = [c for c in clients if c.instance != fault.instance]
    gaps = []
    fetched: set[float] = set()
    late = set()
    for c in surviving:
        kept = [r for r in c.new_snapshots() if start <= r.t <= end]
        gaps.append(longest_gap([r.t for r in kept], start, end))
        for r in c.rows():
            if start <= r["t"] <= end:
                fetched.add(r["fetched_at"])
                if r["leader"] == fault.node and r["fetched_at"] >= fault.t:
                    late.add((r["epoch"], r["seq"]))
    irr = fetch_irregularities(fetched, interval)
    return FailoverResult(
        kind=fault.kind, old_leader=fault.node, new_leader=acquired["node"], fault_t=fault.t,
        no_leader_s=acquired["ts"] - fault.t, longest_gap_s=max(gaps) if gaps else float("nan"),
        duplicates=irr.duplicates, skips=irr.skips, missed=irr.missed, late_writes=len(late),
        clients=len(surviving),
    )


def summarize(values: Iterable[float]) -> dict[str, float]:
    """min / median / p95 / max of a sample (NaN-free)."""
    xs = sorted(v for v in values if v == v)
    if not xs:
        return {"n": 0, "min": float("nan"), "median": float("nan"), "p95": float("nan"),
                "max": float("nan")}
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return {"n": len(xs), "min": xs[0], "median": statistics.median(xs), "p95": p95, "max": xs[-1]}


# --- the original algorithm -------------------------------------------------


@dataclass(frozen=True)
class OriginalTiming:
    """The original's settings: fetch 5 s, ``EX 10``, heartbeat 5 s, cache TTL 10 s."""

    fetch_interval: float = 5.0
    lock_ttl: float = 10.0
    heartbeat: float = 5.0
    cache_ttl: float = 10.0

    @classmethod
    def like(cls, fetch_interval: float, lock_ttl: float) -> OriginalTiming:
        """The original's proportions (heartbeat = cache TTL / 2 = TTL / 2) at another scale."""
        return cls(fetch_interval, lock_ttl, lock_ttl / 2, lock_ttl)


@dataclass
class OriginalTrial:
    kind: str
    fault_t: float
    old_leader: int
    new_leader: int | None
    no_leader_s: float  # fault -> another node's SET NX succeeds
    first_fetch_s: float  # fault -> the new leader's first fetch
    longest_gap_s: float  # between new snapshots, worst surviving node's clients
    duplicates: int
    skips: int
    missed: int
    late_writes: int  # fetches written by the old leader after its lock ran out
    follower_lag_s: list[float] = field(default_factory=list)  # broadcast - fetched_at, before the fault


_MONITOR, _FETCH = 0, 1


def simulate_original(kind: str, fault_at: float, *, nodes: int = 3,
                      timing: OriginalTiming | None = None, pause_s: float | None = None,
                      rng: random.Random | None = None, tail: float | None = None) -> OriginalTrial:
    """One run of the original algorithm with a fault of ``kind`` at ``fault_at`` s.

    ``kind``: ``crash`` or ``instance_crash`` (SIGKILL; the original ran one
    process per instance, so they are the same); ``graceful`` (SIGTERM: the original
    releases only after its server has drained, and the platform kills it
    before that, so the lock runs out as after a crash); ``pause`` (frozen
    for ``pause_s``, default TTL + 1 s). Nodes start at random moments
    within one heartbeat; the fault hits whoever leads at ``fault_at`` (if
    nobody leads yet, the first node to lead after it).
    """
    tm = timing or OriginalTiming()
    rng = rng or random.Random()
    if kind not in ("crash", "instance_crash", "graceful", "pause"):
        raise ValueError(f"unknown fault kind {kind!r}")
    if pause_s is None:
        pause_s = tm.lock_ttl + 1.0
    tail = tail if tail is not None else 3 * tm.fetch_interval
    horizon = fault_at + pause_s + 2 * tm.lock_ttl + tail + 2 * tm.heartbeat

    # Each node's two loops tick on their own phase from its start.
    queue: list[tuple[float, float, int, int]] = []  # (time, time due, node, loop)
    for n in range(nodes):
        started = rng.uniform(0, tm.heartbeat)
        for loop, period in ((_MONITOR, tm.heartbeat), (_FETCH, tm.fetch_interval)):
            t = started + rng.uniform(0, period)
            while t < horizon:
                queue.append((t, t, n, loop))
                t += period
    heapq.heapify(queue)

    holder: int | None = None
    expiry = 0.0
    leading = [False] * nodes  # each node's own belief (the original's AtomicBool)
    cache: tuple[float, float] | None = None  # (fetched_at, expires)
    fetches: list[tuple[float, int, bool]] = []  # (time, node, still held the lock)
    acquisitions: list[tuple[float, int]] = []
    seen: dict[int, list[tuple[float, float]]] = {n: [] for n in range(nodes)}  # (time, fetched_at)
    lag: list[float] = []
    target: int | None = None
    postponed = False

    while queue:
        t, due, n, loop = heapq.heappop(queue)
        if target is None and t >= fault_at:
            if holder is not None and expiry > t:
                target = holder
                if postponed:
                    fault_at = t
            else:  # nobody leads at this instant: hit the next one that does
                postponed = True
        if n == target:
            if kind != "pause":
                continue  # gone, and the lock stays until it runs out
            if fault_at <= t < fault_at + pause_s:
                # Missed while frozen: fires at once on waking, in the order due.
                heapq.heappush(queue, (fault_at + pause_s, due, n, loop))
                continue
        free = holder is None or t >= expiry
        if loop == _MONITOR:
            if leading[n]:
                if holder == n and not free:
                    expiry = t + tm.lock_ttl  # renew: GET == me, EXPIRE
                else:
                    leading[n] = False  # the renewal failed
            elif free:
                holder, expiry, leading[n] = n, t + tm.lock_ttl, True  # SET NX EX
                acquisitions.append((t, n))
        elif leading[n]:
            cache = (t, t + tm.cache_ttl)
            fetches.append((t, n, holder == n and not free))
            seen[n].append((t, t))
        elif cache is not None and t < cache[1]:
            seen[n].append((t, cache[0]))
            if t < fault_at:
                lag.append(t - cache[0])

    if target is None:
        raise ValueError("nobody led during the run")
    # After a pause the old leader may win the lock back: that ends the outage too.
    after = [(t, n) for t, n in acquisitions if t >= fault_at]
    new_leader = after[0][1] if after else None
    no_leader = after[0][0] - fault_at if after else float("inf")
    new_fetch = [t for t, n, _ in fetches if t >= fault_at and n == new_leader]
    first_fetch = new_fetch[0] - fault_at if new_fetch else float("inf")
    start = fault_at - 2 * tm.fetch_interval
    end = fault_at + max(no_leader, first_fetch, pause_s if kind == "pause" else 0.0) + tail
    gaps = []
    for n in range(nodes):
        if n == target:
            continue
        newest = -1.0
        fresh = []  # when this node's clients got a snapshot newer than before
        for t, fetched_at in seen[n]:
            if fetched_at > newest:
                newest = fetched_at
                fresh.append(t)
        gaps.append(longest_gap(fresh, start, end))
    irr = fetch_irregularities([t for t, _, _ in fetches if start <= t <= end], tm.fetch_interval)
    late = sum(1 for t, n, held in fetches if n == target and t >= fault_at and not held)
    return OriginalTrial(kind, fault_at, target, new_leader, no_leader, first_fetch, max(gaps),
                         irr.duplicates, irr.skips, irr.missed, late, lag)
