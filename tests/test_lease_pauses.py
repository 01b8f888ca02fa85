"""A pause that ends after the leader's lease but before its lock expires.

The leader worker (or Redis itself) is frozen right after a renewal, for
longer than the lease (TTL - margin) but shorter than the lock's TTL. When it
wakes, the lock still names it: it must start a new term under a new epoch,
not restart ``seq`` at 1 under the old one (clients would drop every
snapshot up to the old term's last seq as "not newer" and freeze). With
Redis frozen, a renewal the leader sent before its lease ended may be
answered as Redis wakes: then its term rightly goes on, seq continuing.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import psutil
import pytest
import redis

from lab.clients import RecordingClient
from tests.support.service import Instance

# The lease ends 2.5 s after a renewal, the lock 4 s after it; the pause
# ends at 3.0 s, between the two.
TIMING = {
    "LOCK_TTL_SECONDS": "4",
    "RENEW_INTERVAL_SECONDS": "1",
    "LEASE_MARGIN_SECONDS": "1.5",
    "FETCH_INTERVAL_SECONDS": "0.3",
    "REDIS_TIMEOUT_SECONDS": "0.5",
}
PAUSE = 3.0
# Fresh data must reach clients within this long after the pause ends
# (before the fix: about old seq x interval, 10 s and more here).
FRESH_WITHIN = 4.0


def wait_renewal(client: redis.Redis, timeout: float = 5.0) -> None:
    """Return right after the lock's PTTL jumps up (a renewal just happened)."""
    deadline = time.monotonic() + timeout
    last = client.pttl("websocket:leader")
    while time.monotonic() < deadline:
        now = client.pttl("websocket:leader")
        if now > last + 50:
            return
        last = now
        time.sleep(0.005)
    raise AssertionError("no renewal seen")


def cluster(stack: ExitStack, redis_url: str, sim_url: str) -> list[Instance]:
    insts = []
    for i in range(2):
        inst = Instance(f"lp{i}", workers=2, redis_url=redis_url, sim_url=sim_url, env=TIMING)
        stack.callback(inst.stop)
        insts.append(inst)
    for inst in insts:
        inst.wait_ready()
    return insts


def watch(stack: ExitStack, insts: list[Instance], per_instance: int = 2) -> list[RecordingClient]:
    clients = []
    for inst in insts:
        for n in range(per_instance):
            c = RecordingClient(inst.ws_url, name=f"{inst.name}-c{n}").start()
            stack.callback(c.close)
            clients.append(c)
    return clients


def assert_only_growing(c: RecordingClient) -> None:
    keys = c.keys()
    assert keys == sorted(set(keys)), f"{c.name}: (epoch, seq) went backwards or repeated: {keys}"


def clients_per_worker(stack: ExitStack, inst: Instance, workers: int) -> dict[str, RecordingClient]:
    """New clients until one is served by each worker of ``inst``."""
    found: dict[str, RecordingClient] = {}
    for n in range(40):
        c = RecordingClient(inst.ws_url, name=f"{inst.name}-late{n}").start()
        stack.callback(c.close)
        c.wait_snapshots(1, 5)
        served = c.snapshots()[0]["served_by"]
        if served in found:
            c.close()
            continue
        found[served] = c
        if len(found) == workers:
            return found
    raise AssertionError(f"{inst.name}: could not reach {workers} workers, got {sorted(found)}")


@pytest.mark.parametrize("frozen", ["leader_worker", "redis"])
def test_a_pause_between_lease_and_lock_keeps_clients_fresh_and_ordered(
        stack, redis_proc, rclient, sim, frozen: str) -> None:
    insts = cluster(stack, redis_proc.url, sim.url)
    clients = watch(stack, insts)
    # Long enough that the old term's seq is far ahead of a restarted one.
    for c in clients:
        c.wait_snapshots(30, 30)
    leader = rclient.get("websocket:leader").decode()
    owner = next(i for i in insts if leader in i.nodes)
    epoch_before = int(rclient.get("websocket:epoch"))
    target = psutil.Process(owner.nodes[leader] if frozen == "leader_worker" else redis_proc.proc.pid)

    wait_renewal(rclient)
    target.suspend()
    try:
        time.sleep(PAUSE)
    finally:
        target.resume()
    resumed = time.time()

    counts = {c.name: len(c.snapshots()) for c in clients}
    for c in clients:
        c.wait(lambda c, n=counts[c.name]: len(c.snapshots()) >= n + 3
               and c.messages[-1].t - resumed < FRESH_WITHIN + 5, FRESH_WITHIN + 5, "fresh snapshots")
        new = [r for r in c.messages if r.t >= resumed and r.msg.get("type") == "snapshot"]
        assert new[0].t - resumed < FRESH_WITHIN, f"{c.name}: first fresh snapshot " \
                                                  f"{new[0].t - resumed:.1f} s after the pause"
        assert c.close_code is None
    epoch_after = int(rclient.get("websocket:epoch"))
    if frozen == "leader_worker" or epoch_after != epoch_before:
        assert epoch_after > epoch_before
    else:
        # A renewal sent within the lease reached Redis as it woke (the lock
        # still ours, nobody else could take it): the same term goes on,
        # its seq continuing, which is as good for clients as a new term.
        assert not owner.proc.events("leader_lost", node=leader)
        assert min(c.snapshots()[-1]["seq"] for c in clients) > max(counts.values())
    if frozen == "leader_worker":
        owner.proc.wait_for("leader_lost", 5, where=lambda e: e.get("node") == leader)
    time.sleep(1.0)
    for c in clients:
        assert_only_growing(c)
        assert c.snapshots()[-1]["epoch"] == epoch_after
    # A client that connects now, to any worker, gets the current term's data,
    # never an older snapshot than those already delivered.
    newest = max(max(c.keys()) for c in clients)
    for inst in insts:
        for node, late in clients_per_worker(stack, inst, 2).items():
            first = late.snapshots()[0]
            assert (first["epoch"], first["seq"]) >= newest, (node, first["epoch"], first["seq"], newest)
            late.wait_snapshots(3, 5)
            assert_only_growing(late)
