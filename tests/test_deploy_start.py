"""A deploy as the README says (railway.toml's start, ``REDIS_URL`` set, nothing else) fetches real data.

The instance runs in a network namespace of its own (``unshare -n``) with
Redis on a unix socket, so it can name the real hosts in its configuration
and its log without a packet leaving this machine; its calls simply fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from feed.redisconn.embedded import RedisProcess, free_port
from tests.support.procs import ROOT, LoggedProcess, child_env

LIVE_HOSTS = {"coingecko": "api.coingecko.com", "binance": "data-api.binance.vision",
              "feargreed": "api.alternative.me"}


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare -n (a network namespace) to keep it offline")
def test_deploy_with_redis_url_targets_the_real_apis(tmp_path) -> None:
    start = tomllib.loads((ROOT / "railway.toml").read_text())["deploy"]["startCommand"]
    redis = RedisProcess(unix=True, workdir=str(tmp_path / "redis")).start()
    env = child_env(REDIS_URL=redis.url, PORT=str(free_port()), WEB_CONCURRENCY="1")
    # As on Railway, gunicorn is on the PATH (this virtualenv's).
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    proc = LoggedProcess(["unshare", "-n", "sh", "-c", start], env, name="deploy", cwd=str(ROOT))
    try:
        selected = proc.wait_for("upstream_selected", 60)
        ready = proc.wait_for("fetcher_ready", 60)
    finally:
        proc.stop()
        redis.close()
    assert selected["upstream"] == "live" and "REDIS_URL" in selected["why"]
    assert ready["upstream"] == "live"
    assert {p: urlsplit(u).hostname for p, u in ready["urls"].items()} == LIVE_HOSTS
    # Nothing simulated was started, and the log says so nowhere.
    assert not [e for e in proc.events("default_in_use") if e.get("what") == "simulated_exchange"]
