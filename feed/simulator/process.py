"""The simulated exchange in a child process, as an unconfigured Gunicorn master runs it.

``SimProcess().start()`` runs ``python -m feed sim --port 0`` and reads the
one JSON line it prints to learn its URL. The child is tied to this process
(:func:`feed.child_process.spawn`): it ends when its parent dies, however
the parent dies. Standard library only: the master uses it before it forks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from feed.child_process import spawn

__all__ = ["SimProcess"]


class SimProcess:
    """The simulated exchange in a child process; ``url`` once it listens."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", extra_args: list[str] | None = None) -> None:
        self.args = [sys.executable, "-m", "feed", "sim", "--host", host, "--port", str(port),
                     *(extra_args or [])]
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    def start(self, timeout: float = 15.0) -> SimProcess:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        # Tied to this process: it ends when the master dies, however it dies.
        self.proc = spawn(self.args, stdout=subprocess.PIPE, env=env)
        found: dict[str, str] = {}

        def read_first_line() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for raw in self.proc.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("url"):
                    found["url"] = msg["url"]
                    break

        reader = threading.Thread(target=read_first_line, daemon=True)
        reader.start()
        reader.join(timeout)
        if "url" not in found:
            self.stop()
            raise RuntimeError(f"the simulated exchange did not start within {timeout}s")
        self.url = found["url"]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
