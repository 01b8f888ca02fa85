"""What the service shows to whom: secrets in logs, operator endpoints, Redis misconfiguration.

Real Gunicorn instances, real Redis servers (one with a password, one with a
restricted ACL user), real WebSocket clients; the logs searched are the
instances' own output.
"""

from __future__ import annotations

import json
import re
import signal
import time
from contextlib import ExitStack

import pytest
import redis
import websocket as wsc

from feed.redisconn.embedded import RedisProcess
from lab.clients import RecordingClient
from tests.support.service import Instance

WS_TOKEN = "ws-Tok3n-d41f9e"
OPERATOR_TOKEN = "op-Tok3n-77c2ab"
BEARER = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def start(stack: ExitStack, name: str, redis_url: str, sim_url: str, **env: str) -> Instance:
    inst = Instance(name, workers=1, redis_url=redis_url, sim_url=sim_url, env=env)
    stack.callback(inst.stop)
    return inst.wait_ready()


def refused_status(url: str, **kw) -> int:
    with pytest.raises(wsc.WebSocketBadStatusException) as info:
        wsc.create_connection(url, timeout=5, **kw)
    return info.value.status_code


def events(inst: Instance, name: str) -> list[dict]:
    return inst.proc.events(name)


def test_no_token_reaches_a_log_line(stack, redis_proc, sim) -> None:
    inst = start(stack, "tok", redis_proc.url, sim.url, WS_TOKEN=WS_TOKEN, OPERATOR_TOKEN=OPERATOR_TOKEN,
                 ALLOWED_ORIGINS="https://dash.example.com", WS_MAX_CLIENTS="1")
    # The dashboard's own page load, with the token in its address, and its assets.
    page = inst.get(f"/?token={WS_TOKEN}")
    assert page.status_code == 200
    inst.get("/dashboard/app.js", headers={"Referer": f"{inst.url}/?token={WS_TOKEN}#operator_token=x"})
    # A successful upgrade (it takes the worker's one slot), then refusals:
    # 401 (wrong token), 403 (origin), 503 full.
    ok = RecordingClient(f"{inst.ws_url}?token={WS_TOKEN}", name="ok").start()
    stack.callback(ok.close)
    ok.wait_snapshots(1)
    assert refused_status(f"{inst.ws_url}?token=wrong-{WS_TOKEN}") == 401
    assert refused_status(f"{inst.ws_url}?token={WS_TOKEN}", origin="https://evil.example.net") == 403
    assert refused_status(f"{inst.ws_url}?token={WS_TOKEN}", suppress_origin=True) == 503
    assert refused_status(inst.ws_url, header=[f"Authorization: Bearer {WS_TOKEN}"],
                          suppress_origin=True) == 503
    # Operator endpoints, with and without their token.
    for path in ("/status", "/metrics", "/health"):
        assert inst.get(path, headers=BEARER).status_code == 200
        inst.get(path + f"?token={OPERATOR_TOKEN}")
    # A stopping worker refuses upgrades (503 stopping) while it closes its clients.
    inst.proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while inst.proc.alive() and time.monotonic() < deadline:
        try:
            wsc.create_connection(f"{inst.ws_url}?token={WS_TOKEN}", timeout=1).close()
        except (OSError, wsc.WebSocketException):
            pass
        time.sleep(0.02)
    inst.stop()
    output = "\n".join(inst.proc.raw)
    assert WS_TOKEN not in output and OPERATOR_TOKEN not in output
    # Every one of those requests was logged, masked, as one structured event.
    logged = [e for e in inst.proc.lines if e.get("event") == "http_request"]
    statuses = {e["status"] for e in logged}
    assert {200, 401, 403, 503} <= statuses, statuses
    assert any(e["path"] == "/ws" and e["query"] == "token=***" and e["status"] == 401 for e in logged)
    assert any(e["path"] == "/" and e["query"] == "token=***" for e in logged)
    assert any(e["path"] == "/dashboard/app.js" and e["referer"] == f"{inst.url}/" for e in logged)


def test_operator_endpoints_and_public_frames(stack, redis_proc, sim) -> None:
    inst = start(stack, "ops", redis_proc.url, sim.url, OPERATOR_TOKEN=OPERATOR_TOKEN)
    for path in ("/status", "/metrics"):
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": OPERATOR_TOKEN}):
            r = inst.get(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert r.json()["error"] == "unauthorized"
        assert inst.get(path, headers=BEARER).status_code == 200
    assert "marketfeed_leader" in inst.get("/metrics", headers=BEARER).text
    assert inst.get("/status", headers=BEARER).json()["cluster"]["leader"]
    # /health: what a load balancer needs without the token, the details with it.
    public = inst.get("/health")
    assert public.status_code == 200 and public.json() == {"status": "ok"}
    full = inst.get("/health", headers=BEARER).json()
    assert full["status"] == "ok" and full["node"] in inst.nodes and full["redis"]["url"]

    # Frames name no host and no pid: opaque, stable labels instead.
    c = RecordingClient(inst.ws_url, name="public").start()
    stack.callback(c.close)
    c.wait_snapshots(2)
    node = next(iter(inst.nodes))
    pid = str(inst.nodes[node])
    c.send(json.dumps({"op": "status", "id": 1}))
    c.send(json.dumps({"op": "ping", "id": 2}))
    c.wait(lambda c: {m.msg.get("type") for m in c.messages} >= {"status", "pong"}, 5, "replies")
    text = json.dumps([m.msg for m in c.messages])
    assert node not in text and f"-{pid}-" not in text
    snaps = c.snapshots()
    assert all(re.fullmatch(r"n-[0-9a-f]{12}", s["served_by"]) for s in snaps)
    assert all(re.fullmatch(r"n-[0-9a-f]{12}", s["leader"]) for s in snaps)
    assert len({s["leader"] for s in snaps}) == 1  # the same node, the same label
    status = next(m.msg for m in c.messages if m.msg.get("type") == "status")
    assert "redis" not in status and status["role"] in ("leader", "follower")


def test_a_wrong_redis_password_fails_the_start_and_says_so(stack, tmp_path, sim) -> None:
    secret = "pw-Zq81xK-right"
    server = RedisProcess(workdir=str(tmp_path / "r"), extra_args=["--requirepass", secret]).start()
    stack.callback(server.close)
    wrong = "pw-Wr0ng-guess"
    inst = Instance("wrongpw", workers=1, redis_url=f"redis://:{wrong}@127.0.0.1:{server.port}/0",
                    sim_url=sim.url)
    stack.callback(inst.stop)
    code = inst.proc.proc.wait(30)
    output = "\n".join(inst.proc.raw)
    assert code != 0, output
    assert "REDIS_URL" in output and "refused the credentials" in output, output
    assert wrong not in output and secret not in output
    assert not inst.proc.events("worker_ready")


def test_a_redis_user_without_evalsha_fails_the_start(stack, tmp_path, sim) -> None:
    server = RedisProcess(workdir=str(tmp_path / "r")).start()
    stack.callback(server.close)
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "feed", "on", ">feed-pass-1", "~*", "&*", "+@all", "-evalsha")
    inst = Instance("noperm", workers=1, redis_url=f"redis://feed:feed-pass-1@127.0.0.1:{server.port}/0",
                    sim_url=sim.url)
    stack.callback(inst.stop)
    code = inst.proc.proc.wait(30)
    output = "\n".join(inst.proc.raw)
    assert code != 0
    assert "REDIS_URL" in output and "may not run a command" in output and "evalsha" in output, output
    assert "feed-pass-1" not in output


def test_permissions_lost_at_run_time_show_as_degraded(stack, tmp_path, sim) -> None:
    server = RedisProcess(workdir=str(tmp_path / "r")).start()
    stack.callback(server.close)
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "feed", "on", ">feed-pass-2", "~*", "&*", "+@all")
    inst = start(stack, "lost", f"redis://feed:feed-pass-2@127.0.0.1:{server.port}/0", sim.url)
    c = RecordingClient(inst.ws_url, name="viewer").start()
    stack.callback(c.close)
    c.wait_snapshots(2)
    assert inst.get("/health").json()["status"] == "ok"
    admin.execute_command("ACL", "SETUSER", "feed", "-evalsha", "-eval")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        health = inst.get("/health").json()
        if health["status"] == "degraded":
            break
        time.sleep(0.2)
    assert health["status"] == "degraded", health
    assert health["reason"].startswith("redis_permission") and "evalsha" in health["reason"].lower()
    logged = inst.proc.wait_for("redis_misconfigured", 5)
    assert logged["problem"] == "permission" and logged["level"] == "error"
    assert c.close_code is None  # clients stay connected with the last snapshot
    admin.execute_command("ACL", "SETUSER", "feed", "+@all")
    deadline = time.monotonic() + 10
    while inst.get("/health").json()["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert inst.get("/health").json()["status"] == "ok"
    n = len(c.snapshots())
    c.wait_snapshots(n + 2)
    assert "feed-pass-2" not in "\n".join(inst.proc.raw)


def test_a_misconfiguration_is_logged_again_every_minute(caplog) -> None:
    import logging

    from feed.redisconn.health import RedisHealth

    now = [0.0]
    health = RedisHealth("ws-x-1-ab", "election", clock=lambda: now[0])
    refused = redis.exceptions.NoPermissionError("User feed has no permissions to run the 'evalsha' command")
    with caplog.at_level(logging.INFO, logger="feed.redisconn.health"):
        for _ in range(30):  # a retry every 2 s for a minute
            health.failed(refused, "follower")
            now[0] += 2.0
        health.failed(refused, "follower")
    lines = [r for r in caplog.records if r.fields["event"] == "redis_misconfigured"]
    assert len(lines) == 2 and health.problem == "permission"
    health.succeeded("follower")
    assert health.problem is None and health.ok is True


def test_the_documented_redis_permissions_are_enough(stack, tmp_path, sim) -> None:
    """docs/CONFIGURATION.md's ACL line, verbatim: the service starts, leads and serves."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "CONFIGURATION.md").read_text()
    block = doc.split("    ACL SETUSER feed ", 1)[1].split("\n\n", 1)[0]
    rules = [r.replace(">password", ">feed-pass-3") for r in block.split()]
    server = RedisProcess(workdir=str(tmp_path / "r")).start()
    stack.callback(server.close)
    redis.Redis(port=server.port).execute_command("ACL", "SETUSER", "feed", *rules)
    url = f"redis://feed:feed-pass-3@127.0.0.1:{server.port}/0"
    inst = start(stack, "acl", url, sim.url)
    c = RecordingClient(inst.ws_url, name="viewer").start()
    stack.callback(c.close)
    c.wait_snapshots(3)
    assert inst.get("/health").json()["status"] == "ok"
    cluster = inst.get("/status").json()["cluster"]
    assert cluster["leader"] in inst.nodes
    assert not inst.proc.events("redis_misconfigured")
    # Presence too: nothing refused, the node listed from it.
    assert not inst.proc.events("presence_unavailable")
    assert [n["node"] for n in cluster["nodes"]] == [cluster["leader"]]
    assert inst.get("/health").json()["presence"]["in_use"] is True


def test_without_the_presence_permissions_the_service_runs_on_the_ttl(stack, tmp_path, sim) -> None:
    """The documented ACL minus its last line: a warning at start, one line per node, no failure."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "CONFIGURATION.md").read_text()
    block = doc.split("    ACL SETUSER feed ", 1)[1].split("\n\n", 1)[0]
    lines = block.splitlines()
    assert "+pubsub|numsub" in lines[-1]
    rules = [r.replace(">password", ">feed-pass-4") for r in "\n".join(lines[:-1]).split()]
    server = RedisProcess(workdir=str(tmp_path / "r")).start()
    stack.callback(server.close)
    redis.Redis(port=server.port).execute_command("ACL", "SETUSER", "feed", *rules)
    url = f"redis://feed:feed-pass-4@127.0.0.1:{server.port}/0"
    inst = Instance("nopresence", workers=2, redis_url=url, sim_url=sim.url)
    stack.callback(inst.stop)
    inst.wait_ready()
    c = RecordingClient(inst.ws_url, name="viewer").start()
    stack.callback(c.close)
    c.wait_snapshots(3)
    time.sleep(1.0)  # both workers have stepped a few times
    output = "\n".join(inst.proc.raw)
    assert "presence is off" in output and "LOCK_TTL_SECONDS" in output  # the start's warning
    unavailable = [e for e in inst.proc.events("presence_unavailable") if "node" in e]
    assert sorted(e["node"] for e in unavailable) == sorted(inst.nodes)  # once per node
    health = inst.get("/health").json()
    assert health["status"] == "ok" and health["presence"]["in_use"] is False
    cluster = inst.get("/status").json()["cluster"]
    assert cluster["leader"] in inst.nodes and cluster["nodes"] is None and "nodes_error" in cluster
    assert "feed-pass-4" not in output
