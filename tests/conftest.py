"""Shared fixtures: real redis-server processes started by the suite itself.

Every test gets its own Redis on a free loopback port, so it can kill and
restart it; nothing here touches the Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from feed.config.settings import Settings  # noqa: E402
from feed.redisconn.embedded import RedisProcess  # noqa: E402
from feed.simulator.process import SimProcess  # noqa: E402
from tests.support import background as _background  # noqa: E402

ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting the service reads starts unset in every test."""
    for var in Settings.env_names():
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(port=0, workdir=str(tmp_path / "redis")).start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def redis_url(redis_proc: RedisProcess) -> str:
    return redis_proc.url


@pytest.fixture
def rclient(redis_proc: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_proc.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def sim() -> Iterator[SimProcess]:
    """The simulated exchange, in a process of its own (as the master runs it)."""
    proc = SimProcess().start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Cleanups registered by a test, undone in reverse order at its end."""
    with ExitStack() as s:
        yield s


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def python_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: this interpreter's, the repo importable."""
    from lab.procs import child_env

    return child_env(**extra)


# --- scenarios that run beside the suite (tests/support/background.py) -------
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # trylast: after -k and -m have deselected, so only selected scenarios run.
    _background.collect(config, items)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[None]:
    _background.start_all(session.config)
    try:
        return (yield)
    finally:
        _background.stop_all(session.config)


@pytest.fixture
def background(request: pytest.FixtureRequest) -> object:
    """The result of this test's background scenario, once it has ended."""
    return _background.result_for(request)
