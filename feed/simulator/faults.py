"""Fault injection: what the simulated exchange does wrong, and for whom.

A fault spec is set at run time (``POST /_sim/faults``) for one provider
prefix or for all of them. A request uses its prefix's spec if one is set,
else its provider's (``coingecko`` also covers ``/coingecko-pro``), else the
global one. Within a spec the faults apply in this order: stall, latency,
fixed status, random 500s, oversized body, malformed body. A fixed status or
a random 500 answers before the exchange's limits are counted, as a CDN, a
firewall or a geo-block in front of it would.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

from feed.simulator.routes import PREFIXES

__all__ = ["GLOBAL", "MALFORMED", "PROVIDERS", "FaultBook", "FaultError", "FaultSpec", "parse_fault"]

#: The scopes a fault can name besides GLOBAL: every URL prefix.
PROVIDERS = tuple(PREFIXES)
GLOBAL = "*"
MALFORMED = ("not_json", "truncated", "wrong_shape", "nan", "negative", "zero", "huge",
             # an error object answered with HTTP 200; one coin's price zero, the rest good
             "error_200", "one_zero")


class FaultError(ValueError):
    """A fault request that cannot be applied; the message says why."""


@dataclass(frozen=True)
class FaultSpec:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    status: int | None = None
    retry_after: int | None = None
    malformed: str | None = None
    oversized_bytes: int | None = None
    chunked: bool = False
    stall_s: float = 0.0
    times: int | None = None  # only the next N requests in scope, then cleared

    def to_dict(self) -> dict[str, Any]:
        defaults = FaultSpec()
        return {k: v for k, v in asdict(self).items() if v != getattr(defaults, k)}


# field: (types, low, high)
_NUMBERS: dict[str, tuple[tuple[type, ...], float, float]] = {
    "latency_ms": ((int, float), 0, 60_000),
    "error_rate": ((int, float), 0, 1),
    "status": ((int,), 400, 599),
    "retry_after": ((int,), 0, 86_400),
    "oversized_bytes": ((int,), 1, 200_000_000),
    "stall_s": ((int, float), 0, 3_600),
    "times": ((int,), 1, 1_000_000),
}
_ALLOWED = ("provider", *_NUMBERS, "malformed", "chunked")


def parse_fault(body: Any) -> tuple[str, FaultSpec]:
    """``(scope, spec)`` from a decoded JSON body; :class:`FaultError` if it is bad."""
    if not isinstance(body, dict):
        raise FaultError("the body must be a JSON object, e.g. {\"provider\": \"binance\", \"status\": 500}")
    unknown = sorted(set(body) - set(_ALLOWED))
    if unknown:
        raise FaultError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_ALLOWED)}")
    scope = body.get("provider")
    if scope is None:
        scope = GLOBAL
    elif scope not in PROVIDERS:
        raise FaultError(f"provider must be one of {', '.join(PROVIDERS)} (or absent for all), "
                         f"got {scope!r}")
    values: dict[str, Any] = {}
    for name, (kinds, low, high) in _NUMBERS.items():
        if body.get(name) is None:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            kind = "an integer" if kinds == (int,) else "a number"
            raise FaultError(f"{name} must be {kind} from {low:g} to {high:g}, got {value!r}")
        values[name] = value
    malformed = body.get("malformed")
    if malformed is not None:
        if malformed not in MALFORMED:
            raise FaultError(f"malformed must be one of {', '.join(MALFORMED)}, got {malformed!r}")
        values["malformed"] = malformed
    chunked = body.get("chunked", False)
    if not isinstance(chunked, bool):
        raise FaultError(f"chunked must be true or false, got {chunked!r}")
    if chunked and "oversized_bytes" not in values:
        raise FaultError("chunked applies to oversized bodies: give oversized_bytes too")
    values["chunked"] = chunked
    if "retry_after" in values and "status" not in values:
        raise FaultError("retry_after is sent with a fixed status: give status too (e.g. 429)")
    spec = FaultSpec(**values)
    if not {k: v for k, v in spec.to_dict().items() if k not in ("times", "chunked")}:
        raise FaultError("no fault given; set at least one of latency_ms, error_rate, status, "
                         "malformed, oversized_bytes, stall_s")
    return scope, spec


class FaultBook:
    """The active fault specs by scope; thread-safe."""

    def __init__(self, seed: int | None = None) -> None:
        self._specs: dict[str, FaultSpec] = {}
        self._left: dict[str, int] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def set(self, scope: str, spec: FaultSpec) -> None:
        with self._lock:
            self._specs[scope] = spec
            if spec.times is not None:
                self._left[scope] = spec.times
            else:
                self._left.pop(scope, None)

    def clear(self, scope: str | None = None) -> None:
        with self._lock:
            if scope is None:
                self._specs.clear()
                self._left.clear()
            else:
                self._specs.pop(scope, None)
                self._left.pop(scope, None)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            out = {scope: spec.to_dict() for scope, spec in self._specs.items()}
            for scope, left in self._left.items():
                out[scope]["times_left"] = left
            return out

    def take(self, prefix: str) -> FaultSpec | None:
        """The spec that applies to one request to ``/{prefix}`` (counting ``times``)."""
        with self._lock:
            scopes = (prefix, PREFIXES.get(prefix, prefix), GLOBAL)
            scope = next((s for s in scopes if s in self._specs), GLOBAL)
            spec = self._specs.get(scope)
            if spec is None:
                return None
            if scope in self._left:
                self._left[scope] -= 1
                if self._left[scope] <= 0:
                    del self._left[scope]
                    del self._specs[scope]
            return spec

    def roll(self, rate: float) -> bool:
        """True with probability ``rate`` (seeded, so runs repeat)."""
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate
