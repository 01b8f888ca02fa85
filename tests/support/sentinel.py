"""A real Redis Sentinel deployment on loopback: master, replica, sentinels.

Every process listens on a free 127.0.0.1 port and works in one temporary
directory, removed by :meth:`SentinelCluster.close` (which also kills
everything); the machine's own Redis is never involved. Timings are scaled
down (``down_after_ms``, ``failover_timeout_ms``) so that a failover after a
SIGKILL of the master takes a few seconds instead of half a minute.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from feed.redisconn.embedded import RedisProcess, find_redis_server, free_port

__all__ = ["SentinelCluster", "SentinelProcess"]

MASTER_NAME = "mymaster"


class SentinelProcess:
    """One ``redis-server <conf> --sentinel``; it rewrites its own conf file."""

    def __init__(self, workdir: Path, master_port: int, *, master_name: str, quorum: int,
                 down_after_ms: int, failover_timeout_ms: int, binary: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.binary = binary
        self.conf = workdir / "sentinel.conf"
        # announce-ip keeps every address the sentinels hand out on 127.0.0.1.
        self.conf.write_text("\n".join([
            f"port {self.port}",
            "bind 127.0.0.1",
            "daemonize no",
            f"dir {workdir}",
            f"logfile {workdir / 'sentinel.log'}",
            "sentinel announce-ip 127.0.0.1",
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master_name} 1",
            "",
        ]))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.proc = subprocess.Popen([self.binary, str(self.conf), "--sentinel"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis("127.0.0.1", self.port, socket_timeout=1, socket_connect_timeout=1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.workdir / "sentinel.log"
        return path.read_text()[-chars:] if path.exists() else ""


class SentinelCluster:
    """One master, ``replicas`` replicas and ``sentinels`` sentinels, all started.

    ``url`` is the ``redis+sentinel://`` URL the service is given. After a
    failover, :attr:`master` and :attr:`replicas` still name the processes as
    they were started; :meth:`master_port` asks the sentinels who leads now.
    """

    def __init__(self, *, replicas: int = 1, sentinels: int = 3, quorum: int = 2,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 master_name: str = MASTER_NAME) -> None:
        self.master_name = master_name
        self.workdir = Path(tempfile.mkdtemp(prefix="marketfeed-sentinel-"))
        self.binary = find_redis_server()
        self._replica_count = replicas
        self._sentinel_count = sentinels
        self._quorum = quorum
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        self.master: RedisProcess | None = None
        self.replicas: list[RedisProcess] = []
        self.sentinels: list[SentinelProcess] = []

    # --- lifecycle ------------------------------------------------------
    def start(self, timeout: float = 30.0) -> SentinelCluster:
        try:
            self._start(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, timeout: float) -> None:
        # Any node may become master: all get the same settings. Redis 7
        # delays a first (diskless) full sync by 5 s by default; not here.
        common = ["--replica-announce-ip", "127.0.0.1", "--repl-diskless-sync-delay", "0"]
        self.master = RedisProcess(workdir=str(self.workdir / "master"), extra_args=common,
                                   binary=self.binary).start()
        for i in range(self._replica_count):
            replica = RedisProcess(
                workdir=str(self.workdir / f"replica{i}"), binary=self.binary,
                extra_args=[*common, "--replicaof", "127.0.0.1", str(self.master.port)])
            self.replicas.append(replica.start())
        # Sentinels learn replicas from the master's first INFO: wait for the
        # links before starting them, so they can fail over from the start.
        self._wait(lambda: all(self.client_for(r.port).info("replication")["master_link_status"]
                               == "up" for r in self.replicas), timeout, "replicas in sync")
        for i in range(self._sentinel_count):
            s = SentinelProcess(self.workdir / f"sentinel{i}", self.master.port,
                                master_name=self.master_name, quorum=self._quorum,
                                down_after_ms=self._down_after_ms,
                                failover_timeout_ms=self._failover_timeout_ms, binary=self.binary)
            self.sentinels.append(s.start())
        self._wait(self._sentinels_agree, timeout, "sentinels know each other and the replicas")

    def close(self) -> None:
        """Kill every process and remove the temporary directory."""
        for s in self.sentinels:
            s.kill()
        for p in [self.master, *self.replicas]:
            if p is not None:
                p.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- addresses ------------------------------------------------------
    @property
    def sentinel_ports(self) -> list[int]:
        return [s.port for s in self.sentinels]

    def url(self, scheme: str = "redis+sentinel", db: int | None = None) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        path = f"/{self.master_name}" + (f"/{db}" if db is not None else "")
        return f"{scheme}://{hosts}{path}"

    def master_port(self) -> int | None:
        """The master's port as the first answering sentinel reports it."""
        for s in self.sentinels:
            try:
                addr = s.client().sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                continue
            if addr:
                return int(addr[1])
        return None

    def process_on(self, port: int) -> RedisProcess:
        for p in [self.master, *self.replicas]:
            if p is not None and p.port == port:
                return p
        raise KeyError(port)

    def client_for(self, port: int, name: str = "probe") -> redis.Redis:
        """A plain client to one data node (not through Sentinel), named ``name``."""
        return redis.Redis("127.0.0.1", port, socket_timeout=1, socket_connect_timeout=1,
                           client_name=name)

    # --- waiting --------------------------------------------------------
    def wait_master_change(self, old_port: int, timeout: float = 30.0) -> int:
        """Block until every sentinel names a master other than ``old_port``."""
        found: dict[str, int] = {}

        def switched() -> bool:
            ports = set()
            for s in self.sentinels:
                if s.proc is None or s.proc.poll() is not None:
                    continue
                addr = s.client().sentinel_get_master_addr_by_name(self.master_name)
                ports.add(int(addr[1]))
            if len(ports) == 1 and old_port not in ports:
                found["port"] = ports.pop()
                return True
            return False

        self._wait(switched, timeout, f"failover away from port {old_port}")
        return found["port"]

    def wait_role(self, port: int, role: str, timeout: float = 30.0) -> None:
        """Block until the data node on ``port`` reports ``role`` (master/slave)."""
        self._wait(lambda: self.client_for(port).execute_command("ROLE")[0].decode() == role,
                   timeout, f"port {port} to become {role}")

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            state = s.client().sentinel_master(self.master_name)
            if (int(state["num-other-sentinels"]) < self._sentinel_count - 1
                    or int(state["num-slaves"]) < self._replica_count):
                return False
        return True

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (redis.RedisError, OSError, KeyError) as exc:
                last = exc
            time.sleep(0.05)
        tails = "\n".join(f"--- sentinel{i}\n{s.log_tail()}" for i, s in enumerate(self.sentinels))
        raise AssertionError(f"no {what} within {timeout}s (last error: {last})\n{tails}")
