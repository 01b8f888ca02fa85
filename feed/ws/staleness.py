"""When the snapshot clients hold has turned stale: derived from the envelope and the clock, never stored.

A snapshot is *stale* when it is older than ``stale_after`` (no new one came
for a while: the leader or Redis is in trouble), or when every section in it
is one its provider failed to refresh (``Envelope.sections_stale``). Only
the first can change while a snapshot is held; that change is what the
stale notice tells clients about, once per snapshot.
"""

from __future__ import annotations

from feed.envelope import Envelope

__all__ = ["Staleness"]


class Staleness:
    def __init__(self, stale_after: float) -> None:
        if stale_after <= 0:
            raise ValueError("stale_after must be positive")
        self.stale_after = stale_after

    def aged(self, env: Envelope, now: float) -> bool:
        """Older than ``stale_after`` at wall time ``now``."""
        return env.age(now) > self.stale_after

    def stale(self, env: Envelope, now: float) -> bool:
        """Aged, or made only of sections whose providers fail."""
        return self.aged(env, now) or env.sections_stale
