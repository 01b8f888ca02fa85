"""Every Redis name the service uses, derived from one prefix.

With the default prefix the original service's names are kept verbatim
(``websocket:leader``, and with ``ORIGINAL_COMPAT=on`` ``latest_market_data``
and ``market_data_stream`` holding what it held there), so operators' checks
and its other consumers keep working; our own envelope has a key of its own
(``websocket:snapshot``). Any other prefix namespaces all of them, so two
deployments can share one Redis. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "Keys"]

DEFAULT_PREFIX = "websocket"


@dataclass(frozen=True)
class Keys:
    """The names under ``prefix``; see docs/ARCHITECTURE.md for what each holds."""

    prefix: str = DEFAULT_PREFIX

    def name(self, suffix: str) -> str:
        """``<prefix>:<suffix>``: a key or channel of this deployment."""
        return f"{self.prefix}:{suffix}"

    @property
    def leader(self) -> str:
        """The lock: the leader's node id, with the lock's TTL."""
        return self.name("leader")

    @property
    def epoch(self) -> str:
        """The fencing token of the current term."""
        return self.name("epoch")

    def _original(self, name: str) -> str:
        # The original used bare names; keep them for the default deployment,
        # namespace them for every other one.
        return name if self.prefix == DEFAULT_PREFIX else self.name(name)

    @property
    def data(self) -> str:
        """The last snapshot (an envelope), with the cache TTL."""
        return self.name("snapshot")

    @property
    def original_latest(self) -> str:
        """The original's flat market object (``ORIGINAL_COMPAT=on``), with its 5 s TTL."""
        return self._original("latest_market_data")

    @property
    def original_stream(self) -> str:
        """Stream: the original's flat objects, field ``data``, capped (``ORIGINAL_COMPAT=on``)."""
        return self._original("market_data_stream")

    @property
    def updates(self) -> str:
        """Pub/sub: every new envelope, published by the fenced write."""
        return self.name("updates")

    @property
    def leader_events(self) -> str:
        """Pub/sub: ``acquired`` / ``released`` messages (feed/election/lock.py)."""
        return self.name("leader-events")

    @property
    def leadership_log(self) -> str:
        """Stream: the leadership log (acquired, released, stepped_down, lost), capped."""
        return self.name("events")

    @property
    def upstream(self) -> str:
        """Hash: the upstream budget (blocks, next calls, failures, symbol lookups)."""
        return self.name("upstream")

    def upstream_calls(self, window: str) -> str:
        """Hash: upstream calls per provider in one window (``m:202612011200``, ``d:...``, ``M:...``)."""
        return self.name(f"upstream:calls:{window}")

    # --- presence (feed/election/presence.py) ---------------------------------
    def alive(self, node_id: str) -> str:
        """Pub/sub: the channel ``node_id`` stays subscribed to while its process lives."""
        return self.name(f"alive:{node_id}")

    @property
    def alive_prefix(self) -> str:
        return self.name("alive:")

    @property
    def deputy(self) -> str:
        """The follower that watches the leader's presence (its node id, with a TTL)."""
        return self.name("deputy")

    @property
    def presence(self) -> str:
        """The deputy's record of the leader's absence: ``<holder> <since_ms> <last_ms>``."""
        return self.name("presence")

    @property
    def presence_server(self) -> str:
        """The replication id of the server the deputy last watched on, and a settle deadline."""
        return self.name("presence:server")

    def node(self, node_id: str) -> str:
        """Hash: what a node says about itself (role, clients, whether it keeps presence)."""
        return self.name(f"node:{node_id}")

    @property
    def node_prefix(self) -> str:
        return self.name("node:")
