"""Which clients to close: the slow ones and the silent ones (centrifuge's writer decides the same).

* **Slow**: a client with data waiting and no write progress for
  ``send_timeout`` seconds is closed with 1008; the stall clock starts when
  it falls behind (feed/ws/connection.py), never at an old write.
* **Silent**: every ``ping_interval`` seconds each client is pinged; one that
  has not answered the previous ping by then is closed with 1008.

Run by the hub's housekeeping once a second; the mechanics of a connection
stay in feed/ws/connection.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from feed.logs import log_event
from feed.observer import Observer, Quiet, notify
from feed.ws.connection import ClientConnection
from feed.ws.frames import PING
from feed.ws.protocol import CloseCode

__all__ = ["ClientPolicy"]

log = logging.getLogger(__name__)


class ClientPolicy:
    def __init__(self, served_by: str, *, send_timeout: float = 10.0, ping_interval: float = 25.0,
                 observer: Observer | None = None) -> None:
        if send_timeout <= 0:
            raise ValueError("send_timeout must be positive")
        if ping_interval < 0:
            raise ValueError("ping_interval must be >= 0 (0: no pings)")
        self.served_by = served_by
        self.send_timeout = send_timeout
        self.ping_interval = ping_interval
        self.observer: Observer = observer or Quiet()
        self._last_ping = time.monotonic()

    def sweep(self, clients: Iterable[ClientConnection], blocked: Iterable[ClientConnection],
              now: float) -> None:
        """One round at monotonic time ``now``: drop stuck clients, ping (and drop the silent)."""
        for conn in list(blocked):
            stalled = conn.stalled_for(now)
            if stalled > self.send_timeout:
                notify(self.observer.slow_dropped, "slow_dropped")
                log_event(log, "slow_client_dropped", logging.WARNING, node=self.served_by,
                          client=conn.id, remote=conn.remote, stalled_s=round(stalled, 1),
                          superseded=conn.superseded)
                conn.abort(CloseCode.POLICY, f"client too slow: no progress for {stalled:.0f} s")
        if self.ping_interval and now - self._last_ping >= self.ping_interval:
            self._last_ping = now
            for conn in list(clients):
                if not conn.closing and not conn.ping(PING):
                    conn.abort(CloseCode.POLICY, "no pong to the last ping")
