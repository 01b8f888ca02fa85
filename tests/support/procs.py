"""Child processes for tests: the lab's (lab/procs.py), plus headless nodes."""

from __future__ import annotations

import sys

from lab.procs import ROOT, LoggedProcess, child_env

__all__ = ["ROOT", "LoggedProcess", "child_env", "start_node"]


def start_node(redis_url: str, name: str, *, fetch_delay: float = 0.0, **settings: object) -> LoggedProcess:
    """A headless node (``python -m lab.node --fake``) with the given settings."""
    env = child_env(REDIS_URL=redis_url, **{k: str(v) for k, v in settings.items()})
    args = [sys.executable, "-m", "lab.node", "--fake", "--fetch-delay", str(fetch_delay)]
    return LoggedProcess(args, env, name=name)
