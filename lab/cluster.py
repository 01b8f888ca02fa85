"""The lab: a real marketfeed cluster on this machine, for experiments and tests.

``Cluster`` starts a private Redis, the simulated exchange (in this process)
and N Gunicorn instances of the service with W workers each, exactly as
``gunicorn -c gunicorn.conf.py`` runs in production; only the timing may be
scaled down. It can find the leader worker and kill (SIGKILL), stop
(SIGTERM) or pause (SIGSTOP, then SIGCONT) it, or kill its whole instance
(and start it again); read the leadership log
(the ``websocket:events`` stream) and the exchange's call counts, and attach
WebSocket clients that record every message with its receive time::

    with Cluster(instances=3, workers=2, timing=Timing.fast()) as lab:
        client = lab.connect(lab.instances[1])
        fault = lab.kill_leader()
        acquired = lab.wait_acquired(after=fault)

Everything it starts it stops: on leaving the ``with`` block (also on an
exception or a notebook interrupt), at interpreter exit, and, through
``PR_SET_PDEATHSIG``, when the process running the lab dies (see
:mod:`lab.procs`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil
import redis
import requests

from feed.config.settings import Settings
from feed.keys import Keys
from feed.logs import log_event
from feed.redisconn.embedded import free_port
from feed.server.cluster import read_leadership_log
from feed.simulator.server import SimulatedExchange
from feed.times import parse_iso
from lab.clients import RecordingClient
from lab.procs import LabRedis, LoggedProcess, child_env, register, unregister
from lab.redis_clock import redis_now

__all__ = ["Cluster", "Fault", "ServiceInstance", "Timing", "WorkerRef"]

log = logging.getLogger(__name__)

# What each fault sends to the leader worker; an instance crash sends SIGKILL
# to the worker's whole instance (master and workers: a host or container
# crash, where no master is left to clean up after the worker).
KINDS = {"crash": signal.SIGKILL, "graceful": signal.SIGTERM, "pause": signal.SIGSTOP,
         "instance_crash": signal.SIGKILL}


@dataclass(frozen=True)
class Timing:
    """The service's timing settings; the defaults are the service's defaults."""

    fetch_interval: float = 5.0  # FETCH_INTERVAL_SECONDS
    lock_ttl: float = 10.0  # LOCK_TTL_SECONDS
    renew_interval: float = 3.0  # RENEW_INTERVAL_SECONDS
    lease_margin: float = 2.0  # LEASE_MARGIN_SECONDS

    def __post_init__(self) -> None:
        # The service's own rules, so a bad combination fails here, not in
        # five Gunicorn logs.
        Settings(fetch_interval=self.fetch_interval, lock_ttl=self.lock_ttl,
                 renew_interval=self.renew_interval, lease_margin=self.lease_margin).validate()

    @classmethod
    def fast(cls) -> Timing:
        """The tests' scale: fetch every 0.5 s, TTL 2 s; same rules, 10-20x faster."""
        return cls(fetch_interval=0.5, lock_ttl=2.0, renew_interval=0.5, lease_margin=0.3)

    def env(self) -> dict[str, str]:
        return {
            "FETCH_INTERVAL_SECONDS": f"{self.fetch_interval:g}",
            "LOCK_TTL_SECONDS": f"{self.lock_ttl:g}",
            "RENEW_INTERVAL_SECONDS": f"{self.renew_interval:g}",
            "LEASE_MARGIN_SECONDS": f"{self.lease_margin:g}",
        }


@dataclass(frozen=True)
class WorkerRef:
    """One Gunicorn worker: its node id, its pid and the instance it belongs to."""

    node: str
    pid: int
    instance: ServiceInstance


@dataclass
class Fault:
    """A signal sent to a worker; ``t`` is Redis TIME read just before sending it."""

    kind: str  # crash | graceful | pause | instance_crash
    node: str
    pid: int
    instance: str
    t: float
    resumed_at: float | None = None


class ServiceInstance:
    """One ``gunicorn -c gunicorn.conf.py`` process tree on its own port.

    ``env`` is passed on top of the lab's (``PORT``, ``WEB_CONCURRENCY``,
    ``RAILWAY_REPLICA_ID``, ``REDIS_URL``, ``SIM_URL``).
    """

    def __init__(self, name: str, *, workers: int = 1, redis_url: str | None = None,
                 sim_url: str | None = None, env: Mapping[str, str] | None = None,
                 port: int | None = None) -> None:
        self.name = name
        self.workers = workers
        self.port = port or free_port()
        extra: dict[str, str] = {"PORT": str(self.port), "WEB_CONCURRENCY": str(workers),
                                 "RAILWAY_REPLICA_ID": name}
        if redis_url:
            extra["REDIS_URL"] = redis_url
        if sim_url:
            extra["SIM_URL"] = sim_url
        extra.update(env or {})
        self._env = child_env(**extra)
        self._retired: list[LoggedProcess] = []
        self.proc = self._launch()

    def _launch(self) -> LoggedProcess:
        args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
        return LoggedProcess(args, self._env, name=self.name)

    def respawn(self, timeout: float = 30.0) -> ServiceInstance:
        """Start the instance again on the same port (after it was killed); wait until ready."""
        self.proc.stop(5)
        self._retired.append(self.proc)
        self.proc = self._launch()
        return self.wait_ready(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def wait_ready(self, timeout: float = 30.0) -> ServiceInstance:
        """Wait until ``workers`` workers have logged ``worker_ready``."""
        deadline = time.monotonic() + timeout
        while len(self.proc.events("worker_ready")) < self.workers:
            if not self.proc.alive():
                raise RuntimeError(f"{self.name} exited:\n" + "\n".join(self.proc.raw[-40:]))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout}s:\n"
                                   + "\n".join(self.proc.raw[-40:]))
            time.sleep(0.05)
        return self

    def workers_seen(self) -> dict[str, int]:
        """Every worker this instance has started (node id -> pid), also dead ones."""
        return {e["node"]: e["pid"] for p in (*self._retired, self.proc) for e in p.events("worker_ready")}

    @property
    def nodes(self) -> dict[str, int]:
        """The live workers: node id -> pid (Gunicorn replaces a worker that died)."""
        return {node: pid for node, pid in self.workers_seen().items() if _pid_alive(pid)}

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=5, **kw)

    def stop(self, timeout: float = 15.0) -> int | None:
        return self.proc.stop(timeout)


class Cluster:
    """Redis, the simulated exchange and ``instances`` x ``workers`` service workers.

    ``election=False`` sets ``ELECTION=off``: every worker fetches (the
    deployment-without-election baseline). ``redis_url`` or ``sim`` use an
    existing Redis or exchange instead of starting one (neither is stopped
    then). ``env`` adds settings to every instance.
    """

    def __init__(self, instances: int = 3, workers: int = 1, *, election: bool = True,
                 timing: Timing | None = None, env: Mapping[str, str] | None = None,
                 redis_url: str | None = None, sim: SimulatedExchange | None = None,
                 name: str = "lab", sim_seed: int | None = None, ready_timeout: float = 60.0) -> None:
        if instances < 1 or workers < 1:
            raise ValueError("a cluster needs at least one instance with one worker")
        self.size = instances
        self.workers_per_instance = workers
        self.election = election
        self.timing = timing or Timing()
        self.extra_env = dict(env or {})
        self.name = name
        self.ready_timeout = ready_timeout
        self.keys = Keys(self.extra_env.get("KEY_PREFIX") or Keys().prefix)
        self._redis_url = redis_url
        self._own_redis: LabRedis | None = None
        self._own_sim = sim is None
        self.sim = sim or SimulatedExchange(port=0, seed=sim_seed)
        self.instances: list[ServiceInstance] = []
        self.clients: list[RecordingClient] = []
        self.faults: list[Fault] = []
        self.client: redis.Redis | None = None
        self.started_at: float | None = None  # Redis TIME when every instance was ready

    # --- lifecycle ------------------------------------------------------
    @property
    def redis_url(self) -> str:
        if self._redis_url:
            return self._redis_url
        if self._own_redis is None:
            raise RuntimeError("the cluster is not started")
        return self._own_redis.url

    def start(self) -> Cluster:
        register(self)
        try:
            if not self._redis_url:
                self._own_redis = LabRedis(port=0).start()
            self.client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5,
                                               decode_responses=True)
            self.sim.start()
            env = {**self.timing.env(), "ELECTION": "on" if self.election else "off", **self.extra_env}
            for i in range(self.size):
                self.instances.append(ServiceInstance(
                    f"{self.name}{i + 1}", workers=self.workers_per_instance,
                    redis_url=self.redis_url, sim_url=self.sim.url, env=env))
            for inst in self.instances:
                inst.wait_ready(self.ready_timeout)
            self.started_at = self.redis_time()
        except BaseException:
            self.stop()
            raise
        log_event(log, "lab_cluster_started", instances=self.size, workers=self.workers_per_instance,
                  election=self.election, redis=self.redis_url, sim=self.sim.url,
                  timing=self.timing.env())
        return self

    def stop(self) -> None:
        """Stop clients, instances (resuming paused workers first), Redis, exchange."""
        unregister(self)
        for c in self.clients:
            c.close()
        for f in self.faults:
            if f.kind == "pause" and f.resumed_at is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(f.pid, signal.SIGCONT)
        # SIGTERM to every master first, then wait: they drain in parallel.
        for inst in self.instances:
            inst.proc.signal(signal.SIGTERM)
        for inst in self.instances:
            inst.stop()
        if self.client is not None:
            self.client.close()
        if self._own_redis is not None:
            self._own_redis.close()
        if self._own_sim:
            self.sim.stop()
        log_event(log, "lab_cluster_stopped", instances=len(self.instances))

    close = stop

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pids(self) -> list[int]:
        """Every process the cluster runs: Redis, Gunicorn masters, their workers."""
        out = []
        if self._own_redis is not None and self._own_redis.proc is not None:
            out.append(self._own_redis.proc.pid)
        for inst in self.instances:
            out.append(inst.proc.pid)
            out.extend(inst.nodes.values())
        return out

    # --- Redis: time, leader, leadership log ----------------------------------
    @property
    def redis(self) -> redis.Redis:
        if self.client is None:
            raise RuntimeError("the cluster is not started")
        return self.client

    def redis_time(self) -> float:
        """Redis TIME in unix seconds: the clock of the leadership log."""
        return redis_now(self.redis)

    def leader_node(self) -> str | None:
        """``GET websocket:leader``: the node id holding the lock, or None."""
        return self.redis.get(self.keys.leader)

    def worker(self, node: str) -> WorkerRef:
        for inst in self.instances:
            pid = inst.workers_seen().get(node)
            if pid is not None:
                return WorkerRef(node, pid, inst)
        raise LookupError(f"no worker of this cluster has node id {node!r}")

    def leader(self) -> WorkerRef | None:
        node = self.leader_node()
        return self.worker(node) if node else None

    def wait_leader(self, timeout: float | None = None, not_: str | None = None) -> WorkerRef:
        """The leader worker, once one (other than ``not_``) holds the lock."""
        timeout = self._default_wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                node = self.leader_node()
                if node and node != not_:
                    return self.worker(node)
            time.sleep(0.01)
        raise TimeoutError(f"no leader (other than {not_}) within {timeout}s")

    def wait_serving(self, timeout: float | None = None) -> None:
        """Wait until the exchange has been called and a snapshot is cached."""
        timeout = self._default_wait(timeout)
        deadline = time.monotonic() + timeout
        if self.election:
            self.wait_leader(timeout)
        while self.redis.get(self.keys.data) is None or not self.sim.stats()["total"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no snapshot within {timeout}s")
            time.sleep(0.02)

    def cached_snapshot(self) -> dict[str, Any] | None:
        """``GET websocket:snapshot`` (the stored envelope) decoded, with ``fetched_at`` in unix seconds."""
        raw = self.redis.get(self.keys.data)
        if raw is None:
            return None
        snap = json.loads(raw)
        snap["fetched_at"] = parse_iso(snap["fetched_at"])
        return snap

    def events(self, count: int = 10_000) -> list[dict[str, Any]]:
        """The leadership log (``websocket:events``), oldest first; ``ts`` in seconds."""
        return read_leadership_log(self.redis, self.keys, count)

    def wait_acquired(self, after: Fault | float, timeout: float | None = None) -> dict[str, Any]:
        """The first ``acquired`` event after a fault (or a Redis time), by another node."""
        t = after.t if isinstance(after, Fault) else after
        other = after.node if isinstance(after, Fault) else None
        timeout = self._default_wait(timeout)
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events():
                if e.get("event") == "acquired" and e["ts"] >= t - 0.0005 and e.get("node") != other:
                    return e
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new leader within {timeout}s after {t:.3f}")
            time.sleep(0.02)

    def _default_wait(self, timeout: float | None) -> float:
        # Long enough for a lock to run out and be taken, at any timing.
        if timeout is not None:
            return timeout
        return 2 * self.timing.lock_ttl + 4 * self.timing.fetch_interval + 10

    # --- faults ---------------------------------------------------------
    def signal_leader(self, kind: str) -> Fault:
        """Send the leader worker the signal for ``kind`` (see ``KINDS``)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        target = self.wait_leader()
        t = self.redis_time()  # read first: it is the start of the measured outage
        if kind == "instance_crash":
            os.killpg(target.instance.proc.pid, KINDS[kind])
        else:
            os.kill(target.pid, KINDS[kind])
        fault = Fault(kind, target.node, target.pid, target.instance.name, t)
        self.faults.append(fault)
        log_event(log, "lab_fault", kind=kind, node=target.node, pid=target.pid,
                  instance=target.instance.name, redis_time=t)
        return fault

    def kill_leader(self) -> Fault:
        """SIGKILL the leader worker: a crash; its lock stays until the TTL runs out."""
        return self.signal_leader("crash")

    def kill_leader_instance(self) -> Fault:
        """SIGKILL the leader's whole instance; :meth:`respawn` brings it back."""
        return self.signal_leader("instance_crash")

    def respawn(self, fault: Fault) -> ServiceInstance:
        """Start the instance an ``instance_crash`` killed again, on the same port."""
        inst = next(i for i in self.instances if i.name == fault.instance)
        inst.respawn(self.ready_timeout)
        log_event(log, "lab_respawned", instance=inst.name, pid=inst.proc.pid)
        return inst

    def stop_leader(self) -> Fault:
        """SIGTERM the leader worker: a graceful stop (it releases the lock at once)."""
        return self.signal_leader("graceful")

    def pause_leader(self, seconds: float | None = None) -> Fault:
        """SIGSTOP the leader worker; with ``seconds``, SIGCONT it after that long.

        Without ``seconds`` it stays stopped until :meth:`resume`.
        """
        fault = self.signal_leader("pause")
        if seconds is not None:
            time.sleep(max(0.0, fault.t + seconds - self.redis_time()))
            self.resume(fault)
        return fault

    def resume(self, fault: Fault) -> None:
        """SIGCONT a paused worker."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(fault.pid, signal.SIGCONT)
        fault.resumed_at = self.redis_time()
        log_event(log, "lab_resumed", node=fault.node, pid=fault.pid, redis_time=fault.resumed_at)

    # --- the simulated exchange -----------------------------------------
    def sim_stats(self) -> dict[str, Any]:
        """Calls counted by the exchange since the last reset (by path, by node...)."""
        return self.sim.stats()

    def reset_sim_stats(self) -> None:
        self.sim.reset_stats()

    # --- clients ----------------------------------------------------------
    def connect(self, instance: ServiceInstance | int, name: str | None = None,
                reconnect: bool = True) -> RecordingClient:
        """A recording WebSocket client on ``instance``; closed with the cluster."""
        inst = self.instances[instance] if isinstance(instance, int) else instance
        client = RecordingClient(inst.ws_url, name or f"{inst.name}-c{len(self.clients)}",
                            instance=inst.name, reconnect=reconnect).start()
        self.clients.append(client)
        return client


def _pid_alive(pid: int) -> bool:
    # A killed worker whose master died too is a zombie until init reaps it
    # (some container inits take their time): dead for us.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True

