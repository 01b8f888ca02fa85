"""The simulated exchange in a child process, as an unconfigured Gunicorn master runs it.

``SimProcess().start()`` runs ``python -m feed sim --port 0`` and reads the
one JSON line it prints to learn its URL. The child is tied to this process
(:func:`feed.child_process.spawn`): it ends when its parent dies, however
the parent dies. Standard library only: the master uses it before it forks.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping

from feed.child_process import spawn

__all__ = ["SERVICE_KEY_PLAN", "SERVICE_KEY_SHA256", "SimProcess", "simulator_env"]


#: How the service's CoinGecko key reaches the simulator: its SHA-256, and its plan.
SERVICE_KEY_SHA256 = "SIM_SERVICE_KEY_SHA256"
SERVICE_KEY_PLAN = "SIM_SERVICE_KEY_PLAN"
# Variables a simulator never inherits: anything named like a secret, and Redis's URL (a password).
_SECRET_SUFFIXES = ("_KEY", "_SECRET", "_TOKEN", "_PASSWORD")


def simulator_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The simulator's environment: ``environ`` without secrets, the CoinGecko key as its digest.

    The exchange the master starts accepts the service's own key (so a keyed
    configuration runs against it), yet must never hold it: it would be one
    more process, and one more page (``/_sim/keys``), a key could leak from.
    """
    env = {k: v for k, v in environ.items() if not k.endswith(_SECRET_SUFFIXES) and k != "REDIS_URL"}
    key = environ.get("COINGECKO_API_KEY")
    if key:
        env[SERVICE_KEY_SHA256] = hashlib.sha256(key.encode()).hexdigest()
        env[SERVICE_KEY_PLAN] = (environ.get("COINGECKO_API_PLAN") or "demo").lower()
    return env


class SimProcess:
    """The simulated exchange in a child process; ``url`` once it listens."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", extra_args: list[str] | None = None) -> None:
        self.args = [sys.executable, "-m", "feed", "sim", "--host", host, "--port", str(port),
                     *(extra_args or [])]
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    def start(self, timeout: float = 15.0) -> SimProcess:
        env = simulator_env(os.environ)
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
