"""The README's run command, on a fresh copy with nothing configured, serves snapshots.

This sets up a new virtualenv from requirements.txt (as a new user would), so
it takes a minute; it is part of the default run because it is the first
thing anyone does with the project.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import websocket

from feed.redisconn.embedded import free_port
from tests.support.procs import ROOT, LoggedProcess, child_env

IMPORT_ALL = """
import importlib, pathlib
names = []
for p in sorted(pathlib.Path("feed").rglob("*.py")):
    parts = p.with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    if not name.endswith("__main__"):
        importlib.import_module(name)
        names.append(name)
print("imported", len(names))
"""


def readme_commands() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    assert len(lines) == 2, "the README must open with exactly two commands"
    return lines[0], lines[1]


def project_copy(dest: Path) -> Path:
    """The files a fresh clone would have (tracked and new, never .venv)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_readme_opens_with_run_and_test_commands() -> None:
    run, test = readme_commands()
    assert "requirements.txt" in run and "gunicorn -c gunicorn.conf.py" in run
    assert "requirements-dev.txt" in test and "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci, ".ci/run must call the README's test command verbatim"


def test_readme_run_command_serves_snapshots_with_nothing_configured(tmp_path: Path) -> None:
    run, _ = readme_commands()
    work = project_copy(tmp_path / "marketfeed")
    port = free_port()
    env = child_env(PORT=str(port), WEB_CONCURRENCY="2")
    env.pop("PYTHONPATH", None)  # the fresh copy must stand on its own
    proc = LoggedProcess(["sh", "-c", run], env, name="readme-run", cwd=str(work))
    try:
        deadline = time.monotonic() + 420
        while len(proc.events("worker_ready")) < 2:
            assert proc.alive(), "\n".join(proc.raw[-40:])
            assert time.monotonic() < deadline, "not serving after 7 minutes:\n" + "\n".join(proc.raw[-40:])
            time.sleep(0.5)
        defaults = {e.get("what") for e in proc.events("default_in_use")}
        assert defaults == {"embedded_redis", "simulated_exchange"}
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=20)
        try:
            first = json.loads(ws.recv())
            second = json.loads(ws.recv())
        finally:
            ws.close()
        assert first["type"] == "snapshot" and first["data"]["prices"]["BTC"]["usd"] > 0
        # Nothing configured: the embedded demo, and every snapshot says it is simulated.
        assert [e["upstream"] for e in proc.events("upstream_selected")] == ["sim"]
        assert first["data"]["simulated"] is True
        assert first["data"]["prices"]["BTC"]["source"] == "simulated:binance"
        assert (second["epoch"], second["seq"]) > (first["epoch"], first["seq"])
        assert not proc.events("presence_unavailable")  # the embedded Redis runs presence's scripts
        # Every module of the runtime package imports in this virtualenv, made
        # from requirements.txt alone (no development dependency in it).
        check = subprocess.run(
            [str(work / ".venv" / "bin" / "python"), "-c", IMPORT_ALL], cwd=str(work), env=env,
            capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stderr[-3000:]
        assert int(check.stdout.split()[-1]) > 40, check.stdout
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    # Gunicorn exits within its graceful timeout, and the master stops the
    # Redis and the simulator it started.
    deadline = time.monotonic() + 30
    while True:
        leftovers = subprocess.run(["pgrep", "-f", str(work)], capture_output=True,
                                   text=True).stdout.split()
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not leftovers, f"left running: {leftovers}"
