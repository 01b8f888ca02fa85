"""Candidates in separate processes (``python -m lab.node``) on one real Redis.

Timing here is scaled down (TTL 2 s) to keep the suite fast; the rules are the
same as with the defaults. Times are bounded generously, only to catch hangs
and to check the contract's own bounds (remaining TTL + 1 s, release < 1 s).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import ExitStack

import pytest
import redis

from feed.redisconn.embedded import RedisProcess, free_port
from lab.redis_clock import redis_now_ms
from tests.support.procs import LoggedProcess, start_node

FAST = {
    "LOCK_TTL_SECONDS": 2.0,
    "RENEW_INTERVAL_SECONDS": 0.5,
    "LEASE_MARGIN_SECONDS": 0.3,
    "FETCH_INTERVAL_SECONDS": 0.3,
    "REDIS_TIMEOUT_SECONDS": 0.5,
}


class Recorder:
    """Subscribes to the updates channel and keeps every envelope, in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.items: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
                sub = client.pubsub(ignore_subscribe_messages=True)
                sub.subscribe("websocket:updates")
                while not self._stop.is_set():
                    msg = sub.get_message(timeout=0.2)
                    if msg:
                        self.items.append(json.loads(msg["data"]))
            except redis.RedisError:
                time.sleep(0.1)

    def envelope_keys(self) -> list[tuple[int, int]]:
        return [(e["epoch"], e["seq"]) for e in self.items]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3)


def wait_leader(client: redis.Redis, timeout: float = 10.0, not_: str | None = None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            holder = client.get("websocket:leader")
        except redis.RedisError:
            holder = None
        if holder and holder.decode() != not_:
            return holder.decode()
        time.sleep(0.01)
    raise AssertionError(f"no leader (other than {not_}) within {timeout}s")


def node_ids(nodes: list[LoggedProcess], timeout: float = 10.0) -> dict[str, LoggedProcess]:
    return {n.wait_for("node_started", timeout)["node"]: n for n in nodes}


def acquired_events(client: redis.Redis) -> list[tuple[int, str, int]]:
    out = []
    for entry_id, fields in client.xrange("websocket:events"):
        if fields[b"event"] == b"acquired":
            ms = int(entry_id.split(b"-")[0])
            out.append((ms, fields[b"node"].decode(), int(fields[b"epoch"])))
    return out


def assert_one_writer_at_a_time(recorded: list[dict]) -> None:
    """Envelopes arrive in strictly increasing (epoch, seq); one leader per epoch."""
    keys = [(e["epoch"], e["seq"]) for e in recorded]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), keys
    leaders: dict[int, set[str]] = {}
    for e in recorded:
        leaders.setdefault(e["epoch"], set()).add(e["leader"])
    assert all(len(v) == 1 for v in leaders.values()), leaders


@pytest.fixture
def cluster(redis_proc: RedisProcess):
    with ExitStack() as stack:
        def spawn(n: int, **settings: object) -> list[LoggedProcess]:
            merged = {**FAST, **settings}
            delay = float(merged.pop("fetch_delay", 0.0))
            procs = []
            for i in range(n):
                p = start_node(redis_proc.url, f"node{i}", fetch_delay=delay, **merged)
                stack.callback(p.stop)
                procs.append(p)
            return procs

        yield spawn


@pytest.mark.parametrize("count", [3, 10])
def test_exactly_one_leader_among_many(cluster, redis_proc: RedisProcess, rclient, count: int) -> None:
    recorder = Recorder(redis_proc.url)
    try:
        nodes = node_ids(cluster(count))
        leader = wait_leader(rclient)
        time.sleep(2.5)  # longer than a TTL: renewals must keep the same leader
        assert rclient.get("websocket:leader").decode() == leader
        claims = [nid for nid, p in nodes.items()
                  if len(p.events("leader_acquired"))
                  > len(p.events("leader_lost")) + len(p.events("leader_released"))]
        assert claims == [leader]
        assert len(acquired_events(rclient)) == 1
        assert len(recorder.items) >= 3
    finally:
        recorder.close()
    assert_one_writer_at_a_time(recorder.items)
    assert {e["leader"] for e in recorder.items} == {leader}


def test_kill_9_leader_new_one_within_remaining_ttl_plus_1s(cluster, redis_proc, rclient) -> None:
    recorder = Recorder(redis_proc.url)
    nodes = node_ids(cluster(3))
    old = wait_leader(rclient)
    time.sleep(0.8)
    pttl_ms = rclient.pttl("websocket:leader")
    nodes[old].signal(signal.SIGKILL)
    killed_ms = redis_now_ms(rclient)
    new = wait_leader(rclient, timeout=10, not_=old)
    new_ms, new_node, _ = acquired_events(rclient)[-1]
    assert new_node == new != old
    took = (new_ms - killed_ms) / 1000
    assert took <= pttl_ms / 1000 + 1.0, f"failover took {took:.3f}s with {pttl_ms} ms of TTL left"
    time.sleep(1.0)
    recorder.close()
    assert_one_writer_at_a_time(recorder.items)
    assert {e["leader"] for e in recorder.items} >= {old, new}


def test_graceful_release_hands_over_in_under_a_second(cluster, redis_proc, rclient) -> None:
    nodes = node_ids(cluster(3))
    old = wait_leader(rclient)
    time.sleep(0.5)
    before = len(acquired_events(rclient))
    t0_ms = redis_now_ms(rclient)
    nodes[old].signal(signal.SIGTERM)
    new = wait_leader(rclient, timeout=5, not_=old)
    events = acquired_events(rclient)
    assert len(events) == before + 1
    new_ms = events[-1][0]
    took = (new_ms - t0_ms) / 1000
    assert new != old
    assert took < 1.0, f"handover took {took:.3f}s"
    assert nodes[old].proc.wait(10) == 0
    released = [f for _, f in rclient.xrange("websocket:events") if f[b"event"] == b"released"]
    assert released and released[-1][b"node"].decode() == old


def test_paused_leader_cannot_write_after_it_wakes(cluster, redis_proc, rclient) -> None:
    recorder = Recorder(redis_proc.url)
    # Each fetch takes 1 s, so the pause lands between the lease check and the write.
    # The original's Redis contract too: it is written by the same fenced script.
    nodes = node_ids(cluster(3, fetch_delay=1.0, FETCH_INTERVAL_SECONDS=0.2, ORIGINAL_COMPAT="on",
                             ORIGINAL_CACHE_TTL_SECONDS=30))
    old = wait_leader(rclient)
    p = nodes[old]
    mark = len(p.lines)
    p.wait_for("fake_fetch_started", 10, after=mark)
    p.signal(signal.SIGSTOP)
    try:
        new = wait_leader(rclient, timeout=10, not_=old)
        time.sleep(2.2)  # the new leader has written by now (its own 1 s fetch)
    finally:
        mark = len(p.lines)
        p.signal(signal.SIGCONT)
    refused = p.wait_for("write_refused", 10, after=mark)
    assert refused["reason"] in ("not_leader", "stale_epoch")
    p.wait_for("leader_lost", 10, after=mark)
    time.sleep(1.5)
    stored = json.loads(rclient.get("websocket:snapshot"))
    assert stored["leader"] != old
    assert rclient.get("websocket:leader").decode() != old
    recorder.close()
    assert_one_writer_at_a_time(recorder.items)
    old_epochs = {e["epoch"] for e in recorder.items if e["leader"] == old}
    new_epochs = {e["epoch"] for e in recorder.items if e["leader"] == new}
    assert new_epochs and (not old_epochs or max(old_epochs) < min(new_epochs))
    # As the original's main service reads them: the ex-leader's late write reached neither key.
    # It would be an older fetch after newer ones; every entry is newer than the one before.
    entries = [json.loads(f[b"data"]) for _, f in rclient.xrange("market_data_stream")]
    fetched = [e["last_updated"] for e in entries]
    assert len(entries) >= 3 and fetched == sorted(set(fetched))
    assert json.loads(rclient.get("latest_market_data"))["last_updated"] >= fetched[-1]


def test_redis_restarted_empty_leader_again_and_epoch_keeps_rising(cluster, redis_proc, rclient) -> None:
    recorder = Recorder(redis_proc.url)
    nodes = node_ids(cluster(3))
    wait_leader(rclient)
    time.sleep(1.0)
    before = max(e for _, _, e in acquired_events(rclient))
    highest_seen = max(k[0] for k in recorder.envelope_keys())
    redis_proc.restart()
    fresh = redis.Redis.from_url(redis_proc.url)
    assert fresh.get("websocket:epoch") is None
    wait_leader(fresh, timeout=10)
    time.sleep(1.5)
    after = [e for _, _, e in acquired_events(fresh)]
    assert after and min(after) > max(before, highest_seen)
    recorder.close()
    epochs = [k[0] for k in recorder.envelope_keys()]
    assert epochs == sorted(epochs), "an epoch went backwards"
    assert all(p.alive() for p in nodes.values())


def test_redis_unreachable_at_start_then_arrives(cluster, tmp_path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    procs = []
    try:
        for i in range(3):
            procs.append(start_node(url, f"node{i}", **FAST))
        for p in procs:
            p.wait_for("redis_unreachable", 10)
        time.sleep(1.5)
        assert all(p.alive() for p in procs)
        assert not any(p.events("leader_acquired") for p in procs)
        with RedisProcess(port=port, workdir=str(tmp_path / "late")) as late:
            client = redis.Redis.from_url(late.url)
            leader = wait_leader(client, timeout=10)
            assert sum(len(p.events("leader_acquired")) for p in procs) == 1
            deadline = time.monotonic() + 5
            while client.get("websocket:snapshot") is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert json.loads(client.get("websocket:snapshot"))["leader"] == leader
    finally:
        for p in procs:
            p.stop()


def test_redis_lost_mid_run_nobody_leads_then_recovers(cluster, redis_proc, rclient) -> None:
    nodes = node_ids(cluster(3))
    old = wait_leader(rclient)
    time.sleep(0.5)
    redis_proc.kill()
    lost = nodes[old].wait_for("leader_lost", 5)
    assert lost["reason"] in ("lease_expired", "renew_refused")
    marks = {nid: len(p.lines) for nid, p in nodes.items()}
    time.sleep(2.5)  # more than a TTL without Redis
    for nid, p in nodes.items():
        assert p.alive(), f"{nid} died"
        assert not [e for e in p.lines[marks[nid]:] if e.get("event") == "leader_acquired"]
    redis_proc.start()
    fresh = redis.Redis.from_url(redis_proc.url)
    wait_leader(fresh, timeout=10)
    time.sleep(1.0)
    assert json.loads(fresh.get("websocket:snapshot"))["type"] == "snapshot"
    assert all(p.alive() for p in nodes.values())
