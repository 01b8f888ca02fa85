"""Redis Sentinel: the URL, the client's failover behaviour, the service across a failover.

Every test that needs servers starts its own deployment (master, replica,
three sentinels on free loopback ports; see tests/support/sentinel.py) with
scaled-down Sentinel timing, so a failover after SIGKILL takes 2-3 s. Waits
are generous; the one timed assert is the bound this feature promises
(leader again within the failover time + TTL + 2 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import redis
from redis.connection import SSLConnection

from feed.config.settings import Settings
from feed.election.candidate import Election
from feed.election.fence import FencedStore
from feed.envelope import Envelope
from feed.errors import ConfigError
from feed.redisconn.client import connect, parse_sentinel_url
from feed.redisconn.embedded import RedisProcess, free_port
from feed.redisconn.url import redact_url
from lab.clients import RecordingClient
from tests.support.sentinel import SentinelCluster
from tests.support.service import FAST_ENV, Instance

SECRET = "s3cr#t/pw"
SECRET_Q = "s3cr%23t%2Fpw"  # the same, percent-encoded for a URL


# --- the URL ------------------------------------------------------------------


def test_parse_hosts_master_db_and_credentials() -> None:
    spec = parse_sentinel_url(f"redis+sentinel://app:{SECRET_Q}@10.0.0.1:26379,sentinel-b:26380,"
                              f"[fd00::3]:26381,sentinel-d/mymaster/3"
                              f"?sentinel_username=sen&sentinel_password={SECRET_Q}")
    assert spec.hosts == (("10.0.0.1", 26379), ("sentinel-b", 26380), ("fd00::3", 26381),
                          ("sentinel-d", 26379))
    assert (spec.master, spec.db) == ("mymaster", 3)
    assert (spec.username, spec.password) == ("app", SECRET)
    assert (spec.sentinel_username, spec.sentinel_password) == ("sen", SECRET)
    assert not spec.ssl and not spec.sentinel_ssl
    assert SECRET not in repr(spec)


def test_parse_defaults_and_tls() -> None:
    spec = parse_sentinel_url("redis+sentinel://h1:1,h2:2/cache")
    assert (spec.master, spec.db, spec.username, spec.password) == ("cache", 0, None, None)
    assert spec.sentinel_password is None
    assert parse_sentinel_url(f"redis+sentinel://:{SECRET_Q}@h:1/m").password == SECRET
    tls = parse_sentinel_url("rediss+sentinel://h:1/m")
    assert tls.ssl and tls.sentinel_ssl
    mixed = parse_sentinel_url("rediss+sentinel://h:1/m?sentinel_ssl=false")
    assert mixed.ssl and not mixed.sentinel_ssl


@pytest.mark.parametrize("url, says", [
    ("redis+sentinel://h1:1,h2:2", "master's name"),
    ("redis+sentinel://h1:1,h2:2/", "master's name"),
    ("redis+sentinel://h1:1,h2:99999/m", "port"),
    ("redis+sentinel://h1:1,h2:x/m", "h2:x"),
    ("redis+sentinel://h1:1,,h2:2/m", "sentinel address"),
    ("redis+sentinel:///m", "sentinel address"),
    ("redis+sentinel://h1:1/m/zero", "database"),
    ("redis+sentinel://h1:1/m/0/extra", "/master/db"),
    ("redis+sentinel://h1:1/m?sentinel_pasword=x", "sentinel_pasword"),
    ("redis+sentinel://h1:1/m?sentinel_ssl=maybe", "sentinel_ssl"),
    ("redis+sentinels://h1:1/m", "scheme"),
])
def test_bad_sentinel_urls_give_a_clear_config_error(url: str, says: str) -> None:
    # Each with a password, which no message may show.
    netloc, _, rest = url.partition("://")[2].partition("/")
    scheme = url.partition("://")[0]
    with_pw = f"{scheme}://app:{SECRET_Q}@{netloc}/{rest}"
    for bad in (url, with_pw):
        with pytest.raises(ConfigError) as info:
            connect(bad)
        assert info.value.setting == "REDIS_URL"
        assert says in str(info.value), str(info.value)
        assert SECRET not in str(info.value) and SECRET_Q not in str(info.value)


def test_settings_accept_a_sentinel_url() -> None:
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


def test_timeouts_and_credentials_reach_sentinels_and_servers() -> None:
    # No server is contacted: building a client only configures it.
    client = connect(f"rediss+sentinel://app:{SECRET_Q}@127.0.0.1:1,127.0.0.1:2/mymaster/4"
                     f"?sentinel_password={SECRET_Q}", timeout=0.7)
    try:
        pool = client.connection_pool
        kw = pool.connection_kwargs
        assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (0.7, 0.7)
        assert (kw["db"], kw["username"], kw["password"]) == (4, "app", SECRET)
        assert kw["retry"].get_retries() == 1
        assert issubclass(pool.connection_class, SSLConnection)
        for sentinel in pool.sentinel_manager.sentinels:
            skw = sentinel.connection_pool.connection_kwargs
            assert (skw["socket_timeout"], skw["socket_connect_timeout"]) == (0.7, 0.7)
            assert skw["password"] == SECRET
            # The next sentinel is the retry, not 10 backed-off attempts at a dead one.
            assert skw["retry"].get_retries() == 0
            assert issubclass(sentinel.connection_pool.connection_class, SSLConnection)
    finally:
        client.close()


def test_redact_url_hides_the_sentinel_password() -> None:
    shown = redact_url(f"redis+sentinel://:{SECRET_Q}x@h:1/m?sentinel_password={SECRET_Q}&sentinel_ssl=true")
    assert SECRET_Q not in shown
    assert shown == "redis+sentinel://:***@h:1/m?sentinel_password=***&sentinel_ssl=true"


# --- the Redis settings docs/SENTINEL.md recommends --------------------------------


def test_a_master_without_its_replicas_refuses_every_script(tmp_path) -> None:
    # min-replicas-to-write is what stops a deposed leader writing to an old
    # master cut off from its replicas: our scripts must be refused whole.
    args = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]
    with RedisProcess(workdir=str(tmp_path), extra_args=args) as server:
        client = connect(server.url, timeout=0.5)
        admin = redis.Redis.from_url(server.url)
        election = Election(client, "n1", ttl=2, renew_interval=0.5, margin=0.3)
        store = FencedStore(client)
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            election.try_acquire()
        assert admin.keys("*") == []  # nothing half-written
        admin.config_set("min-replicas-to-write", 0)
        assert election.try_acquire().acquired
        admin.config_set("min-replicas-to-write", 1)  # the replicas are gone again
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            election.renew()
        env = Envelope(epoch=election.epoch, seq=1, leader="n1", fetched_at=time.time(), data={})
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            store.write("n1", env)
        assert admin.get("websocket:snapshot") is None
        client.close()
        admin.close()


# --- the client against real sentinels ------------------------------------------


@pytest.fixture
def sentinels() -> Iterator[SentinelCluster]:
    with SentinelCluster(down_after_ms=1000, failover_timeout_ms=5000) as cluster:
        yield cluster


def wait_until(predicate, timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return time.monotonic()
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.05)


def test_client_follows_a_manual_failover_with_scripts_and_pubsub(sentinels) -> None:
    # A dead sentinel first in the list must not slow the lookup down.
    dead = free_port()
    url = sentinels.url().replace("://", f"://127.0.0.1:{dead},", 1)
    client = connect(url, timeout=0.5)
    try:
        t0 = time.monotonic()
        assert client.ping()
        assert time.monotonic() - t0 < 1.0
        old = sentinels.master_port()
        replica = sentinels.replicas[0].port
        bump = client.register_script("return redis.call('INCR', KEYS[1])")
        assert bump(keys=["n"]) == 1
        sub = client.pubsub(ignore_subscribe_messages=True)
        sub.subscribe("ch")
        sub.get_message(timeout=0.5)
        # The replica about to be promoted has never seen the script.
        sentinels.client_for(replica).script_flush()

        # SENTINEL FAILOVER keeps the old master alive, and a master, until the
        # sentinels demote it (8 s or more later): only our own watch moves
        # connections that are already open (the pub/sub one, idle pooled ones).
        sentinels.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", "mymaster")
        new = sentinels.wait_master_change(old)
        assert new == replica
        old_client, new_client = sentinels.client_for(old), sentinels.client_for(new)

        def resubscribed() -> bool:
            sub.get_message(timeout=0.1)  # reading is what lets the subscriber reconnect
            return new_client.pubsub_numsub("ch")[0][1] == 1

        wait_until(resubscribed, 10, "pub/sub on the new master")
        before_old = int(old_client.get("n"))
        for _ in range(5):
            bump(keys=["n"])  # EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA on the new master
        assert int(new_client.get("n")) == before_old + 5
        assert int(old_client.get("n")) == before_old, "a write reached the old master"
        assert old_client.execute_command("ROLE")[0] == b"master"  # not demoted yet
        assert new_client.publish("ch", "hello") == 1
        got = wait_until(lambda: (m := sub.get_message(timeout=0.2)) and m["data"] == b"hello",
                         5, "a message published on the new master")
        assert got
        sub.close()
    finally:
        client.close()


def test_a_connection_that_lands_on_a_replica_moves_to_the_master(sentinels) -> None:
    # A lagging sentinel may still name a demoted master (now a replica). The
    # replica answers our script's first write with READONLY; the connection
    # drops, asks again and the one retry runs on the real master.
    client = connect(sentinels.url(), timeout=0.5)
    try:
        bump = client.register_script("return redis.call('INCR', KEYS[1])")
        assert bump(keys=["n"]) == 1  # the script is in use on the master
        manager = client.connection_pool.sentinel_manager
        real = manager.discover_master
        stale = [("127.0.0.1", sentinels.replicas[0].port)]
        manager.discover_master = lambda name: stale.pop() if stale else real(name)
        client.connection_pool.disconnect()  # the next command opens a connection
        assert bump(keys=["n"]) == 2
        assert not stale, "the stale answer was never used"
        master = sentinels.client_for(sentinels.master_port())
        assert int(master.get("n")) == 2
        replica = sentinels.client_for(sentinels.replicas[0].port)
        assert int(replica.info("errorstats").get("errorstat_READONLY", {}).get("count", 0)) >= 1
    finally:
        client.close()


# --- the service across a SIGKILL of the master ---------------------------------



def acquisitions(client: redis.Redis) -> list[tuple[int, str, int]]:
    """(ms, node, epoch) of every 'acquired' event in the leadership log."""
    return [(int(i.split(b"-")[0]), f[b"node"].decode(), int(f[b"epoch"]))
            for i, f in client.xrange("websocket:events") if f[b"event"] == b"acquired"]


def service_connections(client: redis.Redis) -> list[dict]:
    """Client connections other than the sentinels' and this test's probes.

    A connection that has sent no command yet (``cmd=NULL``) is a handshake in
    flight: a sentinel re-opening its links after the ``CLIENT KILL`` it sends
    with ``REPLICAOF`` names itself with its first command. A connection of the
    service always sends one at once, so it shows at the next look.
    """
    return [c for kind in ("normal", "pubsub") for c in client.client_list(_type=kind)
            if not c.get("name", "").startswith(("sentinel-", "probe")) and c.get("cmd") != "NULL"]


def leaders_by_metrics(instances: list[Instance]) -> list[str]:
    """Nodes whose ``marketfeed_leader`` gauge is 1, across every instance."""
    out = []
    for inst in instances:
        for line in inst.get("/metrics").text.splitlines():
            if line.startswith("marketfeed_leader{") and float(line.rpartition(" ")[2]) == 1:
                out.append(line.split('node="', 1)[1].split('"', 1)[0])
    return out


def test_service_elects_again_after_the_master_is_killed(sentinels, sim) -> None:
    ttl = float(FAST_ENV["LOCK_TTL_SECONDS"])
    with ExitStack() as stack:
        instances = []
        for i in range(3):
            inst = Instance(f"s{i + 1}", workers=2, redis_url=sentinels.url(), sim_url=sim.url)
            stack.callback(inst.stop)
            instances.append(inst)
        for inst in instances:
            inst.wait_ready(60)
        workers = sum(inst.workers for inst in instances)
        old_port = sentinels.master_port()
        master = sentinels.client_for(old_port)
        wait_until(lambda: master.get("websocket:leader"), 15, "a leader")
        clients = []
        for inst in instances:
            for j in range(2):
                c = RecordingClient(inst.ws_url, name=f"{inst.name}-c{j}").start()
                stack.callback(c.close)
                clients.append(c)
        for c in clients:
            c.wait_snapshots(2, timeout=15)
        # One leader across all workers of all instances, elected through Sentinel.
        leader = master.get("websocket:leader").decode()
        assert leaders_by_metrics(instances) == [leader]
        before = acquisitions(master)
        assert before and before[-1][1] == leader
        assert master.pubsub_numsub("websocket:updates")[0][1] == workers

        sentinels.master.kill()
        killed, killed_wall = time.monotonic(), time.time()
        old_max = max(key[0] for c in clients for key in c.keys())  # noqa: SIM118 - RecordingClient.keys()
        new_port = sentinels.wait_master_change(old_port, timeout=30)
        switched = time.monotonic()
        promoted = sentinels.client_for(new_port)

        # A leader again, under a newer epoch, within failover + TTL + 2 s.
        wait_until(lambda: any(ep > old_max for _, _, ep in acquisitions(promoted)), 30,
                   "an election on the new master")
        ms, _, epoch = next(a for a in acquisitions(promoted) if a[2] > old_max)
        elected_after = ms / 1000 - killed_wall  # Redis's clock is this machine's
        assert elected_after <= (switched - killed) + ttl + 2, (
            f"leader after {elected_after:.2f}s; the sentinels switched after "
            f"{switched - killed:.2f}s")
        assert epoch > before[-1][2]
        # Every client gets fresh snapshots again, pushed from the new master.
        for c in clients:
            c.wait(lambda c: c.keys() and c.keys()[-1][0] > old_max, 20, "a snapshot of the new term")
        wait_until(lambda: promoted.pubsub_numsub("websocket:updates")[0][1] == workers, 15,
                   "every worker subscribed on the new master")

        # The killed master comes back empty; the sentinels make it a replica.
        # No connection of the service goes there, before or after.
        sentinels.master.start()
        revived = sentinels.client_for(old_port)
        deadline = time.monotonic() + 30
        while revived.execute_command("ROLE")[0] != b"slave":
            found = service_connections(revived)
            assert found == [], f"connections to the revived old master: {found}"
            assert time.monotonic() < deadline, "the old master was not demoted"
            time.sleep(0.2)
        mark = [len(c.keys()) for c in clients]
        for c, n in zip(clients, mark, strict=True):
            c.wait_snapshots(n + 2, timeout=15)
        found = service_connections(revived)
        assert found == [], f"connections to the old master, now a replica: {found}"

        # Order held throughout: no client ever saw (epoch, seq) go backwards.
        for c in clients:
            keys = c.keys()
            assert keys == sorted(set(keys)), f"{c.name}: out of order or repeated"
            assert keys[-1][0] > old_max
        leaders: dict[int, set[str]] = {}
        for m in (m for c in clients for m in c.snapshots()):
            leaders.setdefault(m["epoch"], set()).add(m["leader"])
        assert all(len(v) == 1 for v in leaders.values()), leaders
        # Each election advanced the fencing epoch, across the failover too.
        epochs = [ep for _, _, ep in acquisitions(promoted)]
        assert epochs == sorted(set(epochs)) and epochs[-1] > before[-1][2]
        wait_until(lambda: len(leaders_by_metrics(instances)) == 1, 10, "exactly one leader")


def test_service_leaves_a_live_old_master_after_a_manual_failover(sentinels, sim) -> None:
    # The old master stays up, and writable, for 8 s or more after the
    # sentinels switch: every connection of every worker must move anyway.
    # Two instances: the deputy is on the other one than the leader.
    with ExitStack() as stack:
        inst = Instance("m1", workers=2, redis_url=sentinels.url(), sim_url=sim.url)
        stack.callback(inst.stop)
        second = Instance("m2", workers=1, redis_url=sentinels.url(), sim_url=sim.url)
        stack.callback(second.stop)
        inst.wait_ready(60)
        second.wait_ready(60)
        client = RecordingClient(inst.ws_url, name="m1-c").start()
        stack.callback(client.close)
        client.wait_snapshots(2, timeout=15)
        old_port = sentinels.master_port()
        old = sentinels.client_for(old_port)
        assert len(service_connections(old)) >= 3
        leader = old.get("websocket:leader")
        sentinels.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", "mymaster")
        new = sentinels.client_for(sentinels.wait_master_change(old_port))
        wait_until(lambda: service_connections(old) == [], 5, "every connection off the old master")
        assert old.execute_command("ROLE")[0] == b"master"  # still a writable master
        wait_until(lambda: new.pubsub_numsub("websocket:updates")[0][1] == inst.workers + 1, 5,
                   "every worker subscribed on the new master")
        n = len(client.keys())
        client.wait_snapshots(n + 3, timeout=10)
        keys = client.keys()
        assert keys == sorted(set(keys))
        assert service_connections(old) == []
        # Every connection moved, on each process's own schedule: no leader
        # was taken for dead meanwhile (the deputy let them settle).
        reasons = [f.get(b"reason") for _, f in new.xrange("websocket:events")]
        assert b"presence_lost" not in reasons, reasons
        assert new.get("websocket:leader") == leader
