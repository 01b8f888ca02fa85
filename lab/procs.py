"""Child processes of the lab that cannot outlive it.

Everything the lab starts goes through :func:`feed.child_process.spawn`
(a new session; SIGTERM from the kernel when the lab process dies, so a
kernel killed with SIGKILL leaves nothing behind) and is registered here: an
``atexit`` hook stops whatever is still registered when the interpreter
exits normally (a notebook kernel shut down with a cluster still running).

The kernel ties that signal to the *thread* that forked: start clusters from
a thread that lives as long as they do (the main thread, in a notebook).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from feed.child_process import spawn
from feed.redisconn.embedded import RedisProcess

__all__ = ["ROOT", "LabRedis", "LoggedProcess", "child_env", "spawn", "stop_all"]

ROOT = Path(__file__).resolve().parent.parent


class _Stoppable(Protocol):
    def stop(self) -> Any: ...


_registry: dict[int, _Stoppable] = {}
_registry_lock = threading.Lock()


def register(thing: _Stoppable) -> None:
    with _registry_lock:
        _registry[id(thing)] = thing


def unregister(thing: _Stoppable) -> None:
    with _registry_lock:
        _registry.pop(id(thing), None)


def stop_all() -> None:
    """Stop everything still registered, newest first (clients before servers)."""
    with _registry_lock:
        things = list(_registry.values())[::-1]
        _registry.clear()
    for thing in things:
        try:
            # close() where there is one: it also removes working files.
            getattr(thing, "close", thing.stop)()
        except Exception:  # noqa: BLE001 - at exit, stop the rest regardless
            pass


atexit.register(stop_all)


def child_env(**extra: object) -> dict[str, str]:
    """This interpreter's environment without any marketfeed setting, plus ``extra``.

    A notebook started with ``REDIS_URL`` set must not point the lab's
    instances at that Redis; each instance also gets its own metrics dir.
    """
    from feed.config.settings import Settings

    ours = Settings.env_names()
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


class LoggedProcess:
    """A child whose output lines are kept; JSON lines also as dicts in ``lines``."""

    def __init__(self, args: list[str], env: dict[str, str], name: str = "proc",
                 cwd: str | None = None) -> None:
        self.name = name
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self.proc = spawn(args, env=env, cwd=cwd or str(ROOT), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
        register(self)
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
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
        """Logged events named ``name`` (any if None) whose fields equal ``match``."""
        with self._cond:
            return [e for e in self.lines
                    if (name is None or e.get("event") == name)
                    and all(e.get(k) == v for k, v in match.items())]

    def wait_for(self, name: str, timeout: float = 10.0,
                 where: Callable[[dict], bool] | None = None, after: int = 0) -> dict:
        """The first event ``name`` (from line index ``after``) matching ``where``."""
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
        """SIGTERM and wait; then SIGKILL the whole process group."""
        unregister(self)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # A stopped child (or a stopped worker in its group) would
                # sit on SIGTERM until continued.
                os.killpg(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in its group (workers of a killed master) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        self._reader.join(2)
        return self.proc.returncode


class LabRedis(RedisProcess):
    """:class:`RedisProcess` started through :func:`spawn` and registered."""

    def _popen(self, args: list[str]) -> subprocess.Popen[bytes]:
        proc = super()._popen(args)
        register(self)
        return proc

    def close(self) -> None:
        unregister(self)
        super().close()

    def stop(self) -> None:
        unregister(self)
        super().stop()
