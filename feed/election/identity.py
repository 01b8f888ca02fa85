"""Node ids: ``ws-<replica or host>-<pid>-<random>``, one per process.

Standard library only: the Gunicorn master uses :func:`node_prefix` to find
a dead worker's lock, and must not import redis before it forks workers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket

__all__ = ["make_node_id", "node_prefix", "opaque_label"]


def _where(replica_id: str | None) -> str:
    where = (replica_id or socket.gethostname() or "host")[:12]
    return "".join(c if c.isalnum() else "-" for c in where).strip("-") or "host"


def node_prefix(replica_id: str | None, pid: int) -> str:
    """The part of a node id that names its process: ``ws-<where>-<pid>-``."""
    return f"ws-{_where(replica_id)}-{pid}-"


def make_node_id(replica_id: str | None = None, pid: int | None = None) -> str:
    """A unique, readable id for this process (random suffix: pids are reused)."""
    return node_prefix(replica_id, pid or os.getpid()) + secrets.token_hex(2)


def opaque_label(node_id: str, key: str) -> str:
    """A stable stand-in for ``node_id`` that reveals no host or pid (``n-`` + 12 hex).

    Keyed (HMAC-SHA256), so the label cannot be matched against guessed ids
    without the key; the same node gets the same label on every instance.
    """
    return "n-" + hmac.new(key.encode(), node_id.encode(), hashlib.sha256).hexdigest()[:12]
