"""The election and the fenced write, in one process, against a real redis-server."""

from __future__ import annotations

import itertools
import json
import time

import pytest
import redis

from feed.config.settings import Settings
from feed.election.candidate import Election, ElectionError
from feed.election.fence import FencedStore, OriginalContract
from feed.election.lock import ScriptReplyError
from feed.election.term import LeaderCallbacks
from feed.envelope import Envelope
from feed.keys import Keys
from feed.node.node import FeedNode
from feed.redisconn.client import connect
from lab.fake_source import fake_fetcher

KEYS = Keys()


def make(client: redis.Redis, node: str, **kw: object) -> Election:
    params = {"ttl": 2.0, "renew_interval": 0.5, "margin": 0.3}
    params.update(kw)
    return Election(client, node, KEYS, **params)


def env(epoch: int, seq: int, leader: str) -> Envelope:
    return Envelope(epoch=epoch, seq=seq, leader=leader, fetched_at=time.time(), data={"prices": {}})


def test_acquire_sets_the_original_lock_and_advances_the_epoch(rclient: redis.Redis) -> None:
    a = make(rclient, "node-a", ttl=10.0, renew_interval=3.0, margin=2.0)
    result = a.try_acquire()
    assert result.acquired and a.is_leader
    # The original operators' checks, verbatim.
    assert rclient.get("websocket:leader") == b"node-a"
    assert 9 <= rclient.ttl("websocket:leader") <= 10
    assert int(rclient.get("websocket:epoch")) == result.epoch
    events = rclient.xrange("websocket:events")
    assert events[-1][1][b"event"] == b"acquired"
    assert events[-1][1][b"node"] == b"node-a"


def test_second_candidate_sees_the_holder_and_its_ttl(rclient: redis.Redis) -> None:
    a, b = make(rclient, "a"), make(rclient, "b")
    assert a.try_acquire().acquired
    seen = b.try_acquire()
    assert not seen.acquired
    assert seen.holder == "a"
    assert 0 < seen.pttl_ms <= 2000
    assert not b.is_leader


def test_a_holder_that_acquires_again_starts_a_new_epoch(rclient: redis.Redis) -> None:
    # A candidate acquires only when it is not leading; if the lock still
    # names it, its last term ended on its own clock (or the reply was lost).
    # The new term must not reuse an epoch it may already have written under.
    a = make(rclient, "a")
    first = a.try_acquire()
    a.lose(first.epoch, "lease_expired")
    again = a.try_acquire()
    assert again.acquired and again.epoch > first.epoch
    assert int(rclient.get("websocket:epoch")) == again.epoch
    assert [f[b"epoch"] for _, f in rclient.xrange("websocket:events") if f[b"event"] == b"acquired"] \
        == [str(first.epoch).encode(), str(again.epoch).encode()]


def test_a_lease_that_ran_out_while_the_lock_lived_resumes_under_a_new_epoch(redis_url: str) -> None:
    """The node's side of it: a new term after a pause never restarts seq under an old epoch."""
    now = [1000.0]
    # Driven by hand, without the follower role: no presence to wait for.
    s = Settings.from_env({}, redis_url=redis_url, lock_ttl=4.0, renew_interval=1.0,
                          lease_margin=1.5, fetch_interval=0.1, presence=False)
    seen: list[tuple[int, int]] = []
    node = FeedNode(s, connect(redis_url), fake_fetcher(), listener=lambda e: seen.append(e.key))
    e = node.leadership
    assert isinstance(e, Election)
    e.clock = lambda: now[0]
    assert e.try_acquire().acquired
    first = e.epoch
    node.leader.step()  # term starts
    for _ in range(3):
        node.leader.next_due = 0.0
        node.leader.step()
    assert seen[-1][0] == first and seen[-1][1] >= 3
    now[0] += 3.0  # past the lease (4 - 1.5), not past the lock (4)
    assert e.step() == 0.0 and not e.is_leader  # lease_expired
    assert connect(redis_url).get("websocket:leader").decode() == node.node_id
    e.step()  # the lock is still ours: acquired again
    assert e.is_leader and e.epoch > first
    node.leader.step()
    node.leader.next_due = 0.0
    node.leader.step()
    assert seen[-1] == (e.epoch, 1) and seen == sorted(seen)


def test_a_renewal_answered_after_the_lease_ended_ends_the_term(rclient: redis.Redis) -> None:
    # Redis paused: the renewal went out within the lease, its reply came
    # after it. The leader role stopped acting at the lease's end, so the
    # term is over; the next one (the lock is still ours) gets a new epoch.
    now = [1000.0]
    a = make(rclient, "a", ttl=4.0, renew_interval=1.0, margin=1.5)
    a.clock = lambda: now[0]
    first = a.try_acquire()
    sent = a._renew

    def slow_renew(**kw: object) -> object:
        reply = sent(**kw)
        now[0] += 3.0  # the reply arrives past the lease (2.5 s), not past the lock (4 s)
        return reply

    a._renew = slow_renew
    now[0] += 1.0
    assert a.step() == 0.0 and not a.is_leader
    a._renew = sent
    assert a.step() > 0 and a.is_leader and a.epoch > first.epoch


def test_the_next_renewal_comes_before_a_short_lease_ends(rclient: redis.Redis) -> None:
    now = [1000.0]
    a = make(rclient, "a", ttl=4.0, renew_interval=1.0, margin=1.5)
    a.clock = lambda: now[0]
    a.try_acquire()
    sent = a._renew

    def slow_renew(**kw: object) -> object:
        now[0] += 1.6  # answered in time, with 0.9 s of the lease left
        return sent(**kw)

    a._renew = slow_renew
    assert a.step() == pytest.approx(0.45)
    a._renew = sent
    now[0] += 0.45
    assert a.step() == 1.0 and a.is_leader


def test_renew_and_release_by_a_non_owner_change_nothing(rclient: redis.Redis) -> None:
    a, b = make(rclient, "a"), make(rclient, "b")
    epoch = a.try_acquire().epoch
    # b pretends to lead under a's epoch: both scripts must refuse it.
    b._role, b._epoch, b._deadline = "leader", epoch, time.monotonic() + 5
    assert b.renew() is False
    assert not b.is_leader
    b._role, b._epoch, b._deadline = "leader", epoch, time.monotonic() + 5
    assert b.release() is False
    assert rclient.get("websocket:leader") == b"a"
    assert int(rclient.get("websocket:epoch")) == epoch
    assert a.renew() is True


def test_expired_lock_is_taken_over(rclient: redis.Redis) -> None:
    lost: list[str] = []
    a = make(rclient, "a", ttl=0.3, renew_interval=0.1, margin=0.05,
             callbacks=LeaderCallbacks(stopped=lambda term, reason: lost.append(reason)))
    b = make(rclient, "b")
    first = a.try_acquire().epoch
    time.sleep(0.4)
    assert not a.is_leader  # its lease ended on its own clock, too
    took = b.try_acquire()
    assert took.acquired and took.epoch > first
    assert rclient.get("websocket:leader") == b"b"
    a._role, a._epoch, a._deadline = "leader", first, time.monotonic() + 5
    assert a.renew() is False
    assert lost == ["renew_refused"]


def test_every_acquisition_gets_a_strictly_greater_epoch(rclient: redis.Redis) -> None:
    nodes = [make(rclient, f"n{i}") for i in range(5)]
    epochs = []
    for n in nodes * 3:
        epochs.append(n.try_acquire().epoch)
        assert n.release()
    assert all(later > earlier for earlier, later in itertools.pairwise(epochs))


def test_epoch_survives_a_redis_restart_that_lost_it(redis_proc, rclient: redis.Redis) -> None:
    a = make(rclient, "a")
    # Push the stored epoch far ahead of the clock: only the candidate's own
    # memory of it can keep the next epoch above it after the restart.
    rclient.set("websocket:epoch", 10**15)
    high = a.try_acquire().epoch
    assert high > 10**15
    redis_proc.restart()
    fresh = redis.Redis.from_url(redis_proc.url)
    assert fresh.get("websocket:epoch") is None
    b = make(fresh, "b")
    b.observe_epoch(high)  # b received a's snapshots before the restart
    assert b.try_acquire().epoch > high
    # With no memory at all, the Redis clock still keeps a normal epoch rising.
    c_epoch_before = make(fresh, "c").epoch_floor
    assert c_epoch_before == 0


def test_epoch_after_cold_restart_exceeds_earlier_clock_based_epochs(redis_proc, rclient) -> None:
    a = make(rclient, "a")
    before = a.try_acquire().epoch
    redis_proc.restart()
    fresh = redis.Redis.from_url(redis_proc.url)
    nobody_remembers = make(fresh, "z")
    assert nobody_remembers.try_acquire().epoch > before


def test_fenced_write_refuses_a_deposed_leader(rclient: redis.Redis) -> None:
    store = FencedStore(rclient, KEYS, cache_ttl=10)
    a, b = make(rclient, "a", ttl=0.3, renew_interval=0.1, margin=0.05), make(rclient, "b")
    ea = a.try_acquire().epoch
    assert store.write("a", env(ea, 1, "a")).ok
    time.sleep(0.4)
    eb = b.try_acquire().epoch
    assert store.write("b", env(eb, 1, "b")).ok
    refused = store.write("a", env(ea, 2, "a"))
    assert not refused.ok and refused.reason == "not_leader"
    assert store.read().leader == "b"


def test_fenced_write_refuses_an_old_epoch_even_from_the_holder(rclient: redis.Redis) -> None:
    store = FencedStore(rclient, KEYS)
    a = make(rclient, "a")
    e1 = a.try_acquire().epoch
    a.release()
    e2 = a.try_acquire().epoch
    result = store.write("a", env(e1, 9, "a"))
    assert not result.ok and result.reason == "stale_epoch"
    assert store.write("a", env(e2, 1, "a")).ok


def test_fenced_write_stores_with_ttl_and_publishes(rclient: redis.Redis) -> None:
    store = FencedStore(rclient, KEYS, cache_ttl=10)
    sub = rclient.pubsub()
    sub.subscribe(KEYS.updates)
    sub.get_message(timeout=1)
    a = make(rclient, "a")
    e = a.try_acquire().epoch
    result = store.write("a", env(e, 1, "a"))
    assert result.ok and result.receivers == 1
    stored = json.loads(rclient.get("websocket:snapshot"))
    assert stored["type"] == "snapshot" and stored["epoch"] == e and stored["seq"] == 1
    assert 9 <= rclient.ttl("websocket:snapshot") <= 10
    msg = sub.get_message(timeout=2)
    assert msg and json.loads(msg["data"])["seq"] == 1
    # Without ORIGINAL_COMPAT the original's keys are left alone.
    assert not rclient.exists("latest_market_data", "market_data_stream")


def original_reads(client: redis.Redis) -> tuple[dict | None, dict | None]:
    """What the original's main service reads: the flat object, and the stream's newest entry."""
    latest = client.get("latest_market_data")
    newest = client.xrevrange("market_data_stream", count=1)
    return (json.loads(latest) if latest else None,
            json.loads(newest[0][1][b"data"]) if newest else None)


def test_the_original_contract_is_written_under_the_fence(rclient: redis.Redis) -> None:
    store = FencedStore(rclient, KEYS, cache_ttl=10, original=OriginalContract(ttl=5, stream_maxlen=50))
    a, b = make(rclient, "a"), make(rclient, "b")
    e = a.try_acquire().epoch
    data = {"prices": {"BTC": {"usd": 91234.5, "change_24h": -1.2, "source": "binance"}},
            "market": {"total_market_cap_usd": 3.1e12, "btc_dominance": 56.1, "source": "coingecko"},
            "sentiment": {"value": 54, "source": "feargreed"}, "sources": {}, "missing": []}
    for seq in range(1, 121):
        assert store.write("a", Envelope(e, seq, "a", 1795699800.0 + seq, data)).ok
    latest, newest = original_reads(rclient)
    assert latest == newest
    assert latest["btc_price_usd"] == 91234.5 and latest["btc_change_24h"] == -1.2
    assert latest["market_cap_usd"] == 3.1e12 and latest["fng_value"] == 54
    assert latest["last_updated"] == "2026-11-26T13:32:00.000Z"  # the newest write's fetch time
    assert 4 <= rclient.ttl("latest_market_data") <= 5
    assert 50 <= rclient.xlen("market_data_stream") < 120  # capped near 50 (MAXLEN ~)
    # A deposed leader (b took over) writes neither key, whatever it believes.
    rclient.delete("websocket:leader")
    b.try_acquire()
    before = rclient.xlen("market_data_stream")
    other = {**data, "prices": {"BTC": {"usd": 1.0, "source": "binance"}}}
    result = store.write("a", Envelope(e, 999, "a", 1795699999.0, other))
    assert not result.ok and result.reason == "not_leader"
    assert rclient.xlen("market_data_stream") == before
    assert original_reads(rclient)[1]["btc_price_usd"] == 91234.5


def test_release_wakes_followers_through_pubsub(rclient: redis.Redis) -> None:
    sub = rclient.pubsub()
    sub.subscribe(KEYS.leader_events)
    sub.get_message(timeout=1)
    a = make(rclient, "a")
    epoch = a.try_acquire().epoch
    assert sub.get_message(timeout=2)["data"] == f"acquired a {epoch}".encode()
    assert a.release()
    assert sub.get_message(timeout=2)["data"] == f"released a {epoch}".encode()
    assert rclient.get("websocket:leader") is None


def test_leader_without_redis_stops_leading_within_its_lease(redis_proc) -> None:
    client = connect(redis_proc.url, timeout=0.3)
    lost: list[str] = []
    a = Election(client, "a", KEYS, ttl=1.5, renew_interval=0.4, margin=0.3,
                 callbacks=LeaderCallbacks(stopped=lambda term, reason: lost.append(reason)))
    import threading

    t = threading.Thread(target=a.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not a.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.is_leader
    redis_proc.kill()
    killed = time.monotonic()
    while a.is_leader and time.monotonic() - killed < 5:
        time.sleep(0.01)
    assert not a.is_leader
    # The lease cannot outlive ttl - margin after the last good renewal.
    assert time.monotonic() - killed <= 1.5
    deadline = time.monotonic() + 3
    while not lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lost == ["lease_expired"]
    assert a.role == "disconnected"
    a.stop(release=False)
    t.join(3)
    assert not t.is_alive()


def test_bad_arguments_fail_at_construction(rclient: redis.Redis) -> None:
    with pytest.raises(ElectionError):
        Election(rclient, "a", ttl=10, renew_interval=5)
    with pytest.raises(ElectionError):
        Election(rclient, "has space")
    with pytest.raises(ElectionError):
        Election(rclient, "a", ttl=10, renew_interval=3, margin=8)


def test_node_delivers_each_snapshot_once_in_order(redis_url: str) -> None:
    s = Settings.from_env({}, redis_url=redis_url, lock_ttl=1.0, renew_interval=0.3,
                          lease_margin=0.2, fetch_interval=0.1)
    seen: list[list[tuple[int, int]]] = [[], [], []]
    nodes = [FeedNode(s, connect(redis_url), fake_fetcher(), listener=lambda e, i=i: seen[i].append(e.key))
             for i in range(3)]
    for n in nodes:
        n.start()
    try:
        time.sleep(1.5)
        leader = next(n for n in nodes if n.is_leader)
        leader.stop()
        time.sleep(1.0)
    finally:
        for n in nodes:
            n.stop()
    for keys in seen:
        assert keys == sorted(set(keys)), "duplicates or out of order"
    survivors = [seen[i] for i, n in enumerate(nodes) if n is not leader]
    # Both epochs reached the survivors, and they saw the same sequence.
    assert len({k[0] for k in survivors[0]}) >= 2
    common = set(survivors[0]) & set(survivors[1])
    assert len(common) >= 10


def test_follower_sleeps_until_the_lock_expires(rclient: redis.Redis) -> None:
    a, b = make(rclient, "a", ttl=2.0), make(rclient, "b", ttl=2.0)
    a.try_acquire()
    delay = b.step()
    pttl = rclient.pttl("websocket:leader") / 1000
    assert pttl - 0.1 <= delay <= pttl + 0.1, (delay, pttl)
    # ...and a release wakes it at once instead.
    woke = []
    b.wake = lambda: woke.append(True)  # what the node calls on a release event
    assert a.release()
    assert b.step() == b.renew_interval and b.is_leader


@pytest.mark.parametrize("reply", ["return {7, 1, 1}", "return {1}", "return 'OK'", "return {0}"])
def test_an_unknown_acquire_reply_raises_and_never_leads(rclient: redis.Redis, reply: str) -> None:
    # A script of another version under the same name: its answer is not taken for success.
    e = make(rclient, "node-x")
    e._acquire = rclient.register_script(reply)
    with pytest.raises(ScriptReplyError):
        e.try_acquire()
    assert not e.is_leader
    with pytest.raises(ScriptReplyError):
        e.step()  # run() catches it, logs script_reply_unexpected and backs off
    assert rclient.get(Keys().leader) is None


def test_an_unknown_renew_or_write_reply_raises(rclient: redis.Redis) -> None:
    e = make(rclient, "node-r")
    assert e.try_acquire().acquired
    e._renew = rclient.register_script("return 5")
    with pytest.raises(ScriptReplyError):
        e.renew()
    store = FencedStore(rclient)
    store._write = rclient.register_script("return {0, 'maybe'}")
    with pytest.raises(ScriptReplyError):
        store.write("node-r", env(e.epoch, 1, "node-r"))
