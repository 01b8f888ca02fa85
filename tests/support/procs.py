"""Child processes that log JSON lines, and a way to wait on what they log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """This interpreter's environment minus our settings, plus ``extra``."""
    from feed.config import _ENV

    ours = {spec.var for spec in _ENV.values()}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


class LoggedProcess:
    """A subprocess whose stderr JSON lines are collected as dicts."""

    def __init__(self, args: list[str], env: dict[str, str], name: str = "proc",
                 cwd: str | None = None) -> None:
        self.name = name
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd or str(ROOT), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            text = line.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.raw.append(text)
                if text.startswith("{"):
                    try:
                        self.lines.append(json.loads(text))
                    except ValueError:
                        pass
                self._cond.notify_all()

    def events(self, name: str | None = None, **match: object) -> list[dict]:
        with self._cond:
            return [e for e in self.lines
                    if (name is None or e.get("event") == name)
                    and all(e.get(k) == v for k, v in match.items())]

    def wait_for(self, name: str, timeout: float = 10.0,
                 where: Callable[[dict], bool] | None = None, after: int = 0) -> dict:
        """The first line (from index ``after``) with event ``name`` matching ``where``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.lines[after:]:
                    if e.get("event") == name and (where is None or where(e)):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.raw[-30:])
                    raise AssertionError(f"{self.name}: no {name!r} within {timeout}s; last output:\n{tail}")
                self._cond.wait(min(left, 0.2))

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(2)
        return self.proc.returncode


def start_node(redis_url: str, name: str, *, fetch_delay: float = 0.0, **settings: object) -> LoggedProcess:
    """A headless node (``python -m feed node --fake``) with the given settings."""
    env = child_env(REDIS_URL=redis_url, **{k: str(v) for k, v in settings.items()})
    args = [sys.executable, "-m", "feed", "node", "--fake", "--fetch-delay", str(fetch_delay)]
    return LoggedProcess(args, env, name=name)
