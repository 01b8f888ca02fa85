"""Faults: Redis lost and back empty, a partitioned or paused leader, a failing
upstream, abusive clients, secrets. Real processes throughout; the fault
model and what each test shows are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import ExitStack

import psutil
import pytest
import redis
import requests

from feed.redisconn.embedded import RedisProcess
from lab.clients import RecordingClient
from lab.redis_clock import redis_now_ms
from tests.support.service import Instance
from tests.support.tcpproxy import TCPProxy
from tests.test_cluster import Recorder, assert_one_writer_at_a_time, wait_leader

TTL = 2.0  # tests/support/service.py FAST_ENV




def start(stack: ExitStack, name: str, redis_url: str, sim_url: str, workers: int = 1,
          **env: str) -> Instance:
    inst = Instance(name, workers=workers, redis_url=redis_url, sim_url=sim_url, env=env)
    stack.callback(inst.stop)
    return inst.wait_ready()


def client(stack: ExitStack, inst: Instance, name: str, **kw) -> RecordingClient:
    c = RecordingClient(inst.ws_url, name=name, **kw).start()
    stack.callback(c.close)
    return c


def acquisitions(client: redis.Redis) -> list[tuple[int, str, int]]:
    return [(int(i.split(b"-")[0]), f[b"node"].decode(), int(f[b"epoch"]))
            for i, f in client.xrange("websocket:events") if f[b"event"] == b"acquired"]


def worker_pids(inst: Instance) -> set[int]:
    return {c.pid for c in psutil.Process(inst.proc.pid).children()}


def assert_in_order(c: RecordingClient) -> None:
    keys = c.keys()
    assert keys == sorted(set(keys)), f"{c.name} saw (epoch, seq) go backwards or repeat: {keys}"


def test_redis_killed_and_restarted_empty(stack, redis_proc, rclient, sim) -> None:
    insts = [start(stack, f"r{i}", redis_proc.url, sim.url, STALE_AFTER_SECONDS="2") for i in range(3)]
    pids = [worker_pids(i) for i in insts]
    clients = [client(stack, inst, f"c{n}") for n, inst in enumerate(insts)]
    for c in clients:
        c.wait_snapshots(2)
    before = max(e for _, _, e in acquisitions(rclient))
    last_before = {c.name: c.keys()[-1] for c in clients}

    redis_proc.kill()
    # Clients keep the last snapshot, flagged stale after the threshold.
    for c in clients:
        c.wait(lambda c: any(r.msg.get("type") == "stale" for r in c.messages), 10, "stale notice")
        stale = [r.msg for r in c.messages if r.msg.get("type") == "stale"][-1]
        assert (stale["epoch"], stale["seq"]) == c.keys()[-1]
        assert c.close_code is None
    h = insts[0].get("/health").json()
    assert h["stale"] is True and h["redis"]["ok"] is False
    time.sleep(1.0)

    redis_proc.start()
    fresh = redis.Redis.from_url(redis_proc.url)
    back = redis_now_ms(fresh)
    wait_leader(fresh, timeout=TTL + 10)
    took = (acquisitions(fresh)[0][0] - back) / 1000
    assert took <= TTL + 2, f"no leader until {took:.2f}s after Redis returned"
    new_epoch = acquisitions(fresh)[0][2]
    assert new_epoch > before
    for c in clients:
        c.wait(lambda c, c0=c: c.keys()[-1] > last_before[c0.name] and c.keys()[-1][0] == new_epoch,
               15, "a fresh snapshot after Redis returned")
        assert_in_order(c)
        assert c.snapshots()[-1]["stale"] is False
    # Nobody crashed or was restarted.
    assert [worker_pids(i) for i in insts] == pids
    assert all(i.proc.alive() for i in insts)


@pytest.mark.parametrize("fault", ["blackhole", "delay"])
def test_partitioned_leader_stops_and_rejoins_as_follower(stack, redis_proc, rclient, sim, fault) -> None:
    proxy = TCPProxy(("127.0.0.1", redis_proc.port))
    stack.callback(proxy.close)
    cut_off = start(stack, "cut", proxy.url(), sim.url)
    leader = wait_leader(rclient)
    assert leader in cut_off.nodes
    others = [start(stack, f"ok{i}", redis_proc.url, sim.url) for i in range(2)]
    recorder = Recorder(redis_proc.url)
    stack.callback(recorder.close)
    watchers = [client(stack, inst, f"w-{inst.name}") for inst in (cut_off, *others)]
    for c in watchers:
        c.wait_snapshots(2)

    t_cut = redis_now_ms(rclient)
    if fault == "blackhole":
        proxy.blackhole()  # packets vanish: no reset, only timeouts
    else:
        # A link so slow that the old leader's renewals and writes arrive
        # after its lock has moved on: Redis itself must refuse them.
        proxy.delay(TTL + 1.0)
    lost = cut_off.proc.wait_for("leader_lost", TTL + 5)
    assert lost["node"] == leader
    new = wait_leader(rclient, timeout=TTL + 5, not_=leader)
    new_ms, new_node, new_epoch = acquisitions(rclient)[-1]
    assert new_node == new and new not in cut_off.nodes
    assert (new_ms - t_cut) / 1000 <= TTL + 1.0
    # Its connections stayed open at Redis: presence could not tell, the TTL decided.
    assert b"presence_lost" not in [f.get(b"reason") for _, f in rclient.xrange("websocket:events")]
    time.sleep(1.5)

    proxy.heal()
    cut_off.proc.wait_for("subscription_restored", 20)
    time.sleep(1.5)
    h = cut_off.get("/health").json()
    assert h["role"] == "follower" and h["redis"]["ok"] is True and h["leader"] == new
    assert rclient.get("websocket:leader").decode() == new
    recorder.close()
    assert_one_writer_at_a_time(recorder.items)
    old_epoch_writes = [e for e in recorder.items if e["leader"] == leader and e["epoch"] >= new_epoch]
    assert not old_epoch_writes
    assert json.loads(rclient.get("websocket:snapshot"))["leader"] == new
    for c in watchers:
        assert_in_order(c)
    # The cut-off instance's client is served again after the heal.
    n = len(watchers[0].snapshots())
    watchers[0].wait_snapshots(n + 2, timeout=10)
    assert watchers[0].snapshots()[-1]["leader"] == new


def test_paused_leader_makes_no_stale_write(stack, redis_proc, rclient, sim) -> None:
    insts = [start(stack, f"p{i}", redis_proc.url, sim.url) for i in range(3)]
    recorder = Recorder(redis_proc.url)
    stack.callback(recorder.close)
    watchers = [client(stack, inst, f"w{n}") for n, inst in enumerate(insts)]
    for c in watchers:
        c.wait_snapshots(2)
    leader = wait_leader(rclient)
    owner = next(i for i in insts if leader in i.nodes)
    pid = owner.nodes[leader]
    psutil.Process(pid).suspend()
    try:
        new = wait_leader(rclient, timeout=TTL + 5, not_=leader)
        time.sleep(1.0)
    finally:
        psutil.Process(pid).resume()
    owner.proc.wait_for("leader_lost", 10, where=lambda e: e.get("node") == leader)
    time.sleep(2.0)
    recorder.close()
    assert_one_writer_at_a_time(recorder.items)
    assert rclient.get("websocket:leader").decode() == new
    for c in watchers:
        assert_in_order(c)
        assert c.close_code is None
    # The resumed worker's own clients moved on to the new leader's data.
    w = next(c for c, i in zip(watchers, insts, strict=True) if i is owner)
    n = len(w.snapshots())
    w.wait_snapshots(n + 2)
    assert w.snapshots()[-1]["leader"] == new


def test_upstream_down_slow_rate_limited_and_garbage_end_to_end(stack, redis_proc, sim) -> None:
    # Every provider on every tick, and sections that may be 3 s old at most,
    # so that each fault shows within a few snapshots.
    inst = start(stack, "up", redis_proc.url, sim.url, STALE_AFTER_SECONDS="2",
                 HTTP_READ_TIMEOUT_SECONDS="0.3", HTTP_RETRIES="0", COINGECKO_INTERVAL_SECONDS="0.5",
                 COINGECKO_MARKET_INTERVAL_SECONDS="0.5",
                 FEAR_GREED_INTERVAL_SECONDS="0.5", SECTION_MAX_AGE_SECONDS="3")
    c = client(stack, inst, "viewer")
    c.wait_snapshots(2)

    def faults(body: dict | None) -> None:
        if body is None:
            requests.delete(sim.url + "/_sim/faults", timeout=5).raise_for_status()
        else:
            requests.post(sim.url + "/_sim/faults", json=body, timeout=5).raise_for_status()

    def next_snapshot() -> dict:
        n = len(c.snapshots())
        c.wait_snapshots(n + 1)
        c.wait_snapshots(n + 2)  # one fetched wholly under the new fault
        return c.snapshots()[-1]

    # Garbage from one provider: rejected, its last good value kept and marked
    # stale, then dropped past its maximum age; the others' data still arrives.
    good = c.snapshots()[-1]["data"]["sentiment"]
    faults({"provider": "feargreed", "malformed": "not_json"})
    snap = next_snapshot()
    src = snap["data"]["sources"]["feargreed"]
    assert src["ok"] is False and src["error"] == "invalid"
    assert snap["data"]["sentiment"]["value"] == good["value"]
    c.wait(lambda c: "sentiment" in c.snapshots()[-1]["data"]["missing"], 10, "the sentiment dropped")
    assert c.snapshots()[-1]["data"]["sentiment"] is None
    assert snap["data"]["prices"]["BTC"]["usd"] > 0
    # 429 with Retry-After from one provider: it is skipped, not hammered.
    faults({"provider": "binance", "status": 429, "retry_after": 30})
    snap = next_snapshot()
    assert snap["data"]["sources"]["binance"]["ok"] is False
    # Binance's last price serves until it is stale, then CoinGecko's.
    c.wait(lambda c: c.snapshots()[-1]["data"]["prices"]["BTC"]["source"] == "simulated:coingecko", 10,
           "BTC priced by CoinGecko")
    calls = requests.get(sim.url + "/_sim/stats", timeout=5).json()
    binance_before = calls["by_provider"].get("binance", 0)
    next_snapshot()
    calls = requests.get(sim.url + "/_sim/stats", timeout=5).json()
    assert calls["by_provider"].get("binance", 0) == binance_before
    # Slow beyond the read timeout, then down altogether: the kept sections
    # age out, then nothing is written; clients keep the last snapshot and
    # are told it is stale.
    faults({"latency_ms": 1500})
    time.sleep(1.0)
    faults({"status": 500})
    c.wait(lambda c: any(r.msg.get("type") == "stale" for r in c.messages), 15, "stale notice")
    assert c.close_code is None
    h = inst.get("/health").json()
    assert h["stale"] is True
    text = inst.get("/metrics").text
    assert 'marketfeed_fetches_total{outcome="error"}' in text
    # Back up: fresh, non-stale snapshots resume by themselves.
    faults(None)
    n = len(c.snapshots())
    c.wait_snapshots(n + 1, timeout=15)
    assert c.snapshots()[-1]["stale"] is False
    assert c.snapshots()[-1]["data"]["prices"]["BTC"]["usd"] > 0
    assert_in_order(c)


def _rss(inst: Instance) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in inst.nodes.values())


def test_abusive_clients_get_the_right_answers_and_harm_no_one(stack, redis_proc, sim) -> None:
    inst = start(stack, "abuse", redis_proc.url, sim.url, FETCH_INTERVAL_SECONDS="0.3",
                 ALLOWED_ORIGINS="https://ok.example.com")
    bystanders = [client(stack, inst, f"b{i}") for i in range(3)]
    for b in bystanders:
        b.wait_snapshots(2)
    time.sleep(1.0)
    baseline = _rss(inst)
    handshake = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    results: dict[str, list] = {"churn": [], "half_open": [], "origin": []}

    def churn(n: int) -> None:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", inst.port))
            s.sendall(handshake)
            results["churn"].append(s.recv(12))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # an abortive close (RST), as a crashed client would

    threads = [threading.Thread(target=churn, args=(250,)) for _ in range(4)]
    half_open = []
    for _ in range(100):  # connect, start a request, never finish it
        s = socket.create_connection(("127.0.0.1", inst.port))
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
        half_open.append(s)
        stack.callback(s.close)
    for t in threads:
        t.start()
    import websocket as wsc

    for _ in range(20):
        with pytest.raises(wsc.WebSocketBadStatusException) as info:
            wsc.create_connection(inst.ws_url, origin="https://evil.example.net", timeout=5)
        results["origin"].append(info.value.status_code)
    closes = {}
    for name, payload, kind in [
        ("big", json.dumps({"op": "ping", "pad": "x" * 10000}), "text"),
        ("binary", b"\x00" * 10, "binary"),
        ("utf8", b"\xff\xfe\xfd", "raw-text"),
    ]:
        for i in range(10):
            c = client(stack, inst, f"{name}{i}")
            c.wait_snapshots(1)
            if kind == "text":
                c.send(payload)
            elif kind == "binary":
                c.send(payload, binary=True)
            else:
                c.ws.send(payload, opcode=wsc.ABNF.OPCODE_TEXT)
            closes.setdefault(name, set()).add(c.wait_closed(10))
    flood = client(stack, inst, "flood")
    flood.wait_snapshots(1)
    try:
        for i in range(500):
            flood.send(json.dumps({"op": "status", "id": i}))
    except Exception:  # the server closes it part-way
        pass
    for t in threads:
        t.join(60)
    assert closes == {"big": {1009}, "binary": {1003}, "utf8": {1007}}
    assert flood.wait_closed(10) == 1008
    assert set(results["origin"]) == {403}
    assert len(results["churn"]) == 1000 and set(results["churn"]) == {b"HTTP/1.1 101"}
    # The half-open sockets are dropped by the server (Gunicorn's keepalive
    # timeout on an unfinished request), not held for ever.
    for s in half_open:
        s.settimeout(15)
        try:
            assert s.recv(1024) == b""
        except ConnectionResetError:
            pass
    # The bystanders never waited: snapshots kept arriving every ~0.3 s.
    for b in bystanders:
        assert b.close_code is None
        gaps = [y.t - x.t for x, y in zip(b.messages, b.messages[1:], strict=False)]
        assert max(gaps) < 2.0, f"{b.name} waited {max(gaps):.2f}s"
        assert_in_order(b)
    # Memory returns near its baseline once the abuse is over.
    time.sleep(3.0)
    grown = (_rss(inst) - baseline) / 2**20
    assert grown < 20, f"worker memory grew by {grown:.1f} MiB after the abuse"
    text = inst.get("/metrics").text
    assert "marketfeed_ws_clients" in text
    assert inst.get("/health").json()["clients"] == 3  # the bystanders, nothing left over


def test_a_redis_password_never_shows(stack, tmp_path, sim) -> None:
    secret = "pw-Zq81xK"
    server = RedisProcess(workdir=str(tmp_path / "r"), extra_args=["--requirepass", secret]).start()
    stack.callback(server.close)
    url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
    inst = start(stack, "sec", url, sim.url)
    c = client(stack, inst, "viewer")
    c.wait_snapshots(2)
    pages = [inst.get(p).text for p in ("/health", "/status", "/metrics")]
    c.send(json.dumps({"op": "status"}))
    time.sleep(0.5)
    server.kill()  # connection errors get logged now
    time.sleep(2.0)
    pages += [inst.get(p).text for p in ("/health", "/status", "/metrics")]
    inst.stop()
    output = "\n".join(inst.proc.raw)
    for text in [*pages, output, json.dumps([r.msg for r in c.messages])]:
        assert secret not in text
    assert ":***@" in pages[0] and ":***@" in output
    assert "redis_unreachable" in output or "subscription_lost" in output


def test_a_killed_leader_worker_is_replaced_at_once_not_after_its_ttl(stack, redis_proc, rclient,
                                                                      sim) -> None:
    # A long TTL makes the difference plain: without the reaper, up to 10 s.
    # Presence off: the deputy on the other instance would otherwise race the
    # reaper (both take well under a second) and either may record the loss;
    # this test is the reaper's (presence has tests/test_presence.py).
    slow = {"LOCK_TTL_SECONDS": "10", "RENEW_INTERVAL_SECONDS": "3", "LEASE_MARGIN_SECONDS": "2",
            "PRESENCE": "off"}
    insts = [start(stack, f"k{i}", redis_proc.url, sim.url, workers=2, **slow) for i in range(2)]
    leader = wait_leader(rclient)
    owner = next(i for i in insts if leader in i.nodes)
    watcher = client(stack, next(i for i in insts if i is not owner), "watcher")
    watcher.wait_snapshots(2)
    killed_ms = redis_now_ms(rclient)
    psutil.Process(owner.nodes[leader]).kill()
    new = wait_leader(rclient, timeout=15, not_=leader)
    took = (acquisitions(rclient)[-1][0] - killed_ms) / 1000
    assert took < 3.0, f"failover took {took:.2f}s"
    lost = [f for _, f in rclient.xrange("websocket:events") if f[b"event"] == b"lost"]
    assert lost and lost[-1][b"node"].decode() == leader and lost[-1][b"reason"] == b"process_died"
    n = len(watcher.snapshots())
    watcher.wait_snapshots(n + 1, timeout=10)
    assert watcher.snapshots()[-1]["leader"] == new
    # The master replaced the worker; the instance serves on.
    deadline = time.monotonic() + 15
    while len(owner.proc.events("worker_ready")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(owner.proc.events("worker_ready")) == 3


def test_reaper_leaves_a_live_leader_alone(redis_proc, rclient) -> None:
    from feed.election.reaper import reap
    from feed.keys import Keys

    rclient.set("websocket:leader", "ws-r1-123-abcd", px=10000)
    assert reap(rclient, Keys(), "ws-r1-12-") is None  # a prefix, not a substring match
    assert reap(rclient, Keys(), "ws-r2-123-") is None
    assert rclient.get("websocket:leader") == b"ws-r1-123-abcd"
    assert reap(rclient, Keys(), "ws-r1-123-") == "ws-r1-123-abcd"
    assert rclient.get("websocket:leader") is None
    with pytest.raises(ValueError):
        reap(rclient, Keys(), "")
