"""One frame written to many connections: the only way a snapshot reaches sockets.

:func:`broadcast`'s rules: a connection with nothing queued gets the frame
at once, with one non-blocking ``send`` (if that writes only part of it,
the rest is finished first, on the write watcher); a connection that is
behind gets it in its latest-only slot, replacing any snapshot still
waiting there (counted as superseded); a closing connection gets nothing.
Nobody ever waits for a slow client.

A broadcast's cost is almost all in the kernel: one ``send`` of a 2 KB frame
on a TCP socket is about 6-7 µs here, the Python around it about 0.05 µs.
CPython releases the GIL for the duration of each ``send``, so with many
ready connections the sends are split over OS threads
(:func:`send_to_all`; real threads: gevent's monkey-patching must not turn
them into greenlets), which write in parallel on several cores.

The caller blocks until every thread is done. That is deliberate: while the
threads write, nothing else on this worker's gevent loop runs, so no other
code touches these sockets (the same guarantee as a plain loop).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gevent import monkey

if TYPE_CHECKING:
    from feed.ws.connection import ClientConnection

__all__ = ["PARALLEL_FROM", "Delivered", "broadcast", "send_to_all"]

#: Below this many ready connections, starting threads costs more than it saves.
PARALLEL_FROM = 1000

_start_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")


def _send_slice(socks: Sequence[Any], frame: bytes, out: list[int], start: int, stop: int) -> None:
    for i in range(start, stop):
        try:
            out[i] = socks[i].send(frame)
        except (BlockingIOError, InterruptedError):
            out[i] = 0
        except OSError:
            out[i] = -1


def send_to_all(socks: Sequence[Any], frame: bytes, threads: int = 2) -> list[int]:
    """Send ``frame`` once on each non-blocking socket; bytes written each (-1: failed)."""
    n = len(socks)
    out = [0] * n
    threads = max(1, min(threads, n))
    if threads == 1:
        _send_slice(socks, frame, out, 0, n)
        return out
    bounds = [n * k // threads for k in range(threads + 1)]
    done = []
    for k in range(1, threads):
        lock = _allocate_lock()
        lock.acquire()
        done.append(lock)

        def run(start: int = bounds[k], stop: int = bounds[k + 1], lock: Any = lock) -> None:
            try:
                _send_slice(socks, frame, out, start, stop)
            finally:
                lock.release()

        _start_thread(run, ())
    _send_slice(socks, frame, out, bounds[0], bounds[1])  # this thread takes the first slice
    for lock in done:
        lock.acquire()  # a real lock: blocks the whole loop until that thread is done
    return out


@dataclass(frozen=True)
class Delivered:
    """What one broadcast did: frames handed to connections, and slow ones' skipped snapshots."""

    handed: int
    superseded: int


def broadcast(conns: Iterable[ClientConnection], frame: bytes, threads: int = 1,
              position: tuple[int, int] | None = None) -> Delivered:
    """Give ``frame`` (the snapshot at ``position``) to every connection by the rules in the module docstring.

    Each connection remembers the position it was handed (feed/ws/connection.py).
    """
    ready, behind = [], []
    for conn in conns:
        if conn.closing or conn.closed:
            continue
        (behind if conn.pending else ready).append(conn)
    size = len(frame)
    results = send_to_all([c.raw for c in ready], frame, threads if len(ready) >= PARALLEL_FROM else 1)
    for conn, n in zip(ready, results, strict=True):
        if n == size:
            conn.sent += 1
            conn.position = position
        else:
            conn.continue_snapshot(frame, n, position)
    superseded = 0
    for conn in behind:
        if conn.snapshot is not None:
            superseded += 1  # a slow client's unsent snapshot is replaced by this one
        conn.queue_snapshot(frame, position)
    return Delivered(len(ready) + len(behind), superseded)
