"""Child processes that end with their parent, however the parent ends.

:func:`spawn` starts a child in a new session (its own process group: a
terminal's Ctrl-C or a Jupyter interrupt meant for the parent never reaches
it, and the group can be killed at once) and, on Linux, asks the kernel to
send it SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``), so a
parent killed with SIGKILL leaves nothing behind: the embedded Redis and the
simulated exchange of a Gunicorn master, the lab's clusters, the tests'
servers.

The kernel ties PDEATHSIG to the *thread* that forked: spawn from a thread
that lives as long as the child should (the Gunicorn master's main thread,
a notebook's main thread). Standard library only: the Gunicorn master uses
this before it forks workers.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["spawn"]

PR_SET_PDEATHSIG = 1

# Resolved before any fork: the child must not load libraries between fork
# and exec, only call a function that is already there.
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody will
        # ever send the signal, so act on it now.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def spawn(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """``Popen(args)`` in a new session; it receives SIGTERM when this process dies."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(args, start_new_session=True, preexec_fn=_die_with(os.getpid()), **popen)
