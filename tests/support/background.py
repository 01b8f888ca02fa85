"""Long observations that run beside the rest of the suite, and are asserted on at its end.

A test marked ``@pytest.mark.background("name")`` has a function
``background_<name>(stop)`` in its module: a scenario that takes minutes of
wall time but little CPU (a client that pings on its schedule for three
minutes). When the test is selected, the scenario starts on a thread of its
own as the run begins; the test itself is moved to the end of the run, where
it waits for the scenario's result (``background`` fixture) and asserts on it.
The scenario starts and stops everything it needs; ``stop`` is set if the
run ends early. Processes it starts die with its thread (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["Job", "collect", "result_for", "start_all", "stop_all"]

_JOBS = pytest.StashKey[dict[str, "Job"]]()


@dataclass
class Job:
    name: str
    run: Callable[[threading.Event], Any]
    stop: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name=f"background-{self.name}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.result = self.run(self.stop)
        except BaseException as exc:  # handed to the test that asserts on it
            self.error = exc


def collect(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Register the selected background tests' scenarios and move those tests last."""
    jobs: dict[str, Job] = {}
    moved = []
    for item in items:
        marker = item.get_closest_marker("background")
        if marker is None:
            continue
        name = marker.args[0]
        jobs[name] = Job(name, getattr(item.module, f"background_{name}"))
        moved.append(item)
    for item in moved:
        items.remove(item)
        items.append(item)
    config.stash[_JOBS] = jobs


def start_all(config: pytest.Config) -> None:
    for job in config.stash.get(_JOBS, {}).values():
        job.start()


def stop_all(config: pytest.Config) -> None:
    for job in config.stash.get(_JOBS, {}).values():
        job.stop.set()
        if job.thread is not None:
            job.thread.join(60)


def result_for(request: pytest.FixtureRequest, timeout: float = 600) -> Any:
    """The scenario's result for the requesting test, once it has ended."""
    marker = request.node.get_closest_marker("background")
    job = request.config.stash[_JOBS][marker.args[0]]
    assert job.thread is not None, "the scenario never started"
    job.thread.join(timeout)
    assert not job.thread.is_alive(), f"the {job.name} scenario did not end within {timeout} s"
    if job.error is not None:
        raise job.error
    return job.result
